"""Offer results and the Thompson learner: counts, posteriors, uplift (not response), learning over campaigns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winback.errors import DataError
from winback.measure.campaign import measure_campaign
from winback.measure.learning import (
    ThompsonLearner,
    best_offer_per_tier,
    offer_results_from,
    simulate_learning,
)
from winback.offers.learning import Learner

T = pd.Timestamp("2026-01-01 09:00", tz="UTC")


def test_offer_results_counts():
    ledger = pd.DataFrame({
        "campaign_id": "c9",
        "customer_id": list("ABCDEFG"),
        "arm": ["treatment"] * 4 + ["holdout"] * 3,
        "offer_kind": ["percent_off", "percent_off", "reminder", "percent_off", "percent_off", "reminder",
                       "percent_off"],
        "value_tier": ["gold", "gold", "gold", "iron", "gold", "gold", "iron"],
        "send_at_utc": T, "sent_at": T, "state": ["sent"] * 4 + ["held_out"] * 3, "step": 1,
    })
    orders = pd.DataFrame({"order_id": ["1", "2", "3"], "customer_id": ["A", "E", "D"],
                           "ordered_at": [T + pd.Timedelta(days=1)] * 3, "amount": [10.0, 20.0, 5.0]})
    out = offer_results_from(measure_campaign(ledger, orders, window_days=30, by=()))
    got = {(r.offer_kind, r.value_tier): (r.n_treated, r.returned_treated, r.n_holdout, r.returned_holdout)
           for r in out.itertuples()}
    assert got == {("percent_off", "gold"): (2, 1, 1, 1), ("reminder", "gold"): (1, 0, 1, 0),
                   ("percent_off", "iron"): (1, 1, 1, 0)}
    assert set(out["campaign_id"]) == {"c9"}


RESULTS = pd.DataFrame({
    "campaign_id": ["c1", "c1", "c2", "c1"],
    "offer_kind": ["percent_off", "reminder", "percent_off", "percent_off"],
    "value_tier": ["gold", "gold", "gold", "iron"],
    "n_treated": [100, 80, 100, 50],
    "returned_treated": [30, 12, 26, 5],
    "n_holdout": [20, 30, 25, 40],
    "returned_holdout": [2, 3, 3, 2],
})


def test_posteriors_hand_computed():
    learner = ThompsonLearner.from_frame(RESULTS)
    assert isinstance(learner, Learner)
    post = learner.posterior("percent_off", "gold")
    # Treated: 56 of 200 returned over both campaigns → Beta(57, 145). Holdout pooled over the tier's
    # offers and campaigns: 8 of 75 → Beta(9, 68).
    assert post["treated"] == (57, 145)
    assert post["holdout"] == (9, 68)
    assert post["mean_uplift"] == pytest.approx(57 / 202 - 9 / 77)
    assert learner.posterior("amount_off", "gold") is None
    assert learner.sample_uplift("amount_off", "gold", np.random.default_rng(0)) is None


def test_thompson_draws_centre_on_the_posterior_mean():
    learner = ThompsonLearner.from_frame(RESULTS)
    rng = np.random.default_rng(1)
    draws = np.array([learner.sample_uplift("percent_off", "gold", rng) for _ in range(4000)])
    assert draws.mean() == pytest.approx(57 / 202 - 9 / 77, abs=0.005)
    assert draws.std() > 0.02  # real uncertainty, not a point estimate


def test_learns_uplift_not_raw_response():
    # Gold customers come back at 50% anyway; the coupon adds 2 points. Lead customers at 1%; a
    # reminder adds 9 points. Raw response prefers gold; uplift prefers the lead reminder.
    results = pd.DataFrame({
        "campaign_id": ["c"] * 2, "offer_kind": ["percent_off", "reminder"], "value_tier": ["gold", "lead"],
        "n_treated": [5000, 5000], "returned_treated": [2600, 500], "n_holdout": [5000, 5000],
        "returned_holdout": [2500, 50],
    })
    learner = ThompsonLearner.from_frame(results)
    rng = np.random.default_rng(2)
    gold = np.mean([learner.sample_uplift("percent_off", "gold", rng) for _ in range(500)])
    lead = np.mean([learner.sample_uplift("reminder", "lead", rng) for _ in range(500)])
    assert gold == pytest.approx(0.02, abs=0.01)
    assert lead == pytest.approx(0.09, abs=0.01)
    assert lead > gold


def test_empty_and_bad_results():
    empty = ThompsonLearner.from_frame(pd.DataFrame(columns=RESULTS.columns))
    assert empty.sample_uplift("reminder", "gold", np.random.default_rng(0)) is None
    assert empty.summary().empty
    with pytest.raises(DataError):
        ThompsonLearner.from_frame(RESULTS.assign(returned_treated=1000))
    with pytest.raises(DataError):
        ThompsonLearner.from_frame(RESULTS.drop(columns=["n_holdout"]))


def literal_truth(per_tier: int = 400) -> pd.DataFrame:
    """Per tier a different truly best offer: gold → percent_off, iron → reminder, lead → amount_off."""
    spec = {
        "gold": {"base": 0.10, "reminder": 0.12, "percent_off": 0.22, "amount_off": 0.15, "bonus_points": 0.13,
                 "free_shipping": 0.12},
        "iron": {"base": 0.05, "reminder": 0.13, "percent_off": 0.08, "amount_off": 0.07, "bonus_points": 0.06,
                 "free_shipping": 0.06},
        "lead": {"base": 0.02, "reminder": 0.03, "percent_off": 0.05, "amount_off": 0.12, "bonus_points": 0.04,
                 "free_shipping": 0.03},
    }
    rows = []
    for tier, s in spec.items():
        for i in range(per_tier):
            rows.append({"customer_id": f"{tier}-{i}", "value_tier": tier, "p_base": s["base"],
                         **{f"p_{k}": v for k, v in s.items() if k != "base"}})
    return pd.DataFrame(rows)


def test_best_offer_per_tier():
    assert best_offer_per_tier(literal_truth(5), ["reminder", "percent_off", "amount_off"]) == {
        "gold": "percent_off", "iron": "reminder", "lead": "amount_off"}


def test_share_of_the_best_offer_rises_over_campaigns():
    out = simulate_learning(literal_truth(), n_campaigns=5, audience_size=1200, returns="bernoulli", seed=3)
    share = out.pivot(index="campaign", columns="value_tier", values="share_best")
    # Campaign 1 knows nothing: about one customer in five gets the best of five offers.
    assert (share.loc[1] < 0.4).all()
    assert (share.loc[5] > share.loc[1] + 0.3).all()
    assert share.loc[5].mean() > 0.75


def test_simulation_is_seeded():
    a = simulate_learning(literal_truth(100), n_campaigns=2, audience_size=300, returns="bernoulli", seed=4)
    b = simulate_learning(literal_truth(100), n_campaigns=2, audience_size=300, returns="bernoulli", seed=4)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(DataError):
        simulate_learning(literal_truth(10), returns="magic")


def test_demo_world_learning_captures_more_uplift():
    from winback.measure.learning import simulate_learning_demo

    out = simulate_learning_demo(6000, n_campaigns=4, audience_size=2500, seed=2)
    weighted = out.assign(
        best=out["share_best"] * out["treated"], captured=out["true_uplift_chosen"] * out["treated"]
    ).groupby("campaign")[["best", "captured", "treated"]].sum()
    share = weighted["best"] / weighted["treated"]
    captured = weighted["captured"] / weighted["treated"]
    # Campaign 1 explores (about 1 in 5 gets the best of five offers); later campaigns exploit.
    assert share.loc[4] > share.loc[1] + 0.1
    assert captured.loc[4] > captured.loc[1]
