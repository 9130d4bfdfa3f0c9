"""Quiet hours: move a due time into the customer's allowed local sending window, never drop it."""

from __future__ import annotations

from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

DEFAULT_WINDOW = (time(9, 0), time(21, 0))


def valid_timezones(timezones: pd.Series, default: str) -> pd.Series:
    """The customer's IANA zone where it is known to zoneinfo, else `default` (vectorized per zone)."""
    tz = timezones.astype("string")
    out = tz.where(tz.notna() & (tz.str.strip() != ""), default).str.strip()
    for name in out.dropna().unique():
        try:
            ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            out = out.mask(out == name, default)
    return out


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def next_allowed_send_time(
    due_utc: pd.Series,
    timezones: pd.Series,
    windows: tuple[time, time] | pd.Series = DEFAULT_WINDOW,
) -> pd.Series:
    """The earliest instant ≥ due whose local wall time in the row's zone is inside [start, end).

    `windows` is one (start, end) pair or a Series of pairs aligned with `due_utc` (e.g. per channel).
    Computed per (zone, window) group: due at night → next local `start`; a start that falls in a
    DST gap (spring forward) moves to the first valid instant after it; an ambiguous start (fall back)
    takes the earlier occurrence that is still ≥ due. NaT stays NaT.
    """
    due = pd.to_datetime(due_utc, utc=True)
    out = pd.Series(pd.NaT, index=due.index, dtype="datetime64[ns, UTC]")
    if due.empty:
        return out
    tz = timezones.reindex(due.index).astype("string")
    if isinstance(windows, pd.Series):
        win = windows.reindex(due.index)
    else:
        win = pd.Series([tuple(windows)] * len(due), index=due.index, dtype=object)
    keys = pd.DataFrame({"tz": tz, "win": win.map(lambda w: f"{w[0].isoformat()}-{w[1].isoformat()}")})
    for (zone, _), idx in keys.groupby(["tz", "win"], sort=False, dropna=False).groups.items():
        if pd.isna(zone):
            raise ValueError("next_allowed_send_time needs a time zone for every row (use valid_timezones)")
        start, end = win.loc[idx[0]]
        out.loc[idx] = _shift_group(due.loc[idx], str(zone), start, end)
    return out


def _shift_group(due: pd.Series, zone: str, start: time, end: time) -> pd.Series:
    local = due.dt.tz_convert(zone)
    wall = local.dt.tz_localize(None)
    day = wall.dt.normalize()
    secs = (wall - day).dt.total_seconds().to_numpy()
    s, e = _seconds(start), _seconds(end)
    inside = (secs >= s) & (secs < e)
    # Before the window: today at start; after it: tomorrow at start.
    target_day = day.where(secs < s, day + pd.Timedelta(days=1))
    target_wall = target_day + pd.Timedelta(seconds=s)
    first = _localize(target_wall, zone, earlier=True).dt.tz_convert("UTC")
    # In a fall-back overlap the earlier occurrence of `start` can lie before `due`: take the later one.
    second = _localize(target_wall, zone, earlier=False).dt.tz_convert("UTC")
    moved = first.where(first >= due, second)
    return due.where(inside, moved).astype("datetime64[ns, UTC]")


def _localize(wall: pd.Series, zone: str, *, earlier: bool) -> pd.Series:
    """Wall times → aware; nonexistent (spring-forward gap) shift forward; ambiguous per `earlier`."""
    # pandas: ambiguous=True means the DST instant, which is the earlier of the two in a fall-back.
    ambiguous = np.full(len(wall), earlier, dtype=bool)
    return wall.dt.tz_localize(zone, ambiguous=ambiguous, nonexistent="shift_forward")


def local_iso(ts_utc: pd.Series, timezones: pd.Series) -> pd.Series:
    """ISO 8601 local time with offset (`2026-11-24T09:00:00+08:00`) per row's zone; NA for NaT."""
    ts = pd.to_datetime(ts_utc, utc=True)
    out = pd.Series(pd.NA, index=ts.index, dtype="string")
    tz = timezones.reindex(ts.index).astype("string")
    for zone, idx in tz.groupby(tz, sort=False).groups.items():
        sub = ts.loc[idx]
        ok = sub.notna()
        if not ok.any():
            continue
        utc = sub[ok]
        wall = utc.dt.tz_convert(str(zone)).dt.tz_localize(None)
        # numpy formats wall times fast; the offset (wall − UTC) has only a few distinct values per zone.
        text = np.datetime_as_string(wall.to_numpy(dtype="datetime64[s]"), unit="s")
        offset_min = ((wall.to_numpy(dtype="datetime64[s]") - utc.dt.tz_localize(None).to_numpy(dtype="datetime64[s]"))
                      .astype("int64") // 60)
        labels = {int(m): f"{'+' if m >= 0 else '-'}{abs(int(m)) // 60:02d}:{abs(int(m)) % 60:02d}"
                  for m in np.unique(offset_min)}
        suffix = pd.Series(offset_min, index=utc.index).map(labels)
        out.loc[utc.index] = pd.Series(text, index=utc.index).str.cat(suffix)
    return out
