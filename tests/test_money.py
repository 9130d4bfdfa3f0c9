"""What a campaign really cost and earned, on constructed rows where the right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from winback.campaigns import parse_campaign
from winback.measure import money
from winback.measure.campaign import measure_campaign

CAMPAIGN = parse_campaign("""
id: money
name: money
offers:
  - {id: pct15, kind: percent_off, percent: 15, max_discount: 200, template: percent_off}
  - {id: pts, kind: bonus_points, points: 2000, point_value: 0.01, template: bonus_points}
  - {id: ship, kind: free_shipping, shipping_cost: 12, template: free_shipping}
  - {id: gift, kind: birthday_gift, gift_cost: 38, template: birthday_gift}
  - {id: off50, kind: amount_off, amount: 50, min_spend: 300, template: amount_off}
  - {id: hello, kind: reminder, template: reminder}
channels: [email, sms]
economics: {gross_margin: 0.45, contact_costs: {email: 0.0, sms: 0.045, call_task: 8.0}}
""")
T0 = pd.Timestamp("2026-01-01 09:00", tz="UTC")


def _row(customer, arm, offer, kind, channel, code, *, state="sent", step=1, segments=None, context=None):
    return {"campaign_id": "money", "customer_id": customer, "step": step, "arm": arm, "offer": offer,
            "offer_kind": kind, "channel": channel, "coupon_code": code, "state": state if arm == "treatment"
            else "held_out", "send_at_utc": T0, "sent_at": T0 if arm == "treatment" and state == "sent" else pd.NaT,
            "expected_cost": 1.0, "value_tier": "gold", "lapse_stage": "lapsed", "likely_reason": "price",
            "sms_segments": segments, "context": context}


def ledger_rows() -> pd.DataFrame:
    rows = [
        _row("A", "treatment", "pct15", "percent_off", "sms", "CA", segments=2),
        _row("B", "treatment", "pts", "bonus_points", "email", "CB"),
        _row("C", "treatment", "ship", "free_shipping", "call_task", "CC"),
        _row("D", "treatment", "gift", "birthday_gift", "email", "CD"),
        _row("E", "holdout", "pct15", "percent_off", "sms", None),
        _row("F", "holdout", "pts", "bonus_points", "email", None),
    ]
    return pd.DataFrame(rows)


def orders() -> pd.DataFrame:
    return pd.DataFrame({
        "order_id": ["o1", "o2", "o3", "o4", "o5"],
        "customer_id": ["A", "B", "C", "D", "E"],
        "ordered_at": [T0 + pd.Timedelta(days=2)] * 5,
        "amount": [2000.0, 150.0, 80.0, 50.0, 100.0],
        "discount": [0.0, 0.0, 0.0, 0.0, 0.0],
        "coupon_code": ["CA", "CB", "CC", "CD", None],
    })


def test_each_kind_costs_what_was_really_given() -> None:
    r = measure_campaign(ledger_rows(), orders(), window_days=30, campaign=CAMPAIGN, by=("offer",))
    by_offer = r.breakdowns["offer"].set_index("offer")
    assert by_offer.loc["pct15", "offer_cost"] == pytest.approx(200.0)  # 15 % of 2,000 is 300: capped at 200
    assert by_offer.loc["pts", "offer_cost"] == pytest.approx(20.0)  # 2,000 points × 0.01
    assert by_offer.loc["ship", "offer_cost"] == pytest.approx(12.0)  # one shipment
    assert by_offer.loc["gift", "offer_cost"] == pytest.approx(38.0)  # the gift, when claimed
    assert r.offer_cost == pytest.approx(270.0)
    assert r.arms["treatment"]["coupons_redeemed"] == 4


def test_contact_costs_margin_net_and_roi() -> None:
    r = measure_campaign(ledger_rows(), orders(), window_days=30, campaign=CAMPAIGN, by=("offer", "channel"))
    assert r.contact_cost == pytest.approx(2 * 0.045 + 8.0)  # a 2-segment SMS and one call; e-mail is free
    assert r.gross_margin == 0.45
    # Order value per customer: treated (2,000 + 150 + 80 + 50) / 4 = 570, holdout 100 / 2 = 50.
    margin = (570 - 50) * 4 * 0.45
    assert r.incremental_margin["estimate"] == pytest.approx(margin)
    assert r.incremental_margin["ci_low"] < margin < r.incremental_margin["ci_high"]
    net = margin - 270 - 8.09
    assert r.net_incremental_value == pytest.approx(net)
    assert r.roi == pytest.approx(net / (270 + 8.09))
    by_channel = r.breakdowns["channel"].set_index("channel")
    assert by_channel.loc["sms", "contact_cost"] == pytest.approx(0.09)
    assert by_channel.loc["call_task", "contact_cost"] == pytest.approx(8.0)
    assert by_channel.loc["sms", "coupons_redeemed"] == 1
    out = r.to_dict()
    assert out["total_cost"] == pytest.approx(278.09) and out["incremental_margin"]["estimate"] == pytest.approx(margin)


def test_a_recorded_discount_is_capped_and_counted_once() -> None:
    o = orders()
    o.loc[0, ["amount", "discount"]] = [1700.0, 300.0]  # the shop took 300 off a 2,000 order
    r = measure_campaign(ledger_rows(), o, window_days=30, campaign=CAMPAIGN, by=())
    assert r.offer_cost == pytest.approx(270.0)  # still 200: the offer's cap
    # The order was worth 2,000 before the coupon: the discount is a cost, not lost revenue as well.
    assert r.arms["treatment"]["order_value"] == pytest.approx(2280.0)
    assert r.arms["treatment"]["revenue"] == pytest.approx(1980.0)


def test_failed_and_held_out_messages_cost_nothing() -> None:
    led = ledger_rows()
    led.loc[led["customer_id"] == "A", ["state", "sent_at"]] = ["failed", pd.NaT]
    r = measure_campaign(led, orders(), window_days=30, campaign=CAMPAIGN, by=())
    assert r.contact_cost == pytest.approx(8.0)


def test_terms_from_the_ledger_context_when_no_campaign_is_given() -> None:
    led = ledger_rows()
    terms = {"pct15": {"kind": "percent_off", "percent": 15, "max_discount": 200},
             "pts": {"kind": "bonus_points", "points": 2000, "point_value": 0.01},
             "ship": {"kind": "free_shipping", "shipping_cost": 12},
             "gift": {"kind": "birthday_gift", "gift_cost": 38}}
    led["context"] = [json.dumps({"offer": terms.get(o)}) if o in terms else None for o in led["offer"]]
    r = measure_campaign(led, orders(), window_days=30, by=("offer",))
    assert r.offer_cost == pytest.approx(270.0)
    assert r.gross_margin == 1.0 and r.contact_cost == 0.0
    assert any("no campaign definition" in n for n in r.notes)


def test_unknown_terms_fall_back_and_say_so() -> None:
    led = ledger_rows().assign(context=None)
    r = measure_campaign(led, orders(), window_days=30, by=())
    assert r.offer_cost == pytest.approx(4.0)  # each coupon at the plan's expected cost (1.0)
    assert any("4 redeemed coupon(s)" in n for n in r.notes)


def test_redemption_cost_rules_one_by_one() -> None:
    terms = pd.DataFrame([
        {"percent": 0.15, "max_discount": 200.0},
        {"percent": 0.15, "max_discount": None},
        {"amount_off": 50.0},
        {"amount_off": 50.0},
        {"points": 500.0},  # no point value: the campaign default, 0.01
        {"gift_cost": 30.0, "amount_off": 10.0, "fixed_cost": 2.0},
        {},
    ], columns=list(money.TERM_COLUMNS)).astype("float64")
    kind = np.array(["percent_off", "percent_off", "amount_off", "amount_off", "bonus_points", "birthday_gift",
                     "service_recovery"], dtype=object)
    amount = np.array([2000.0, 400.0, 30.0, 300.0, 100.0, 100.0, 100.0])
    discount = np.array([0.0, 0.0, 0.0, 60.0, 0.0, 0.0, 0.0])
    cost, known = money.redemption_costs(kind, amount, discount, terms, np.full(7, 9.0))
    assert cost.tolist() == pytest.approx([200.0, 60.0, 30.0, 50.0, 5.0, 42.0, 9.0])
    assert known.tolist() == [True] * 6 + [False]


def test_roi_is_undefined_without_spending() -> None:
    assert money.roi(10.0, 0.0, 0.0) is None
    assert money.roi(30.0, 10.0, 5.0) == pytest.approx(2.0)


def test_sent_sms_are_priced_by_their_real_segments() -> None:
    from test_plan import AS_OF, campaign, population
    from winback.campaigns import build_plan
    from winback.measure.run import sms_segments
    from winback.render import Renderer, make_unsubscribe_token, unsubscribe_url

    spec = campaign()
    customers, segments = population(300, seed=6)
    plan = build_plan(spec, customers, segments, as_of=AS_OF)
    rows = plan[(plan["arm"] == "treatment")].assign(state="sent").reset_index(drop=True)
    sms = rows["channel"] == "sms"
    got = sms_segments(rows, spec, public_url="https://winback.example.com")
    assert got[~sms].isna().all() and (got[sms] >= 1).all()
    first = rows[sms].iloc[0]
    token = make_unsubscribe_token(first["campaign_id"], first["customer_id"], "sms", "any secret")
    real = Renderer(spec.templates_path(), spec.locale_fallback).render(
        first["template"], "sms", first["locale"], first["context"],
        unsubscribe_url=unsubscribe_url("https://winback.example.com", token))
    assert got[sms].iloc[0] == real.sms_segments
    notes: list[str] = []
    sampled = sms_segments(rows, spec, public_url="https://winback.example.com", notes=notes, limit=3)
    assert (sampled[sms] >= 1).all() and any("sample of 3" in n for n in notes)
