"""A small calibration in the suite: the 95% CI of the return-rate uplift covers the demo world's truth.

bench/calibration.py runs 200 campaigns on a bigger world and must land in 93–97%; here 40 small
campaigns with a wide tolerance (the binomial spread of 40 draws at 95% is about ±3.5 points).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from winback.measure.campaign import measure_campaign

KINDS = ("reminder", "percent_off", "amount_off", "bonus_points", "free_shipping")


def test_ci_covers_the_true_uplift_in_most_campaigns():
    from winback.demo import generate_world, simulate_returns, true_uplift

    as_of = pd.Timestamp("2026-11-01", tz="UTC")
    world = generate_world(3000, seed=11, as_of=as_of)
    rng = np.random.default_rng(11)
    plan = pd.DataFrame({"customer_id": world.truth["customer_id"].astype(str)})
    plan["offer_kind"] = rng.choice(KINDS, size=len(plan))
    plan["channel"] = "email"
    truth_uplift = true_uplift(world.truth, plan.assign(contacted=True))
    contact_at = as_of + pd.Timedelta(days=1)
    covered, estimates = [], []
    for seed in range(40):
        r = np.random.default_rng([seed, 7])
        holdout = r.random(len(plan)) < 0.3
        contacts = plan.assign(campaign_id=f"cal-{seed}", arm=np.where(holdout, "holdout", "treatment"),
                               contacted=~holdout, coupon_code=pd.NA, contact_at=contact_at)
        orders = simulate_returns(contacts, world.truth, days=30, seed=seed)
        ledger = contacts.assign(step=1, send_at_utc=contact_at, state=np.where(holdout, "held_out", "sent"),
                                 sent_at=pd.Series(contact_at, index=contacts.index).where(~holdout))
        rr = measure_campaign(ledger, orders, window_days=30, by=()).uplift["return_rate"]
        covered.append(rr["ci_low"] <= truth_uplift <= rr["ci_high"])
        estimates.append(rr["diff"])
    assert 0.85 <= np.mean(covered) <= 1.0
    # Unbiased: the mean of 40 estimates sits within ~3 standard errors of the truth.
    se = np.std(estimates, ddof=1) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - truth_uplift) < 3.5 * se
