"""Offers: cost model, eligibility (birthday window, service recovery), choice, caps, budget, coupons, learner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.campaigns import parse_campaign
from winback.errors import ConfigError
from winback.offers import (
    ALPHABET,
    Learner,
    NullLearner,
    PriorLearner,
    apply_budget,
    check_unique_codes,
    choose_offers,
    generate_coupon_codes,
)
from winback.offers.catalog import cost_if_redeemed, in_birthday_window

AS_OF = pd.Timestamp("2026-11-23 12:00", tz="UTC")
CAMPAIGN = parse_campaign("""
id: offers-test
name: offers
channels: [email, sms]
offers:
  - {id: hello, kind: reminder, template: reminder}
  - {id: pct20, kind: percent_off, percent: 20, max_discount: 60, template: percent_off}
  - {id: save50, kind: amount_off, amount: 50, min_spend: 300, template: amount_off}
  - {id: pts, kind: bonus_points, points: 1000, point_value: 0.01, template: bonus_points}
  - {id: ship, kind: free_shipping, shipping_cost: 12, template: free_shipping}
  - {id: bday, kind: birthday_gift, gift_cost: 30, template: birthday_gift}
  - {id: sorry, kind: service_recovery, survey_url: "https://s.example/x", template: service_recovery}
""")


def frame(**cols) -> pd.DataFrame:
    n = max(len(v) for v in cols.values() if isinstance(v, list))
    base = {"customer_id": [f"c{i}" for i in range(n)], "value_tier": "gold", "lapse_stage": "lapsing",
            "likely_reason": "price", "expected_order_value": 400.0}
    base.update(cols)
    return pd.DataFrame({k: v if isinstance(v, list) else [v] * n for k, v in base.items()})


def test_cost_model_per_kind() -> None:
    spend = pd.Series([100.0, 500.0])
    costs = {o.id: list(cost_if_redeemed(o, spend)) for o in CAMPAIGN.offers}
    assert costs["pct20"] == [20.0, 60.0]  # 20% of the order, capped at max_discount
    assert costs["save50"] == [50.0, 50.0]
    assert costs["pts"] == [10.0, 10.0]  # 1000 points × 0.01
    assert costs["ship"] == [12.0, 12.0]
    assert costs["bday"] == [30.0, 30.0]
    assert costs["sorry"] == [0.0, 0.0] and costs["hello"] == [0.0, 0.0]


def test_birthday_window_including_leap_day_and_year_end() -> None:
    bdays = pd.Series(pd.to_datetime(["1990-11-25", "1985-11-19", "1992-12-10", "2000-02-29", None, "1970-11-20"]))
    hit = in_birthday_window(bdays, AS_OF, before=3, after=14)
    assert list(hit) == [True, False, False, False, False, True]
    leap = in_birthday_window(pd.Series(pd.to_datetime(["2000-02-29"])),
                              pd.Timestamp("2027-02-27", tz="UTC"), before=0, after=2)
    assert bool(leap.iloc[0])  # 29 Feb counts as 28 Feb in common years
    new_year = in_birthday_window(pd.Series(pd.to_datetime(["1999-01-03"])),
                                  pd.Timestamp("2026-12-30", tz="UTC"), before=0, after=7)
    assert bool(new_year.iloc[0])


def test_service_reason_gets_service_recovery_not_a_discount() -> None:
    f = frame(likely_reason=["service", "price"], birthday=pd.NaT)
    out = choose_offers(f, CAMPAIGN, as_of=AS_OF)
    assert out.loc[0, "offer_kind"] == "service_recovery"
    assert out.loc[0, "expected_cost"] == pytest.approx(0.0)
    assert out.loc[1, "offer_kind"] != "service_recovery"  # not eligible for the price-sensitive


def test_birthday_gift_only_in_window() -> None:
    f = frame(likely_reason=["forgotten", "forgotten"], birthday=list(pd.to_datetime(["1990-11-26", "1990-06-01"])))
    out = choose_offers(f, CAMPAIGN, as_of=AS_OF)
    assert out.loc[0, "offer"] == "bday"
    assert out.loc[1, "offer"] != "bday"


def test_expected_net_value_formula() -> None:
    single = CAMPAIGN.model_copy(update={"offers": [CAMPAIGN.offer("pct20")]})
    f = frame(likely_reason=["price"], value_tier="iron", lapse_stage="lapsing", expected_order_value=200.0)
    out = choose_offers(f, single, as_of=AS_OF, channel=pd.Series(["email"]))
    p_base = 0.08 * 1.0  # iron base × lapsing factor
    p = p_base + 0.08  # percent_off uplift for price
    cost = p * 0.2 * 200
    env = (p * 200 - p_base * 200) - cost
    assert out.loc[0, "p_return"] == pytest.approx(p)
    assert out.loc[0, "expected_cost"] == pytest.approx(cost)
    assert out.loc[0, "expected_net_value"] == pytest.approx(env)


def test_negative_value_customers_are_not_spent_on() -> None:
    f = frame(likely_reason=["none"], value_tier="lead", lapse_stage="lost", expected_order_value=5.0)
    pricey = CAMPAIGN.model_copy(update={"offers": [CAMPAIGN.offer("save50")]})
    out = choose_offers(f, pricey, as_of=AS_OF)
    assert pd.isna(out.loc[0, "offer"]) and out.loc[0, "offer_reason"] == "negative_value"
    assert out.loc[0, "expected_net_value"] < 0  # the audit keeps the figures
    with_reminder = pricey.model_copy(update={
        "offers": [CAMPAIGN.offer("save50"), CAMPAIGN.offer("hello")],
        "policy": pricey.policy.model_copy(update={"negative_value": "reminder"}),
        "economics": pricey.economics.model_copy(update={"contact_costs": {"email": 1.0}})})
    out = choose_offers(f, with_reminder, as_of=AS_OF, channel=pd.Series(["email"]))
    assert out.loc[0, "offer"] == "hello" and out.loc[0, "choice_reason"] == "reminder_for_negative_value"


def test_cap_moves_the_rest_to_their_next_best_offer() -> None:
    capped = CAMPAIGN.offer("pct20").model_copy(update={"cap": 3})
    campaign = CAMPAIGN.model_copy(update={"offers": [capped, CAMPAIGN.offer("hello")]})
    f = frame(likely_reason=["price"] * 10, expected_order_value=[100.0 + 10 * i for i in range(10)])
    out = choose_offers(f, campaign, as_of=AS_OF)
    assert (out["offer"] == "pct20").sum() == 3
    # The cap keeps the customers for whom the offer is worth most.
    top = out[out["offer"] == "pct20"].index
    assert set(top) == {7, 8, 9}
    assert set(out.loc[~out.index.isin(top), "offer"]) == {"hello"}


def test_eligibility_by_tier_and_stage() -> None:
    pts = CAMPAIGN.offer("pts").model_copy(update={"eligibility": CAMPAIGN.offer("pts").eligibility.model_copy(
        update={"value_tiers": ["platinum"], "lapse_stages": ["lapsing"]})})
    campaign = CAMPAIGN.model_copy(update={"offers": [pts]})
    f = frame(value_tier=["platinum", "gold", "platinum"], lapse_stage=["lapsing", "lapsing", "lost"],
              likely_reason="forgotten")
    out = choose_offers(f, campaign, as_of=AS_OF)
    assert list(out["offer_reason"].fillna("-")) == ["-", "no_eligible_offer", "no_eligible_offer"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(-50, 200)), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=2000), st.integers(0, 1000))
def test_budget_never_exceeded_free_rows_kept_and_nothing_left_that_fits(rows, budget, seed) -> None:
    rng = np.random.default_rng(seed)
    ids = pd.Series([f"c{i}" for i in range(len(rows))])
    cost = pd.Series([r[0] for r in rows])
    env = pd.Series([r[1] for r in rows])
    counted = pd.Series(rng.random(len(rows)) < 0.9)
    keep = apply_budget(ids, cost, env, budget, counts=counted)
    spent = cost[keep & counted].sum()
    assert spent <= budget + 1e-6
    assert keep[cost <= 0].all()  # what costs nothing is never cut
    # Greedy: nobody left out would still fit in what is left.
    assert (cost[~keep] > budget - spent - 1e-6).all()
    perm = rng.permutation(len(rows))
    again = apply_budget(ids[perm], cost[perm], env[perm], budget, counts=counted[perm])
    assert again.reindex(keep.index).equals(keep)


def test_budget_is_a_knapsack_by_value_per_cost_not_a_prefix_by_value() -> None:
    # One customer worth 11 for 10, four worth 8 for 2 each: a prefix in value order spends the whole
    # budget on the first (11); by value per unit of cost the four fit (32) and the big one does not.
    ids = pd.Series(["big", "a", "b", "c", "d", "free"])
    cost = pd.Series([10.0, 2.0, 2.0, 2.0, 2.0, 0.0])
    env = pd.Series([11.0, 8.0, 8.0, 8.0, 8.0, 0.5])
    keep = apply_budget(ids, cost, env, 10.0)
    assert keep.tolist() == [False, True, True, True, True, True]
    # A weight (the cost of the whole cadence) ranks and spends instead of the first step's cost.
    keep = apply_budget(ids, cost, env, 10.0, weights=pd.Series([10.0, 5.0, 5.0, 5.0, 5.0, 0.0]))
    assert keep.tolist() == [False, True, True, False, False, True]


def test_budget_none_keeps_everyone() -> None:
    ids = pd.Series(["a", "b"])
    assert apply_budget(ids, pd.Series([1e9, 1e9]), pd.Series([1.0, 2.0]), None).all()


def test_coupon_codes_are_readable_and_shaped() -> None:
    codes = generate_coupon_codes(500, length=10, prefix="SC", group=5)
    assert len(set(codes)) == 500
    for code in codes:
        prefix, a, b = code.split("-")
        assert prefix == "SC" and len(a) == 5 and len(b) == 5
        assert set(a + b) <= set(ALPHABET)
        assert not set(a + b) & set("01OI")


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 3000), st.lists(st.text(alphabet=ALPHABET, min_size=8, max_size=8), max_size=50))
def test_coupon_codes_unique_and_avoid_existing(n: int, existing: list[str]) -> None:
    codes = generate_coupon_codes(n, length=8, existing=existing)
    assert len(codes) == n
    assert not check_unique_codes(codes + sorted(set(existing)))


def test_coupon_code_space_guard() -> None:
    with pytest.raises(ConfigError, match="coupons.length"):
        generate_coupon_codes(10, length=4)
    with pytest.raises(ConfigError, match="guessable"):
        generate_coupon_codes(2_000_000, length=6)


class FixedLearner:
    """A learner that knows amount_off works best for gold customers (tests the interface only)."""

    def sample_uplift(self, offer_kind: str, value_tier: str, rng: np.random.Generator) -> float | None:
        return 0.4 if (offer_kind, value_tier) == ("amount_off", "gold") else None


def test_learner_draws_replace_priors() -> None:
    assert isinstance(FixedLearner(), Learner) and isinstance(NullLearner(), Learner)
    f = frame(value_tier=["gold", "iron"], likely_reason="forgotten")
    out = choose_offers(f, CAMPAIGN, as_of=AS_OF, learner=FixedLearner())
    assert out.loc[0, "offer"] == "save50"
    assert out.loc[1, "offer"] != "save50"
    assert out.equals(choose_offers(f, CAMPAIGN, as_of=AS_OF, learner=FixedLearner()))


def test_prior_learner_explores_around_priors_deterministically_by_seed() -> None:
    learner = PriorLearner({("percent_off", "gold"): (0.15, 0.05)}, strength=400)
    rng = np.random.default_rng(1)
    draws = [learner.sample_uplift("percent_off", "gold", rng) for _ in range(2000)]
    assert abs(np.mean(draws) - 0.05) < 0.01
    assert learner.sample_uplift("reminder", "gold", rng) is None
    f = frame(value_tier="gold", likely_reason=["price"] * 300)
    a = choose_offers(f, CAMPAIGN, as_of=AS_OF, learner=learner, seed=7)
    b = choose_offers(f, CAMPAIGN, as_of=AS_OF, learner=learner, seed=7)
    assert a.equals(b)


def test_call_without_offer_is_still_a_treatment() -> None:
    campaign = CAMPAIGN.model_copy(update={"human_followup": CAMPAIGN.human_followup.model_copy(
        update={"with_offer": False}), "offers": [CAMPAIGN.offer("pct20")]})
    f = frame(value_tier=["platinum", "platinum"], likely_reason="price")
    out = choose_offers(f, campaign, as_of=AS_OF, channel=pd.Series(["call_task", "email"]))
    assert pd.isna(out.loc[0, "offer"]) and pd.isna(out.loc[0, "offer_reason"])
    assert out.loc[0, "choice_reason"] == "human_followup"
    assert out.loc[0, "p_return"] == pytest.approx(out.loc[0, "p_base"] + 0.05)  # the call uplift for price
    assert out.loc[1, "offer"] == "pct20"
