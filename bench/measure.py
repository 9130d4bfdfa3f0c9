"""Measuring 1M ledger rows against 10M orders, vs a raw DuckDB join of the same files in the same run.

Generates (seeded) a ledger of one campaign — treatment and holdout, coupon codes, a render
context per row — and an orders file where ledger customers and others order before, inside and
after their windows, writes both as Parquet, then times:

- measured: read the ledger Parquet into pandas (what `Ledger.rows` hands over) and run the full
  `measure_campaign` (attribution, coupons and their cost, arms, uplift with CIs, six breakdowns
  with Holm p-values, the return curve) with the orders file scanned by DuckDB;
- baseline: one raw DuckDB query over the same two files doing the same windowed join and a
  per-customer aggregation (orders, revenue, first order), fetched into pandas.

    .venv/bin/python bench/measure.py [--ledger-rows 1000000] [--orders 10000000]

Last line: {"bench": "measure", "ledger_rows", "orders", "seconds", "baseline_seconds", "ratio"}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from winback.measure.campaign import measure_campaign
from winback.vocab import LAPSE_STAGES, REASONS, VALUE_TIERS

# duckdb's .df() trips a pandas 3.1 deprecation warning; not ours to fix, and it clutters the figures.
warnings.filterwarnings("ignore", message="The inplace keyword")

KINDS = np.array(["reminder", "percent_off", "amount_off", "bonus_points", "free_shipping"])
CONTACT = pd.Timestamp("2026-03-01 02:00", tz="UTC")


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    """Arrow strings prefix + number, built without Python objects."""
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def make_files(out: Path, n_ledger: int, n_orders: int, seed: int) -> tuple[Path, Path]:
    """Write ledger.parquet (n_ledger rows) and orders.parquet (n_orders rows) into `out`."""
    rng = np.random.default_rng(seed)
    ids = _prefixed("C", np.arange(n_ledger))
    holdout = rng.random(n_ledger) < 0.2
    state = np.where(holdout, "held_out", np.where(rng.random(n_ledger) < 0.03, "failed", "sent"))
    kind = KINDS[rng.integers(0, len(KINDS), n_ledger)]
    pct = rng.choice([10, 15, 20], n_ledger)
    send_at = CONTACT + pd.to_timedelta(rng.integers(0, 6 * 3600, n_ledger), unit="s")
    context = pc.binary_join_element_wise('{"offer": {"kind": "', pa.array(kind), '", "percent": ',
                                          pc.cast(pa.array(pct), pa.string()), ', "amount": 30}, "step": 1}', "")
    ledger = pa.table({
        "campaign_id": pa.array(["bench"] * n_ledger),
        "customer_id": ids,
        "step": pa.array(np.ones(n_ledger, dtype=np.int64)),
        "arm": pa.array(np.where(holdout, "holdout", "treatment")),
        "state": pa.array(state),
        "send_at_utc": pa.array(send_at.to_numpy(), type=pa.timestamp("us", tz="UTC")),
        "sent_at": pa.array(np.where(state == "sent", send_at.to_numpy(), np.datetime64("NaT")),
                            type=pa.timestamp("us", tz="UTC")),
        "offer": pa.array(kind),
        "offer_kind": pa.array(kind),
        "coupon_code": pc.if_else(pa.array(kind == "reminder"), pa.scalar(None, pa.string()),
                                  pc.binary_join_element_wise("WB", ids, "")),
        "expected_cost": pa.array(rng.random(n_ledger) * 5),
        "value_tier": pa.array(np.array(VALUE_TIERS)[rng.integers(0, 4, n_ledger)]),
        "lapse_stage": pa.array(np.array(LAPSE_STAGES)[rng.integers(1, 5, n_ledger)]),
        "likely_reason": pa.array(np.array(REASONS)[rng.integers(0, 6, n_ledger)]),
        "channel": pa.array(np.where(rng.random(n_ledger) < 0.7, "email", "sms")),
        "context": pa.array(context),
    })
    ledger_path = out / "ledger.parquet"
    pq.write_table(ledger, ledger_path)

    # Orders: 3/5 by ledger customers, the rest by others; spread from 60 days before to 60 after contact.
    who = rng.integers(0, int(n_ledger * 5 / 3), n_orders)
    cust = _prefixed("C", who)
    offset = rng.uniform(-60, 60, n_orders)
    ordered_at = CONTACT + pd.to_timedelta(offset * 86_400, unit="s")
    amount = np.round(rng.gamma(2.0, 60.0, n_orders), 2)
    uses = (who < n_ledger) & (offset > 0) & (rng.random(n_orders) < 0.1)
    coupon = pc.if_else(pa.array(uses), pc.binary_join_element_wise("WB", cust, ""), pa.scalar(None, pa.string()))
    orders = pa.table({
        "order_id": _prefixed("O", np.arange(n_orders)),
        "customer_id": cust,
        "ordered_at": pa.array(ordered_at.to_numpy(), type=pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount),
        "discount": pa.array(np.zeros(n_orders)),
        "coupon_code": coupon,
    })
    orders_path = out / "orders.parquet"
    pq.write_table(orders, orders_path, row_group_size=1_000_000)
    return ledger_path, orders_path


def baseline(ledger_path: Path, orders_path: Path, window_days: int) -> pd.DataFrame:
    """The raw DuckDB windowed join and per-customer aggregation of the same files."""
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(
            f"""
            SELECT l.customer_id, any_value(l.arm) AS arm, count(o.order_id) AS orders,
                   coalesce(sum(o.amount), 0) AS revenue, min(o.ordered_at) AS first_order_at
            FROM read_parquet('{ledger_path}') l
            LEFT JOIN read_parquet('{orders_path}') o
              ON o.customer_id = l.customer_id
             AND o.ordered_at >= coalesce(l.sent_at, l.send_at_utc)
             AND o.ordered_at < coalesce(l.sent_at, l.send_at_utc) + INTERVAL {int(window_days)} DAY
            GROUP BY l.customer_id
            """
        ).df()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> dict:
    """Generate the files, time the measurement and the baseline, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ledger-rows", type=int, default=1_000_000)
    p.add_argument("--orders", type=int, default=10_000_000)
    p.add_argument("--window-days", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="winback-bench-measure-"))
    try:
        t0 = time.perf_counter()
        ledger_path, orders_path = make_files(tmp, args.ledger_rows, args.orders, args.seed)
        print(f"generated {args.ledger_rows:,} ledger rows and {args.orders:,} orders in "
              f"{time.perf_counter() - t0:.1f} s")

        # Alternate the two and keep each one's best of `--repeat` runs: the machine is shared, and the
        # first read of the files warms the OS cache for whoever comes second.
        baseline_runs, measured_runs = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            base = baseline(ledger_path, orders_path, args.window_days)
            baseline_runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ledger = pd.read_parquet(ledger_path)
            result = measure_campaign(ledger, str(orders_path), window_days=args.window_days)
            measured_runs.append(time.perf_counter() - t0)
        baseline_seconds, seconds = min(baseline_runs), min(measured_runs)
        print("runs (s): measured " + ", ".join(f"{x:.2f}" for x in measured_runs)
              + "; baseline " + ", ".join(f"{x:.2f}" for x in baseline_runs))

        # Same attribution both ways (the baseline has no coupons or statistics).
        returned_base = int((base["orders"] > 0).sum())
        returned = int(result.units["returned"].sum())
        assert returned == returned_base, (returned, returned_base)
        t, h = result.arms["treatment"], result.arms["holdout"]
        rr = result.uplift["return_rate"]
        print(f"measured: treatment {t['n']:,} ({t['return_rate']:.4f}), holdout {h['n']:,} "
              f"({h['return_rate']:.4f}); uplift {rr['diff']:+.5f} [{rr['ci_low']:+.5f}, {rr['ci_high']:+.5f}]; "
              f"coupons redeemed {t['coupons_redeemed']:,} costing {t['coupon_cost']:,.0f}")
        print(f"measure_campaign {seconds:.2f} s vs raw DuckDB join {baseline_seconds:.2f} s "
              f"(ratio {seconds / baseline_seconds:.2f}; target ≤ 3)")
        summary = {"bench": "measure", "ledger_rows": args.ledger_rows, "orders": args.orders,
                   "seconds": round(seconds, 3), "baseline_seconds": round(baseline_seconds, 3),
                   "ratio": round(seconds / baseline_seconds, 3)}
        print(json.dumps(summary))
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
