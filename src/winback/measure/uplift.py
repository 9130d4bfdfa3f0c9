"""Uplift over any experiment table a user already has: each arm against a control, overall and per group."""

from __future__ import annotations

import numpy as np
import pandas as pd

from winback.errors import DataError
from winback.measure import stats


def uplift_table(
    frame: pd.DataFrame,
    *,
    arm: str,
    control: str,
    outcome: str,
    by: str | None = None,
    method: str = "auto",
    confidence: float = 0.95,
    seed: int = 0,
    source: str | None = None,
) -> dict:
    """Compare every arm with the control on `outcome` (0/1 → Newcombe, else Welch or bootstrap)."""
    for col in (arm, outcome, by):
        if col is not None and col not in frame.columns:
            raise DataError(f"no column {col!r}; columns are {list(frame.columns)}", file=source, column=col)
    if frame.empty:
        raise DataError("the table has no rows", file=source)
    arms = frame[arm].astype("string")
    if arms.isna().any():
        row = int(np.flatnonzero(arms.isna().to_numpy())[0]) + 1
        raise DataError("arm value is missing", file=source, row=row, column=arm)
    control = str(control)
    present = sorted(arms.unique())
    if control not in present:
        raise DataError(f"control value {control!r} does not occur; values are {present[:20]}", file=source,
                        column=arm)
    values = _numeric(frame[outcome], outcome, source)
    if method not in ("auto", "newcombe", "welch", "bootstrap"):
        raise DataError(f"unknown method {method!r}; use auto, newcombe, welch or bootstrap")
    binary = stats.is_binary(values)
    if method == "auto":
        method = "newcombe" if binary else "welch"
    if method == "newcombe" and not binary:
        raise DataError("the proportion method needs a 0/1 outcome", file=source, column=outcome)
    groups: list[tuple[object, np.ndarray]] = [(None, np.ones(len(frame), dtype=bool))]
    if by is not None:
        keys = frame[by].astype("string").fillna("(none)")
        groups += [(g, (keys == g).to_numpy()) for g in sorted(keys.unique())]
    arm_values = arms.to_numpy()
    comparisons = []
    for g, mask in groups:
        ctrl = values[mask & (arm_values == control)]
        for a in (v for v in present if v != control):
            x = values[mask & (arm_values == a)]
            c = stats.compare(x, ctrl, confidence=confidence, method=method, seed=seed)
            comparisons.append({"arm": a, "by": g, **{k: v for k, v in c.to_dict().items() if k != "method"}})
    if by is not None:
        # Holm over the per-group tests (the overall rows are not part of the family).
        idx = [i for i, c in enumerate(comparisons) if c["by"] is not None]
        adjusted = stats.holm_adjust([np.nan if comparisons[i]["p_value"] is None else comparisons[i]["p_value"]
                                      for i in idx])
        for i, p in zip(idx, adjusted, strict=True):
            comparisons[i]["p_holm"] = None if not np.isfinite(p) else float(p)
    return {
        "outcome": outcome,
        "arm_column": arm,
        "control": control,
        "by_column": by,
        "method": method,
        "confidence": confidence,
        "comparisons": comparisons,
    }


def _numeric(column: pd.Series, name: str, source: str | None) -> np.ndarray:
    """The outcome as floats; a clear error names the first non-numeric or missing row."""
    if pd.api.types.is_bool_dtype(column):
        column = column.astype("int64")
    converted = pd.to_numeric(column, errors="coerce")
    bad = converted.isna() | ~np.isfinite(converted.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raw = column.iloc[first]
        what = "missing" if pd.isna(raw) else f"not a number: {raw!r}"
        raise DataError(f"outcome is {what} ({int(bad.sum())} such row(s))", file=source, row=first + 1,
                        column=name)
    return converted.to_numpy(dtype=float)
