"""Property: measure_campaign's attribution equals a plain per-customer loop on random ledgers and orders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winback.measure.campaign import measure_campaign

BASE = pd.Timestamp("2026-01-01", tz="UTC")


@st.composite
def experiments(draw):
    n = draw(st.integers(2, 12))
    rows = []
    for i in range(n):
        arm = draw(st.sampled_from(["treatment", "holdout", "excluded"]))
        steps = draw(st.integers(1, 2))
        for step in range(1, steps + 1):
            planned = BASE + pd.Timedelta(hours=draw(st.integers(0, 72)) + 24 * 7 * (step - 1))
            state = "held_out" if arm == "holdout" else draw(st.sampled_from(["sent", "failed", "suppressed"]))
            sent = planned + pd.Timedelta(minutes=draw(st.integers(0, 90))) if state == "sent" else pd.NaT
            rows.append({"campaign_id": "p", "customer_id": f"c{i}", "step": step, "arm": arm, "state": state,
                         "send_at_utc": planned, "sent_at": sent, "offer": "o1", "offer_kind": "reminder",
                         "value_tier": draw(st.sampled_from(["gold", "lead"]))})
    ledger = pd.DataFrame(rows)
    ledger["sent_at"] = pd.to_datetime(ledger["sent_at"], utc=True)
    k = draw(st.integers(0, 30))
    orders = pd.DataFrame({
        "order_id": [f"o{j}" for j in range(k)],
        "customer_id": [f"c{draw(st.integers(0, n))}" for _ in range(k)],
        "ordered_at": [BASE + pd.Timedelta(hours=draw(st.integers(-48, 24 * 30))) for _ in range(k)],
        "amount": [float(draw(st.integers(1, 500))) for _ in range(k)],
    })
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"], utc=True)
    return ledger, orders, draw(st.sampled_from([3, 7, 14]))


def reference(ledger: pd.DataFrame, orders: pd.DataFrame, window_days: int) -> dict:
    """The rules of campaign.py written as a loop over customers."""
    out = {arm: {"n": 0, "returned": 0, "orders": 0, "revenue": 0.0} for arm in ("treatment", "holdout")}
    for cid, rows in ledger[ledger["arm"] != "excluded"].groupby("customer_id"):
        arm = rows["arm"].iloc[0]
        times = [r.sent_at if r.state == "sent" and not pd.isna(r.sent_at) else r.send_at_utc
                 for r in rows.itertuples()]
        start = min(times)
        end = start + pd.Timedelta(days=window_days)
        mine = orders[(orders["customer_id"] == cid) & (orders["ordered_at"] >= start) & (orders["ordered_at"] < end)]
        out[arm]["n"] += 1
        out[arm]["returned"] += int(len(mine) > 0)
        out[arm]["orders"] += len(mine)
        out[arm]["revenue"] += float(mine["amount"].sum())
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiments())
def test_attribution_matches_a_plain_loop(case):
    ledger, orders, window = case
    if not ledger["arm"].isin(["treatment", "holdout"]).any():
        return
    result = measure_campaign(ledger, orders, window_days=window, by=("value_tier", "step"))
    expected = reference(ledger, orders, window)
    for arm in ("treatment", "holdout"):
        got = result.arms[arm]
        assert (got["n"], got["returned"], got["orders"]) == (expected[arm]["n"], expected[arm]["returned"],
                                                               expected[arm]["orders"])
        assert got["revenue"] == pytest.approx(expected[arm]["revenue"])
    # Each customer once; breakdowns add up to the arms.
    assert result.units["customer_id"].is_unique
    tiers = result.breakdowns["value_tier"]
    assert tiers["n_treated"].sum() == result.arms["treatment"]["n"]
    assert tiers["returned_holdout"].sum() == result.arms["holdout"]["returned"]
    curve = result.curve
    for arm in ("treatment", "holdout"):
        last = curve[curve["arm"] == arm]["returned"].to_numpy()
        assert np.all(np.diff(last) >= 0) and (len(last) == 0 or last[-1] == result.arms[arm]["returned"])
