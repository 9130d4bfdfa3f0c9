"""Quiet hours: due at night moves to the next allowed local time — DST, day boundaries, east and west."""

from __future__ import annotations

from datetime import time

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.policy import local_iso, next_allowed_send_time, valid_timezones

DAY = (time(9), time(21))


def shift(due: str, zone: str, window=DAY) -> tuple[pd.Timestamp, str]:
    due_s = pd.Series([pd.Timestamp(due)]).dt.tz_convert("UTC") if pd.Timestamp(due).tzinfo else \
        pd.Series([pd.Timestamp(due, tz="UTC")])
    tz = pd.Series([zone])
    out = next_allowed_send_time(due_s, tz, window)
    return out.iloc[0], local_iso(out, tz).iloc[0]


@pytest.mark.parametrize(
    ("due", "zone", "expected_local"),
    [
        # Inside the window: unchanged.
        ("2026-11-23T10:15:00+08:00", "Asia/Shanghai", "2026-11-23T10:15:00+08:00"),
        # Before the window: the same local day at 09:00.
        ("2026-11-23T06:59:00+08:00", "Asia/Shanghai", "2026-11-23T09:00:00+08:00"),
        # At/after the end (21:00 is not allowed): the next local day.
        ("2026-11-23T21:00:00+08:00", "Asia/Shanghai", "2026-11-24T09:00:00+08:00"),
        ("2026-11-23T23:59:59+08:00", "Asia/Shanghai", "2026-11-24T09:00:00+08:00"),
        # Month and year boundaries.
        ("2026-12-31T22:30:00+08:00", "Asia/Shanghai", "2027-01-01T09:00:00+08:00"),
        # The same UTC instant is morning in Shanghai but the previous evening in Los Angeles.
        ("2026-11-24T06:00:00Z", "America/Los_Angeles", "2026-11-24T09:00:00-08:00"),
        ("2026-11-24T01:30:00Z", "Asia/Shanghai", "2026-11-24T09:30:00+08:00"),
        ("2026-11-24T01:30:00Z", "America/Los_Angeles", "2026-11-23T17:30:00-08:00"),
        # A UTC date that is already "tomorrow" in the east and still "today" in the west.
        ("2026-06-30T23:30:00Z", "Pacific/Auckland", "2026-07-01T11:30:00+12:00"),
        ("2026-06-30T23:30:00Z", "Pacific/Honolulu", "2026-06-30T13:30:00-10:00"),
        # DST spring forward (America/New_York, 2026-03-08 02:00 → 03:00): a night due moves to 09:00 EDT.
        ("2026-03-08T06:30:00Z", "America/New_York", "2026-03-08T09:00:00-04:00"),
        # DST fall back (2026-11-01 02:00 → 01:00): a night due moves to 09:00 EST.
        ("2026-11-01T05:30:00Z", "America/New_York", "2026-11-01T09:00:00-05:00"),
        # Evening on the fall-back day is after the window in EST (21:30 local).
        ("2026-11-02T02:30:00Z", "America/New_York", "2026-11-02T09:00:00-05:00"),
    ],
)
def test_moves_to_next_allowed_local_time(due: str, zone: str, expected_local: str) -> None:
    when, local = shift(due, zone)
    assert local == expected_local
    assert when >= pd.Timestamp(due).tz_convert("UTC")


def test_window_start_inside_spring_forward_gap_shifts_forward() -> None:
    # 02:30 does not exist on 2026-03-08 in New York: the first valid instant after it is 03:00 EDT.
    _, local = shift("2026-03-08T06:10:00Z", "America/New_York", (time(2, 30), time(21)))
    assert local == "2026-03-08T03:00:00-04:00"


def test_window_start_inside_fall_back_overlap_never_goes_back() -> None:
    # 01:30 happens twice on 2026-11-01. Due at 01:10 EDT → the first 01:30 (EDT).
    _, local = shift("2026-11-01T05:10:00Z", "America/New_York", (time(1, 30), time(21)))
    assert local == "2026-11-01T01:30:00-04:00"
    # Due at 01:10 EST (after the first 01:30 has passed) → the second 01:30 (EST), never earlier than due.
    when, local = shift("2026-11-01T06:10:00Z", "America/New_York", (time(1, 30), time(21)))
    assert local == "2026-11-01T01:30:00-05:00"
    assert when == pd.Timestamp("2026-11-01T06:30:00Z")


def test_per_row_windows_and_nat_kept() -> None:
    due = pd.Series(pd.to_datetime(["2026-11-23T01:30:00Z", "2026-11-23T01:30:00Z", None], utc=True))
    tz = pd.Series(["Asia/Shanghai"] * 3)
    windows = pd.Series([(time(9), time(21)), (time(10), time(20)), (time(9), time(21))])
    out = local_iso(next_allowed_send_time(due, tz, windows), tz)
    assert out.iloc[0] == "2026-11-23T09:30:00+08:00"  # email: inside 09–21
    assert out.iloc[1] == "2026-11-23T10:00:00+08:00"  # SMS: stricter 10–20
    assert pd.isna(out.iloc[2])


def test_unknown_time_zone_falls_back_to_default() -> None:
    tz = valid_timezones(pd.Series(["Asia/Shanghai", "Mars/Olympus", None, " "]), "America/New_York")
    assert list(tz) == ["Asia/Shanghai", "America/New_York", "America/New_York", "America/New_York"]


ZONES = ["Asia/Shanghai", "America/New_York", "America/Los_Angeles", "Europe/London", "Australia/Lord_Howe",
         "Asia/Kathmandu", "Pacific/Chatham", "America/St_Johns", "UTC"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.datetimes(min_value=pd.Timestamp("2025-01-01").to_pydatetime(),
                          max_value=pd.Timestamp("2028-12-31").to_pydatetime()), min_size=1, max_size=30),
    st.lists(st.sampled_from(ZONES), min_size=30, max_size=30),
    st.sampled_from([(time(9), time(21)), (time(10), time(20)), (time(2, 30), time(3, 30)), (time(0), time(23, 59))]),
)
def test_result_is_never_earlier_inside_window_and_within_a_day(dues, zones, window) -> None:
    due = pd.Series(pd.to_datetime(dues)).dt.tz_localize("UTC")
    tz = pd.Series(zones[: len(due)])
    out = next_allowed_send_time(due, tz, window)
    assert out.notna().all()  # never dropped
    assert (out >= due).all()
    assert ((out - due) <= pd.Timedelta(hours=26)).all()
    for when, zone in zip(out, tz, strict=True):
        local = when.tz_convert(zone)
        wall = local.time()
        # Inside the window, or pushed just past a DST gap that swallowed the window's start.
        assert window[0] <= wall < window[1] or local.dst() != (local - pd.Timedelta(hours=3)).dst()
