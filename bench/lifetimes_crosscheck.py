"""Side check against lifetimes 0.11.3: the same CDNOW calibration summary and a simulated sample, fitted
and scored by lifetimes (in another interpreter) and by winback; parameters, P(alive), 39-week
predictions and fit times side by side.

lifetimes is not a dependency (last release 2020; it imports pkg_resources, gone from setuptools >= 81),
so it runs in a separate virtualenv given by --lifetimes-python, e.g.:

    python3 -m venv /tmp/ltenv && /tmp/ltenv/bin/pip install lifetimes "setuptools<81"
    .venv/bin/python bench/lifetimes_crosscheck.py --lifetimes-python /tmp/ltenv/bin/python [--customers 20000]

The CDNOW sample is read from ../shared/data. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FITTERS = {"bgnbd": "BetaGeoFitter", "mbgnbd": "ModifiedBetaGeoFitter", "pareto-nbd": "ParetoNBDFitter"}

# Runs under the lifetimes interpreter: fit each model, score, time it, write what it found.
_LIFETIMES_SCRIPT = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd
import lifetimes
frame = pd.read_csv(sys.argv[1])
out = {}
for name, cls in json.loads(sys.argv[3]).items():
    fitter = getattr(lifetimes, cls)()
    start = time.perf_counter()
    fitter.fit(frame["frequency"], frame["recency"], frame["T"])
    seconds = time.perf_counter() - start
    x, tx, T = frame["frequency"], frame["recency"], frame["T"]
    out[name] = {"params": {k: float(v) for k, v in fitter.params_.items()}, "seconds": seconds,
                 "predicted": np.asarray(fitter.conditional_expected_number_of_purchases_up_to_time(
                     float(sys.argv[4]), x, tx, T), dtype=float).tolist(),
                 "p_alive": np.asarray(fitter.conditional_probability_alive(x, tx, T), dtype=float).tolist()}
json.dump(out, open(sys.argv[2], "w"))
"""


def _compare(label: str, frame: pd.DataFrame, horizon: float, python: str, unit: str) -> dict:
    from winback.segments.model_check import fit_purchase_model, purchase_expected, purchase_p_alive

    with tempfile.TemporaryDirectory() as tmp:
        data, result = Path(tmp) / "summary.csv", Path(tmp) / "lifetimes.json"
        frame[["frequency", "recency", "T"]].to_csv(data, index=False)
        subprocess.run([python, "-c", _LIFETIMES_SCRIPT, str(data), str(result), json.dumps(FITTERS), str(horizon)],
                       check=True)
        theirs = json.loads(result.read_text())
    x, tx, T = (frame[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    figures = {}
    print(f"\n{label}: {len(frame):,} customers, {horizon:g}-{unit} predictions")
    for name in FITTERS:
        start = time.perf_counter()
        ours = fit_purchase_model(name, x, tx, T, unit=unit)
        seconds = time.perf_counter() - start
        expected = purchase_expected(ours, horizon, x, tx, T)
        alive = purchase_p_alive(ours, x, tx, T)
        lt = theirs[name]
        params = {k: getattr(ours, k) for k in lt["params"]}
        figures[name] = {
            "winback": {**{k: round(v, 4) for k, v in params.items()}, "seconds": round(seconds, 3),
                        "predicted": round(float(expected.sum()), 1)},
            "lifetimes": {**{k: round(v, 4) for k, v in lt["params"].items()}, "seconds": round(lt["seconds"], 3),
                          "predicted": round(float(np.sum(lt["predicted"])), 1)},
            "max_rel_param_diff": max(abs(params[k] / v - 1) for k, v in lt["params"].items()),
            "max_abs_p_alive_diff": float(np.max(np.abs(alive - np.asarray(lt["p_alive"])))),
        }
        f = figures[name]
        print(f"  {name:<10} winback {f['winback']}  lifetimes {f['lifetimes']}  "
              f"params within {f['max_rel_param_diff']:.1e}, P(alive) within {f['max_abs_p_alive_diff']:.1e}")
    return figures


def main() -> None:
    """Compare on CDNOW (weeks) and on a simulated sample (days)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifetimes-python", required=True)
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()

    from winback.segments.cdnow import read_cdnow
    from winback.segments.models import holdout_summary

    orders = read_cdnow(DATA / "CDNOW_sample.txt")
    cdnow, horizon = holdout_summary(orders, until=pd.Timestamp("1997-09-30 23:59:59", tz="UTC"),
                                     holdout_until=pd.Timestamp("1998-06-30 23:59:59", tz="UTC"), unit="week")
    result = {"cdnow": _compare("CDNOW 1/10 sample, calibration to 1997-09-30", cdnow, horizon,
                                args.lifetimes_python, "week")}
    print(f"  actual holdout repeat transactions: {int(cdnow['holdout_transactions'].sum()):,}")
    import importlib.util

    spec = importlib.util.spec_from_file_location("purchase_models", Path(__file__).with_name("purchase_models.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    x, tx, T, _ = bench.simulate(args.customers)
    simulated = pd.DataFrame({"frequency": x, "recency": tx, "T": T})
    result["simulated"] = _compare("Pareto/NBD-simulated customers", simulated, 90.0, args.lifetimes_python, "day")
    print(json.dumps({"bench": "lifetimes_crosscheck", "customers": args.customers, **result}))


if __name__ == "__main__":
    main()
