"""measure_campaign on literal ledger rows and orders with hand-computed answers."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from winback.errors import DataError
from winback.measure.campaign import measure_campaign

T = pd.Timestamp


def _ctx(kind, **offer):
    return json.dumps({"offer": {"kind": kind, **offer}, "step": 1})


def ledger_rows() -> pd.DataFrame:
    rows = [
        # customer, arm, step, state, send_at_utc, sent_at, offer, kind, coupon, expected_cost, tier, context
        ("A", "treatment", 1, "sent", "2026-01-01 09:00", "2026-01-01 10:00", "pct20", "percent_off", "CA", 4.0,
         "gold", _ctx("percent_off", percent=20)),
        ("B", "treatment", 1, "failed", "2026-01-01 09:00", None, "amt30", "amount_off", "CB", 6.0, "gold",
         _ctx("amount_off", amount=30)),
        ("C", "treatment", 1, "sent", "2026-01-01 09:00", "2026-01-01 09:00", "pts", "bonus_points", "CC", 5.0,
         "iron", _ctx("bonus_points", points=500)),
        ("C", "treatment", 2, "sent", "2026-01-08 09:00", "2026-01-08 09:00", "pts", "bonus_points", "CC", 5.0,
         "iron", _ctx("bonus_points", points=500)),
        ("D", "treatment", 1, "sent", "2026-01-01 09:00", "2026-01-01 09:00", "remind", "reminder", None, 0.0,
         "iron", _ctx("reminder")),
        ("E", "holdout", 1, "held_out", "2026-01-02 09:00", None, "pct20", "percent_off", "CE", 4.0, "gold",
         _ctx("percent_off", percent=20)),
        ("F", "holdout", 1, "held_out", "2026-01-01 09:00", None, "amt30", "amount_off", "CF", 6.0, "gold",
         _ctx("amount_off", amount=30)),
        ("G", "holdout", 1, "held_out", "2026-01-01 09:00", None, "pts", "bonus_points", "CG", 5.0, "iron",
         _ctx("bonus_points", points=500)),
        ("G", "holdout", 2, "held_out", "2026-01-08 09:00", None, "pts", "bonus_points", "CG", 5.0, "iron",
         _ctx("bonus_points", points=500)),
        ("X", "excluded", 1, None, "2026-01-01 09:00", None, None, None, None, None, "lead", None),
    ]
    cols = ["customer_id", "arm", "step", "state", "send_at_utc", "sent_at", "offer", "offer_kind", "coupon_code",
            "expected_cost", "value_tier", "context"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["campaign_id"] = "c1"
    frame["channel"] = ["email", "sms", "email", "email", "email", "email", "sms", "email", "email", "email"]
    frame["lapse_stage"] = "lapsed"
    frame["likely_reason"] = "price"
    for col in ("send_at_utc", "sent_at"):
        frame[col] = pd.to_datetime(frame[col]).dt.tz_localize("UTC")
    return frame


def orders() -> pd.DataFrame:
    rows = [
        ("o1", "A", "2026-01-01 09:30", 70.0, None, 0.0),   # before A's real contact (10:00): not counted
        ("o2", "A", "2026-01-03 12:00", 100.0, "CA", 0.0),  # coupon, no recorded discount: 20% × 100 = 20
        ("o3", "A", "2026-01-12 12:00", 50.0, None, 0.0),   # after the 10-day window: not counted
        ("o4", "B", "2026-01-05 12:00", 80.0, "CB", 25.0),  # failed delivery still counts (ITT); discount 25 wins
        ("o5", "C", "2026-01-15 12:00", 30.0, None, 0.0),   # outside C's window from step 1, inside step 2's
        ("o6", "D", "2026-01-10 23:00", 40.0, None, 0.0),   # inside the window (ends 01-11 09:00)
        ("o7", "E", "2026-01-02 08:00", 10.0, None, 0.0),   # before the would-be contact time: not counted
        ("o8", "E", "2026-01-04 12:00", 60.0, None, 0.0),   # holdout return
        ("o9", "F", "2026-01-11 09:00", 90.0, None, 0.0),   # exactly contact + 10 days: window is half-open
        ("o10", "X", "2026-01-03 12:00", 99.0, None, 0.0),  # excluded customer: not in the experiment
        ("o11", "Z", "2026-01-03 12:00", 99.0, None, 0.0),  # not in the campaign
    ]
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "amount", "coupon_code", "discount"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"]).dt.tz_localize("UTC")
    return frame


@pytest.fixture(scope="module")
def result():
    return measure_campaign(ledger_rows(), orders(), window_days=10)


def test_per_arm_counts(result):
    t, h = result.arms["treatment"], result.arms["holdout"]
    assert (t["n"], t["returned"], t["orders"]) == (4, 3, 3)
    assert t["revenue"] == pytest.approx(220.0)
    assert t["revenue_per_customer"] == pytest.approx(55.0)
    assert t["coupons_redeemed"] == 2
    assert t["coupon_cost"] == pytest.approx(45.0)
    assert (h["n"], h["returned"], h["orders"]) == (3, 1, 1)
    assert h["revenue"] == pytest.approx(60.0)
    assert h["revenue_per_customer"] == pytest.approx(20.0)


def test_money_and_uplift(result):
    rr = result.uplift["return_rate"]
    assert rr["diff"] == pytest.approx(0.75 - 1 / 3)
    assert rr["ci_low"] < rr["diff"] < rr["ci_high"]
    assert result.incremental_returns["estimate"] == pytest.approx((0.75 - 1 / 3) * 4)
    assert result.incremental_revenue["estimate"] == pytest.approx((55 - 20) * 4)
    assert result.offer_cost == pytest.approx(45.0)
    # Money is on order value before coupon discounts (B's order: 80 paid + 25 off = 105), so the 25 counts
    # once, as offer cost: treated (100 + 105 + 40) / 4 = 61.25, holdout 20; margin 100 % without a campaign.
    assert result.incremental_margin["estimate"] == pytest.approx((61.25 - 20) * 4)
    assert result.contact_cost == 0.0
    assert result.net_incremental_value == pytest.approx(165 - 45)
    assert result.roi == pytest.approx(120 / 45)


def test_itt_and_delivery(result):
    assert result.delivery["contacted"] == 3
    assert result.delivery["delivery_rate"] == pytest.approx(0.75)
    units = result.units.set_index("customer_id")
    assert bool(units.loc["B", "returned"])  # failed delivery, still treated and returned
    assert "X" not in units.index


def test_window_edges(result):
    units = result.units.set_index("customer_id")
    assert units.loc["A", "orders"] == 1  # o1 before contact, o3 after the window
    assert units.loc["A", "contact_at"] == T("2026-01-01 10:00", tz="UTC")  # the real send time
    assert units.loc["E", "contact_at"] == T("2026-01-02 09:00", tz="UTC")  # would-be contact time
    assert units.loc["E", "orders"] == 1
    assert not units.loc["F", "returned"]  # order at exactly contact + window
    assert not units.loc["C", "returned"]
    assert units.loc["A", "first_order_days"] == pytest.approx(2 + 2 / 24)


def test_breakdowns(result):
    by_offer = result.breakdowns["offer"].set_index("offer")
    assert by_offer.loc["pct20", ["n_treated", "returned_treated", "n_holdout", "returned_holdout"]].tolist() == \
        [1, 1, 1, 1]
    assert by_offer.loc["pts", "offer_cost"] == 0.0
    assert by_offer.loc["amt30", "offer_cost"] == pytest.approx(25.0)
    assert "p_holm" in by_offer.columns
    tested = by_offer.dropna(subset=["p_value"])
    assert (tested["p_holm"] >= tested["p_value"]).all()
    assert math.isnan(by_offer.loc["remind", "p_value"])  # no holdout with that offer: no test
    tier = result.breakdowns["value_tier"].set_index("value_tier")
    assert tier.loc["iron", ["n_treated", "returned_treated", "n_holdout", "returned_holdout"]].tolist() == [2, 1, 1, 0]
    step = result.breakdowns["step"].set_index("step")
    assert step.loc["1", ["n_treated", "returned_treated", "n_holdout", "returned_holdout"]].tolist() == [4, 3, 3, 1]
    # Step 2 is timed from its own contact: C's order on 01-15 counts there.
    assert step.loc["2", ["n_treated", "returned_treated", "n_holdout", "returned_holdout"]].tolist() == [1, 1, 1, 0]


def test_as_of_cuts_the_window():
    r = measure_campaign(ledger_rows(), orders(), window_days=10, as_of=T("2026-01-04 00:00", tz="UTC"))
    assert r.arms["treatment"]["returned"] == 1  # only A's 01-03 order is before as_of
    assert r.arms["holdout"]["returned"] == 0
    assert r.delivery["window_complete_share"] == 0.0
    assert any("as_of" in n for n in r.notes)


def test_curve_is_cumulative(result):
    c = result.curve
    t = c[c["arm"] == "treatment"].set_index("day")["cumulative_return_rate"]
    assert t.loc[2] == 0.0 and t.loc[3] == pytest.approx(0.25)  # A returns 2.08 days after contact
    assert t.loc[10] == pytest.approx(0.75)
    assert t.is_monotonic_increasing


def test_json_shape(result):
    out = json.loads(json.dumps(result.to_dict()))
    assert out["campaign_id"] == "c1"
    assert out["arms"]["treatment"]["n"] == 4 and "revenue" in out["arms"]["holdout"]
    assert set(out["uplift"]["return_rate"]) >= {"diff", "ci_low", "ci_high", "p_value"}
    assert set(out["uplift"]["revenue_per_customer"]) >= {"diff", "ci_low", "ci_high", "p_value"}
    assert out["roi"] == pytest.approx(120 / 45)
    assert [r["offer"] for r in out["by_offer"]] == ["amt30", "pct20", "pts", "remind"]


def test_orders_from_a_parquet_file(tmp_path, result):
    path = tmp_path / "orders.parquet"
    orders().to_parquet(path)
    r = measure_campaign(ledger_rows(), str(path), window_days=10)
    assert r.arms == result.arms


def test_bootstrap_revenue_is_seeded():
    a = measure_campaign(ledger_rows(), orders(), window_days=10, revenue_method="bootstrap", seed=7, by=())
    b = measure_campaign(ledger_rows(), orders(), window_days=10, revenue_method="bootstrap", seed=7, by=())
    assert a.uplift["revenue_per_customer"] == b.uplift["revenue_per_customer"]
    assert a.uplift["revenue_per_customer"]["method"] == "bootstrap"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda led, o: (led.drop(columns=["send_at_utc"]), o), "send_at_utc"),
        (lambda led, o: (led.assign(arm="control"), o), "unknown arm"),
        (lambda led, o: (led, o.drop(columns=["amount"])), "amount"),
        (lambda led, o: (led.assign(campaign_id=["c1", "c2"] * 5), o), "several campaigns"),
        (lambda led, o: (pd.concat([led, led.iloc[[0]].assign(arm="holdout", step=3)]), o), "both arms"),
        (lambda led, o: (led.assign(send_at_utc=pd.NaT), o), "send_at_utc"),
    ],
)
def test_bad_input_is_a_clear_error(mutate, message):
    led, o = mutate(ledger_rows(), orders())
    with pytest.raises(DataError, match=message):
        measure_campaign(led, o, window_days=10)


def test_missing_orders_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        measure_campaign(ledger_rows(), str(tmp_path / "nope.parquet"), window_days=10)


def test_empty_holdout_gives_nan_not_crash():
    led = ledger_rows()
    r = measure_campaign(led[led["arm"] != "holdout"], orders(), window_days=10)
    assert r.uplift["return_rate"]["ci_low"] is None
    assert any("empty" in n for n in r.notes)
    assert r.to_dict()["uplift"]["return_rate"]["ci_low"] is None


def test_orders_from_a_csv_keep_text_ids(tmp_path):
    # Ids with leading zeros stay text (DuckDB would otherwise infer integers); UTF-8 BOM as Excel writes it.
    led = ledger_rows()
    led["customer_id"] = led["customer_id"].map({c: f"00{i}" for i, c in enumerate("ABCDEFGX")})
    o = orders()
    o["customer_id"] = o["customer_id"].map({c: f"00{i}" for i, c in enumerate("ABCDEFGX")}).fillna("999")
    path = tmp_path / "orders.csv"
    o.to_csv(path, index=False, encoding="utf-8-sig")
    r = measure_campaign(led, str(path), window_days=10, by=())
    assert (r.arms["treatment"]["returned"], r.arms["holdout"]["returned"]) == (3, 1)
    assert r.arms["treatment"]["coupon_cost"] == pytest.approx(45.0)


def test_bad_order_amount_is_an_error(tmp_path):
    path = tmp_path / "orders.csv"
    orders().assign(amount=["x"] + [1.0] * 10).to_csv(path, index=False)
    with pytest.raises(DataError, match="cannot join orders"):
        measure_campaign(ledger_rows(), str(path), window_days=10, by=())
