"""Benchmark of `winback.demo.generate_world` (and writing it as Parquet) at 1M customers / ~10M orders.

Measured in one run:
  generate  `generate_world(N)`: the whole generative model, names, contact points, truth
  write     `write_world` (Parquet only)
  baseline  materialising a table of the same number of orders from i.i.d. numpy draws (uniform
            timestamps, gamma amounts, ids built the same way) — the floor any generator pays
Peak RSS is the process maximum (ru_maxrss). Target: generate well under 2 minutes, < ~6 GB.
Last line: one JSON object.

    .venv/bin/python bench/demo_data.py [--customers 1000000] [--dir /tmp/winback-bench-demo] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path


def baseline(n_orders: int, n_customers: int, seed: int) -> float:
    """Seconds to build an orders-shaped frame of `n_orders` rows from i.i.d. draws (no model)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    g = np.sort(rng.integers(0, n_customers, n_orders))
    ids = pc.binary_join_element_wise(
        "C", pc.utf8_lpad(pa.array(np.arange(1, n_customers + 1)).cast(pa.string()), width=7, padding="0"), "")
    order_ids = pc.binary_join_element_wise(
        "O", pc.utf8_lpad(pa.array(np.arange(1, n_orders + 1)).cast(pa.string()), width=10, padding="0"), "")
    frame = pd.DataFrame({
        "order_id": order_ids.to_pandas(),
        "customer_id": ids.take(pa.array(g)).to_pandas(),
        "ordered_at": pd.DatetimeIndex(rng.integers(1.7e18, 1.76e18, n_orders).view("datetime64[ns]")).tz_localize("UTC"),
        "amount": np.round(rng.gamma(6.0, 40.0, n_orders), 2),
        "discount": np.round(rng.random(n_orders) * 10, 2),
    })
    assert len(frame) == n_orders
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/tmp/winback-bench-demo")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import pandas as pd

    from winback.demo import generate_world, write_world

    as_of = pd.Timestamp("2026-11-23T16:00:00", tz="UTC")
    started = time.perf_counter()
    world = generate_world(args.customers, seed=args.seed, as_of=as_of)
    gen_seconds = time.perf_counter() - started
    gen_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_orders = len(world.orders)
    out = Path(args.dir)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    write_world(world, out)
    write_seconds = time.perf_counter() - started
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    n_complaints = len(world.complaints)
    del world
    base_seconds = baseline(n_orders, args.customers, args.seed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"customers          {args.customers:,}")
    print(f"orders             {n_orders:,}  ({n_orders / args.customers:.1f} per customer)")
    print(f"complaints         {n_complaints:,}")
    print(f"generate           {gen_seconds:.1f} s  ({n_orders / gen_seconds:,.0f} orders/s, "
          f"{args.customers / gen_seconds:,.0f} customers/s)  peak RSS {gen_rss:,.0f} MB")
    print(f"write (Parquet)    {write_seconds:.1f} s  ({size_mb:,.0f} MB in {out})")
    print(f"baseline           {base_seconds:.1f} s  (i.i.d. orders table of the same size)")
    print(f"peak RSS           {peak:,.0f} MB")
    print(json.dumps({"bench": "demo_data", "customers": args.customers, "orders": n_orders,
                      "seconds": round(gen_seconds, 2), "write_seconds": round(write_seconds, 2),
                      "baseline_seconds": round(base_seconds, 2), "ratio": round(gen_seconds / base_seconds, 2),
                      "peak_rss_mb": round(peak)}))


if __name__ == "__main__":
    main()
