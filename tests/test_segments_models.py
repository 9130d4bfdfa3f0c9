"""Segmentation chooses its purchase model by the holdout check: one-time buyers, named models, the split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winback.cli import main
from winback.segments import SegmentParams, aggregate, fit_customer_models, segment_customers
from winback.segments.core import _calibration
from winback.segments.models import holdout_summary

AS_OF = pd.Timestamp("2026-06-30 15:59:59", tz="UTC")  # end of 2026-06-30 in Asia/Shanghai


def _monthly_regulars_and_two_one_timers(n: int = 40, seed: int = 5):
    """n customers buying about every 30 days for two years, one-timers 400 and 10 days ago."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for k, d in enumerate(range(int(rng.integers(0, 30)), 730, 30)):
            rows.append((f"o{i}-{k}", f"m{i:02d}", AS_OF - pd.Timedelta(days=d + int(rng.integers(-3, 4))), 50.0))
    rows.append(("o-old", "old", AS_OF - pd.Timedelta(days=400), 50.0))
    rows.append(("o-new", "new", AS_OF - pd.Timedelta(days=10), 50.0))
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "amount"])
    return pd.DataFrame({"customer_id": sorted(orders["customer_id"].unique())}), orders


def test_winback_segment_rates_a_long_silent_one_timer_unlikely_alive(tmp_path, capsys):
    customers, orders = _monthly_regulars_and_two_one_timers()
    ids = customers["customer_id"]
    customers = customers.assign(email=ids + "@example.com", phone="+8613800138000", locale="zh-CN",
                                 timezone="Asia/Shanghai", email_opt_in="true", sms_opt_in="false")
    customers.to_csv(tmp_path / "customers.csv", index=False)
    orders.assign(ordered_at=orders["ordered_at"].map(pd.Timestamp.isoformat)).to_csv(tmp_path / "orders.csv",
                                                                                        index=False)
    out = tmp_path / "segments.parquet"
    assert main(["segment", "--customers", str(tmp_path / "customers.csv"), "--orders", str(tmp_path / "orders.csv"),
                 "--as-of", "2026-06-30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    seg = pd.read_parquet(out).set_index("customer_id")
    assert seg.loc["old", "p_alive"] < 0.5 < seg.loc["new", "p_alive"]
    # The value follows: the long-silent one-timer is worth (next to) nothing, the recent one is not.
    assert seg.loc["old", "clv"] < 0.1 * seg.loc["new", "clv"]
    assert seg.loc["old", "lapse_stage"] == "lost" and seg.loc["old", "value_tier"] == "lead"
    model = seg["purchase_model"].unique()
    assert len(model) == 1 and model[0] in ("mbgnbd", "pareto-nbd")
    printed = " ".join(printed.split())  # rich wraps the caption
    assert "P(alive) and CLV from" in printed and "smallest holdout error" in printed


def test_bgnbd_rates_every_one_timer_alive_which_is_why_it_loses_the_check():
    customers, orders = _monthly_regulars_and_two_one_timers()
    named = segment_customers(customers, orders, as_of=AS_OF, params=SegmentParams(purchase_model="bgnbd"))
    named = named.set_index("customer_id")
    assert named.loc["old", "p_alive"] == 1.0 and named.loc["new", "p_alive"] == 1.0
    assert (named["purchase_model"] == "bgnbd").all()
    assert "named" in named.attrs["purchase_model"]["reason"]
    chosen = fit_customer_models(orders, as_of=AS_OF).choice
    assert chosen.model != "bgnbd" and chosen.errors["bgnbd"] > chosen.errors[chosen.model]
    assert chosen.holdout_days == 180 and chosen.calibration_end == "2026-01-01"
    assert chosen.actual > 0 and set(chosen.predicted) == {"bgnbd", "mbgnbd", "pareto-nbd"}


def test_short_history_falls_back_to_mbgnbd_and_says_why():
    rows = [(f"o{i}", f"c{i % 12}", AS_OF - pd.Timedelta(days=i % 40), 20.0) for i in range(60)]
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "amount"])
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(12)]})
    seg = segment_customers(customers, orders, as_of=AS_OF)
    record = seg.attrs["purchase_model"]
    assert record["model"] == "mbgnbd" and "too short" in record["reason"] and record["label"] == "MBG/NBD"
    assert set(record["params"]) >= {"r", "alpha", "a", "b"}
    assert seg["p_alive"].between(0, 1).all()


@pytest.mark.parametrize("bitmap", [True, False])
def test_calibration_split_of_the_aggregation_matches_the_pandas_holdout_summary(bitmap, monkeypatch):
    if not bitmap:  # more days than the bitmap holds: count(DISTINCT day) instead
        monkeypatch.setattr(aggregate, "_MAX_BITMAP_DAYS", 0)  # a threshold, not a stand-in
    rng = np.random.default_rng(11)
    n = 300
    who = rng.integers(0, n, 2500)
    days = rng.integers(-5, 600, len(who)) + rng.integers(0, 20, len(who)) / 24  # some same-day pairs
    orders = pd.DataFrame({"order_id": [f"o{i}" for i in range(len(who))], "customer_id": [f"c{k:03d}" for k in who],
                           "ordered_at": AS_OF - pd.to_timedelta(days, unit="D"), "amount": 10.0})
    agg = aggregate.aggregate_orders(orders, as_of=AS_OF, timezone="Asia/Shanghai", trend_window_days=180,
                                     categories=False, holdout_days=150, holdout_share=0.5)
    assert agg.split_day == np.datetime64("2026-01-31")  # as_of day − 150
    buyers = agg.n_orders > 0
    cal = _calibration(agg, buyers, np.datetime64("2026-06-30"))
    until = pd.Timestamp("2026-01-31 23:59:59", tz="Asia/Shanghai")
    reference, horizon = holdout_summary(orders, until=until, holdout_until=AS_OF, timezone="Asia/Shanghai")
    assert horizon == cal.holdout_days == 150
    reference = reference.sort_values("customer_id")  # the aggregation's rows come in customer_id order too
    np.testing.assert_array_equal(cal.frequency, reference["frequency"])
    np.testing.assert_array_equal(cal.recency, reference["recency"])
    np.testing.assert_array_equal(cal.T, reference["T"])
    np.testing.assert_array_equal(cal.holdout, reference["holdout_transactions"])
