"""Benchmark of the purchase models at 1M customers: Pareto/NBD and MBG/NBD fit and scoring, BG/NBD beside them.

One synthetic population drawn from a Pareto/NBD process in days (r 0.55, α 75, s 0.6, β 80: CDNOW's
weekly estimates in days; first purchases uniform over two years, whole days), so the Pareto/NBD
fit must find the parameters it was drawn with. Measured in one run, on the same (x, t_x, T) arrays:

  fit      `fit_purchase_model(name, x, t_x, T)` for BG/NBD (the baseline: the model segmentation used
           alone before), MBG/NBD and Pareto/NBD — rows aggregated to distinct triples included
  score    P(alive) + expected purchases in the next 90 days for every customer
  check    `choose_model` on a 26-week calibration/holdout split (three fits and three checks), as
           segmentation does on its sample of at most 100k customers (`--check-customers`)
  world    with `--world DIR`: `fit_customer_models` and `segment_customers` on the demo world of
           bench/segment.py (generated there and cached), BG/NBD named (the old path, the baseline)
           against `auto` (the holdout choice), alternating, best of `--rounds`

Targets (issue 15): Pareto/NBD fit ≤ 20 s, scoring ≤ 1 s, on this 2-core machine. Each fit runs
`--rounds` times (default 2), alternating models, and the best is reported (the machine is shared).
Last line: one JSON object.

    .venv/bin/python bench/purchase_models.py [--customers 1000000] [--rounds 2] [--check-customers 100000]
                                              [--world /tmp/wb-seg-1m]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

MODELS = ("bgnbd", "mbgnbd", "pareto-nbd")
TRUE_PARETO = {"r": 0.55, "alpha": 75.0, "s": 0.6, "beta": 80.0}


def simulate(n: int, *, span_days: int = 730, holdout_days: int = 0, seed: int = 7):
    """(x, t_x, T) in whole days of n Pareto/NBD customers up to `span_days − holdout_days`, and their
    repeat transactions in the `holdout_days` after."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE_PARETO["r"], 1.0 / TRUE_PARETO["alpha"], n)
    mu = rng.gamma(TRUE_PARETO["s"], 1.0 / TRUE_PARETO["beta"], n)
    end = span_days - holdout_days
    T = rng.integers(0, end, n).astype(float)  # days from the first purchase to the split
    life = rng.exponential(1.0 / mu)
    alive_cal = np.minimum(life, T)
    x = rng.poisson(lam * alive_cal)
    # The last of x uniform purchase times on (0, alive_cal], on whole days.
    t_x = np.where(x > 0, np.floor(alive_cal * rng.uniform(size=n) ** (1.0 / np.maximum(x, 1))), 0.0)
    holdout = rng.poisson(lam * np.clip(np.minimum(life, T + holdout_days) - T, 0.0, None))
    return x.astype(float), t_x, T, holdout.astype(float)


def world_figures(world: Path, customers: int, rounds: int) -> dict:
    """Segmentation's fit and a whole segmentation with BG/NBD named vs the holdout choice, on bench/segment.py's world."""
    import importlib.util

    import pandas as pd

    from winback.segments import SegmentParams, fit_customer_models, segment_customers

    spec = importlib.util.spec_from_file_location("segment_bench", Path(__file__).with_name("segment.py"))
    segment_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(segment_bench)
    source = segment_bench.make_world(customers, world)
    as_of = pd.Timestamp(segment_bench.AS_OF)
    orders = world / "orders.parquet"
    people = pd.read_parquet(world / "customers.parquet", columns=["customer_id", "account_manager"])
    out: dict = {"source": source}
    for step in ("fit", "segment"):
        for model in ("bgnbd", "auto") * rounds:
            params = SegmentParams(purchase_model=model)
            if step == "fit":
                result, seconds = _timed(fit_customer_models, orders, as_of=as_of, params=params)
                record = result.choice.to_dict()
            else:
                result, seconds = _timed(segment_customers, people, orders, as_of=as_of, params=params)
                record = result.attrs["purchase_model"]
                out[f"{model}_one_timer_p_alive_gt_365d"] = float(result.loc[
                    (result["frequency"] == 0) & (result["recency_days"] > 365), "p_alive"].mean())
            key = f"{step}_{model}"
            out[key] = min(out.get(key, float("inf")), seconds)
            out[f"{model}_chosen"] = record["model"]
            out[f"{model}_reason"] = record["reason"]
    return out


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    """Simulate, fit and score each model, run the holdout choice, print figures and the JSON line."""
    from winback.segments.model_check import (
        choose_model,
        fit_purchase_model,
        purchase_expected,
        purchase_p_alive,
    )
    from winback.segments.models import _aggregate
    from winback.segments.pareto_nbd import distinct_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--check-customers", type=int, default=100_000)
    parser.add_argument("--world", type=Path, default=None, help="bench/segment.py world folder (made if absent)")
    args = parser.parse_args()

    (x, t_x, T, _), sim_s = _timed(simulate, args.customers)
    rows = _aggregate(np.ones_like(x), x, t_x, T)[0]
    pairs = len(distinct_pairs(np.r_[x, x], np.r_[t_x, T])[1])
    print(f"population: {args.customers:,} customers simulated in {sim_s:.1f} s; {len(rows):,} distinct "
          f"(x, t_x, T), {pairs:,} distinct (x, t); {int((x == 0).sum()):,} one-time buyers")

    fits, fit_s = {}, {m: [] for m in MODELS}
    for _ in range(args.rounds):
        for name in MODELS:
            fits[name], seconds = _timed(fit_purchase_model, name, x, t_x, T, unit="day")
            fit_s[name].append(seconds)
    score_s, one_timer_alive = {}, {}
    for name in MODELS:
        best = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            alive = purchase_p_alive(fits[name], x, t_x, T)
            expected = purchase_expected(fits[name], 90.0, x, t_x, T, p_alive=alive)
            best.append(time.perf_counter() - start)
        assert np.isfinite(expected).all() and np.isfinite(alive).all()
        score_s[name] = min(best)
        one_timer_alive[name] = float(alive[(x == 0) & (T > 365)].mean())

    print(f"\n{'model':<11} {'fit (best of ' + str(args.rounds) + ')':>17} {'score':>10} "
          f"{'log-likelihood':>16}  mean P(alive) of one-timers silent > 365 d   parameters")
    for name in MODELS:
        params = {k: round(v, 4) for k, v in fits[name].to_dict().items() if k not in ("log_likelihood", "n_customers", "unit")}
        print(f"{name:<11} {min(fit_s[name]):>15.2f} s {score_s[name]:>8.3f} s {fits[name].log_likelihood:>16,.1f}  "
              f"{one_timer_alive[name]:>8.3f}{'':<35}{params}")
    ratio = min(fit_s["pareto-nbd"]) / min(fit_s["bgnbd"])
    print(f"\nbaseline BG/NBD fit {min(fit_s['bgnbd']):.2f} s; Pareto/NBD {min(fit_s['pareto-nbd']):.2f} s "
          f"({ratio:.1f}x); drawn with {TRUE_PARETO}")

    x_c, t_c, T_c, y_c = simulate(args.check_customers, holdout_days=182, seed=8)
    (choice, checks), check_s = _timed(choose_model, x_c, t_c, T_c, y_c, 182.0, unit="day", holdout_days=182)
    print(f"holdout choice on {args.check_customers:,} customers (182-day holdout): {choice.model} in {check_s:.2f} s; "
          + ", ".join(f"{n} deviance {c.deviance:.4f} predicted {c.predicted:,.0f}" for n, c in checks.items())
          + f"; actual {choice.actual:,.0f}")
    world = world_figures(args.world, args.customers, args.rounds) if args.world else {}
    if world:
        print(f"\nworld {args.world} ({world['source']}), best of {args.rounds}:")
        for step in ("fit", "segment"):
            print(f"  {step:<8} BG/NBD named (baseline) {world[step + '_bgnbd']:.2f} s, auto {world[step + '_auto']:.2f} s")
        print(f"  auto chose {world['auto_chosen']}: {world['auto_reason']}")
        print(f"  one-timers silent > 365 days, mean P(alive): BG/NBD {world['bgnbd_one_timer_p_alive_gt_365d']:.3f}, "
              f"{world['auto_chosen']} {world['auto_one_timer_p_alive_gt_365d']:.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MB")
    print(json.dumps({
        "bench": "purchase_models", "customers": args.customers, "distinct_rows": len(rows),
        "fit_seconds": {m: round(min(fit_s[m]), 3) for m in MODELS},
        "score_seconds": {m: round(score_s[m], 3) for m in MODELS},
        "baseline_fit_seconds": round(min(fit_s["bgnbd"]), 3), "pareto_vs_bgnbd_fit": round(ratio, 2),
        "pareto_params": {k: round(getattr(fits["pareto-nbd"], k), 4) for k in TRUE_PARETO},
        "check_customers": args.check_customers, "check_seconds": round(check_s, 3), "chosen": choice.model,
        "peak_rss_mb": round(peak),
        **({"world": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in world.items() if "reason" not in k}}
           if world else {}),
    }))


if __name__ == "__main__":
    main()
