"""Calibration of the return-rate uplift CI against the demo world's ground truth.

Seeded simulated campaigns on one demo world: the audience and each customer's offer are fixed (a
plan); every seed re-randomises the holdout and which treatment messages fail to go out, and draws
the returns with `winback.demo.simulate_returns`. Each campaign is measured by `measure_campaign`
(intention to treat, 30-day window, the world's history orders included so the window logic runs
at scale). The estimand is the expected ITT uplift over the audience,
(1 − fail share) · `true_uplift(truth, plan)`: the difference the randomisation targets. The share
of campaigns whose 95% CI covers it must be 93–97%.

    .venv/bin/python bench/calibration.py [--seeds 200] [--customers 40000] [--audience 20000]

Last line: {"bench": "calibration", "seeds": …, "coverage": …, "mean_ci_width": …}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd

from winback.measure.campaign import measure_campaign

KINDS = ("reminder", "percent_off", "amount_off", "bonus_points", "free_shipping")


def build_plan(truth: pd.DataFrame, audience: int, seed: int) -> pd.DataFrame:
    """A fixed audience with one offer kind each (drawn once, like a plan)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(truth), size=min(audience, len(truth)), replace=False)
    plan = pd.DataFrame({"customer_id": truth["customer_id"].to_numpy()[idx].astype(str)})
    plan["offer_kind"] = rng.choice(KINDS, size=len(plan))
    plan["channel"] = "email"
    plan["value_tier"] = truth["true_tier"].to_numpy()[idx]
    return plan


def run_campaign(world, plan: pd.DataFrame, seed: int, *, holdout_share: float, fail_share: float,
                 contact_at: pd.Timestamp, window_days: int = 30):
    """One seeded campaign: assignment, returns from the truth, measurement; the return-rate uplift CI."""
    from winback.demo import simulate_returns

    rng = np.random.default_rng([seed, 0xCA1])
    n = len(plan)
    holdout = rng.random(n) < holdout_share
    failed = ~holdout & (rng.random(n) < fail_share)
    campaign_id = f"cal-{seed}"
    coupon = pd.array([f"CAL{seed}-{i}" for i in range(n)], dtype="string")
    contacts = plan.assign(campaign_id=campaign_id, arm=np.where(holdout, "holdout", "treatment"),
                           contacted=~holdout & ~failed, coupon_code=coupon, contact_at=contact_at)
    new_orders = simulate_returns(contacts, world.truth, days=window_days, seed=seed)
    orders = pd.concat([world.orders, new_orders], ignore_index=True)
    sent_at = pd.Series(contact_at, index=contacts.index).where(contacts["contacted"])
    ledger = contacts.assign(
        step=1, send_at_utc=contact_at, sent_at=sent_at, offer=contacts["offer_kind"],
        state=np.select([holdout, failed], ["held_out", "failed"], "sent"),
    )
    result = measure_campaign(ledger, orders, window_days=window_days, by=())
    return result.uplift["return_rate"]


def main(argv: list[str] | None = None) -> dict:
    """Run the calibration and print the summary; the last line is one JSON object."""
    from winback.demo import generate_world, true_uplift

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--customers", type=int, default=40_000)
    p.add_argument("--audience", type=int, default=20_000)
    p.add_argument("--holdout-share", type=float, default=0.2)
    p.add_argument("--fail-share", type=float, default=0.05)
    p.add_argument("--world-seed", type=int, default=7)
    args = p.parse_args(argv)

    started = time.perf_counter()
    as_of = pd.Timestamp("2026-11-01", tz="UTC")
    world = generate_world(args.customers, seed=args.world_seed, as_of=as_of)
    plan = build_plan(world.truth, args.audience, args.world_seed)
    truth_uplift = (1 - args.fail_share) * true_uplift(world.truth, plan.assign(contacted=True))
    contact_at = as_of + pd.Timedelta(hours=26)
    covered, widths, diffs = [], [], []
    for seed in range(args.seeds):
        rr = run_campaign(world, plan, seed, holdout_share=args.holdout_share, fail_share=args.fail_share,
                          contact_at=contact_at)
        covered.append(rr["ci_low"] <= truth_uplift <= rr["ci_high"])
        widths.append(rr["ci_high"] - rr["ci_low"])
        diffs.append(rr["diff"])
    coverage = float(np.mean(covered))
    print(f"world: {args.customers:,} customers (seed {args.world_seed}); audience {len(plan):,}, "
          f"holdout share {args.holdout_share}, failed sends {args.fail_share:.0%}")
    print(f"true ITT uplift of the return rate: {truth_uplift:.5f}")
    print(f"mean estimated uplift over {args.seeds} campaigns: {np.mean(diffs):.5f} "
          f"(sd {np.std(diffs, ddof=1):.5f}; bias {np.mean(diffs) - truth_uplift:+.5f})")
    print(f"95% CI coverage: {coverage:.3f} (target 0.93–0.97); mean width {np.mean(widths):.5f}")
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    summary = {"bench": "calibration", "seeds": args.seeds, "coverage": coverage,
               "mean_ci_width": float(np.mean(widths)), "true_uplift": truth_uplift,
               "mean_estimate": float(np.mean(diffs))}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    out = main()
    sys.exit(0 if 0.93 <= out["coverage"] <= 0.97 else 1)
