"""The one clock: every timestamp winback writes comes from a `Clock`, and only this module reads the wall clock.

- `SystemClock()`: the real time (UTC).
- `Clock.starting_at(ts)`: business time that starts at `ts` and then ticks with the real (monotonic)
  time — what `--now` / `now=` give. A run "at" 2026-11-24 10:30 stamps its claims, sends and leases
  from 10:30 onwards, so two stamps of one run are ordered and a lease taken at `--now` lapses after
  its length, as it would in real time.
- `FrozenClock(ts)`: never moves (tests that compare stamps exactly); `advance()` moves it by hand.

Durations that are not timestamps (timeouts, benchmarks) use `time.monotonic`/`time.perf_counter`
directly: they never reach the ledger. A bare date means the end of that day in the campaign's
default zone in every command (`business_time`).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from winback.errors import ConfigError

DEFAULT_TIMEZONE = "Asia/Shanghai"


class Clock:
    """A source of UTC time. Subclasses implement `now()`; `Clock.starting_at` builds the usual one."""

    def now(self) -> pd.Timestamp:
        """The current instant as a tz-aware UTC `pd.Timestamp`."""
        raise NotImplementedError

    def now_datetime(self) -> datetime:
        """The current instant as an aware `datetime` (UTC)."""
        return self.now().to_pydatetime()

    @staticmethod
    def starting_at(start: Any | None) -> Clock:
        """Business time from `start` on (ticking in real time); the system clock when `start` is None."""
        if start is None or start == "":
            return SystemClock()
        return OffsetClock(to_utc(start))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.now().isoformat()})"


class SystemClock(Clock):
    """The machine's clock, in UTC."""

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(datetime.now(UTC))


class OffsetClock(Clock):
    """Starts at a given instant and advances with the monotonic clock from the moment it was made."""

    def __init__(self, start: pd.Timestamp) -> None:
        self.start = to_utc(start)
        self._t0 = time.monotonic()

    def now(self) -> pd.Timestamp:
        # Microseconds: what both ledger databases keep (a nanosecond part would be dropped with a warning).
        return (self.start + pd.Timedelta(seconds=time.monotonic() - self._t0)).floor("us")


class FrozenClock(Clock):
    """A clock that only moves when told to (`advance`, `set`)."""

    def __init__(self, at: Any) -> None:
        self._at = to_utc(at)

    def now(self) -> pd.Timestamp:
        return self._at

    def advance(self, **delta: float) -> pd.Timestamp:
        """Move forward by a `pd.Timedelta(**delta)` and return the new time."""
        self._at = self._at + pd.Timedelta(**delta)
        return self._at

    def set(self, at: Any) -> None:
        """Jump to an instant."""
        self._at = to_utc(at)


def to_utc(value: Any) -> pd.Timestamp:
    """A timestamp (aware or naive-as-UTC, str, datetime, pd.Timestamp) as a tz-aware UTC `pd.Timestamp`."""
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ConfigError("a timestamp is missing (NaT)")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def business_time(value: str | date | datetime | pd.Timestamp | None, *, option: str = "--as-of",
                  tz: str = DEFAULT_TIMEZONE) -> pd.Timestamp | None:
    """Read a date or timestamp option as a UTC instant, the same way in every command.

    A bare date (`2026-11-23`) means the end of that day in `tz` — the campaign's default zone —
    so everything ordered that day counts; a naive timestamp is read in `tz`; an aware one is converted.
    """
    if value is None or value == "":
        return None
    try:
        if (isinstance(value, str) and len(value.strip()) == 10) or (
                isinstance(value, date) and not isinstance(value, datetime)):
            day = pd.Timestamp(value.strip() if isinstance(value, str) else value)
            ts = day.tz_localize(tz) + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        else:
            ts = pd.Timestamp(value)
            if ts.tzinfo is None:
                ts = ts.tz_localize(tz)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read {value!r} as a date or timestamp ({exc})", field=option) from None
    if ts is pd.NaT:
        raise ConfigError(f"cannot read {value!r} as a date or timestamp", field=option)
    return ts.tz_convert("UTC")
