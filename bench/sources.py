"""Benchmark of the sources step (`winback.sources.load_inputs` / `validate_inputs`) on the demo world.

The world is `winback.demo.generate_world(N, seed=7, as_of=2026-06-30T15:59:59Z)` written by
`winback.demo.write_world` (typed Parquet, and with --csv UTF-8-BOM CSV copies: every column is text
there, as from a shop's export), cached under --dir. Each step runs in a fresh subprocess so its
peak RSS is its own; all steps run in the same invocation, so the baselines share the machine's load:

  baseline   a plain read of the same three files into pandas: `pd.read_parquet`, or for CSV
             `pd.read_csv(dtype=str, engine="pyarrow")` — the least any loader has to do
  load       `load_inputs(customers, orders, complaints, departed_managers=…)`: read + validate
  validate   `validate_inputs` alone on frames already read with `read_source` (read time reported apart)

Rows/s counts every input row (customers + orders + complaints). CPU (user+sys) is reported next to
wall time because the machine's 2 cores are shared. Last line: one JSON object {"bench": "sources", …}.

    .venv/bin/python bench/sources.py [--customers 1000000] [--no-csv] [--dir /tmp/winback-bench-sources-N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

AS_OF = "2026-06-30T15:59:59+00:00"
TABLES = ("customers", "orders", "complaints")


def make_world(n: int, out: Path, csv: bool) -> dict:
    """Write the demo world under `out` unless the same one (size, seed, CSV copies) is already there."""
    marker = out / "BENCH_WORLD.json"
    want = {"customers": n, "seed": 7, "as_of": AS_OF, "csv": csv}
    if marker.exists():
        have = json.loads(marker.read_text())
        same = all(have.get(k) == want[k] for k in ("customers", "seed", "as_of"))
        if same and (have.get("csv") or not csv):
            return have
    import pandas as pd

    from winback.demo import generate_world, write_world

    t0 = time.perf_counter()
    world = generate_world(n, seed=7, as_of=pd.Timestamp(AS_OF))
    write_world(world, out, csv=csv)
    info = {**want, "orders": len(world.orders), "complaints": len(world.complaints),
            "write_seconds": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info))
    return info


def _usage() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def _step(step: str, fmt: str, out: Path) -> dict:
    """Run one step in this process and return its figures (called in a fresh subprocess)."""
    import pandas as pd

    from winback.sources import load_inputs, validate_inputs
    from winback.sources.readers import read_source

    paths = {t: out / f"{t}.{fmt}" for t in TABLES}
    departed = [line.strip() for line in (out / "departed_managers.txt").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    cpu0, _ = _usage()
    t0 = time.perf_counter()
    result: dict = {}
    if step == "baseline":
        if fmt == "parquet":
            frames = {t: pd.read_parquet(p) for t, p in paths.items()}
        else:
            frames = {t: pd.read_csv(p, dtype=str, engine="pyarrow", encoding="utf-8-sig") for t, p in paths.items()}
        result["rows"] = {t: len(f) for t, f in frames.items()}
    elif step == "load":
        inputs = load_inputs(paths["customers"], paths["orders"], paths["complaints"], departed_managers=departed)
        result["rows"] = dict(inputs.rows_read)
        result["valid"] = {"customers": len(inputs.customers), "orders": len(inputs.orders),
                           "complaints": len(inputs.complaints)}
        result["quarantined"] = len(inputs.quarantine)
        result["counts"] = dict(inputs.counts)
    else:
        raw = {t: read_source(p, name=t) for t, p in paths.items()}
        result["read_seconds"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        cpu1, _ = _usage()
        inputs = validate_inputs(raw["customers"].frame, raw["orders"].frame, raw["complaints"].frame,
                                 files={t: r.label for t, r in raw.items()}, departed_managers=departed)
        result["validate_seconds"] = time.perf_counter() - t1
        result["validate_cpu_seconds"] = _usage()[0] - cpu1
        result["rows"] = dict(inputs.rows_read)
        result["quarantined"] = len(inputs.quarantine)
    result["seconds"] = time.perf_counter() - t0
    cpu, peak = _usage()
    result["cpu_seconds"] = cpu - cpu0
    result["peak_rss_mb"] = peak
    return result


def _run_step(step: str, fmt: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--step", step, "--format", fmt, "--dir", str(out)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"step {step} ({fmt}) failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate (or reuse) the world, run baseline/load/validate per format in fresh processes, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--no-csv", dest="csv", action="store_false", help="skip the text CSV variant")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--format", default="parquet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.customers < 1:
        parser.error("--customers must be at least 1")
    out = args.dir or Path(f"/tmp/winback-bench-sources-{args.customers}")
    if args.step:
        print(json.dumps(_step(args.step, args.format, out), default=str))
        return
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    world = make_world(args.customers, out, args.csv)
    print(f"world: {world['customers']:,} customers, {world['orders']:,} orders, {world['complaints']:,} complaints"
          f" in {out} ({time.perf_counter() - t0:.1f} s)")
    summary: dict = {"bench": "sources", "customers": world["customers"], "orders": world["orders"],
                     "complaints": world["complaints"], "source": "winback.demo.generate_world"}
    for fmt in ("parquet", "csv") if args.csv else ("parquet",):
        base = _run_step("baseline", fmt, out)
        load = _run_step("load", fmt, out)
        val = _run_step("validate", fmt, out)
        rows = sum(load["rows"].values())
        if load["quarantined"] or val["quarantined"]:
            print(f"  note: {load['quarantined']:,} rows quarantined: {load['counts']}")
        print(f"{fmt}: {rows:,} input rows; valid {load['valid']}")
        for label, r, secs, cpu in (
            ("baseline plain read", base, base["seconds"], base["cpu_seconds"]),
            ("load_inputs", load, load["seconds"], load["cpu_seconds"]),
            ("validate_inputs alone", val, val["validate_seconds"], val["validate_cpu_seconds"]),
        ):
            print(f"  {label:<22} {secs:7.2f} s wall {cpu:7.2f} s CPU {rows / secs:>12,.0f} rows/s"
                  f"   peak RSS {r['peak_rss_mb']:,.0f} MB")
        print(f"  load_inputs / baseline: {load['seconds'] / base['seconds']:.2f}x wall"
              f" (read_source {val['read_seconds']:.2f} s of the validate step)")
        summary[fmt] = {
            "rows": rows, "quarantined": load["quarantined"],
            "baseline_seconds": round(base["seconds"], 3), "load_seconds": round(load["seconds"], 3),
            "validate_seconds": round(val["validate_seconds"], 3), "read_seconds": round(val["read_seconds"], 3),
            "load_cpu_seconds": round(load["cpu_seconds"], 2), "validate_cpu_seconds": round(val["validate_cpu_seconds"], 2),
            "load_rows_per_s": round(rows / load["seconds"]), "validate_rows_per_s": round(rows / val["validate_seconds"]),
            "ratio": round(load["seconds"] / base["seconds"], 2),
            "baseline_peak_rss_mb": round(base["peak_rss_mb"]), "load_peak_rss_mb": round(load["peak_rss_mb"]),
            "validate_peak_rss_mb": round(val["peak_rss_mb"]),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
