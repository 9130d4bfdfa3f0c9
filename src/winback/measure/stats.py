"""Two-sample statistics for uplift: proportions (Newcombe/Wilson) and means (Welch, seeded bootstrap).

Choices, stated once:
- Difference in proportions: the 95% CI is Newcombe's hybrid score interval (Newcombe 1998, "Interval
  estimation for the difference between independent proportions", Stat Med 17:873-890, method 10),
  built from the two Wilson score intervals without continuity correction. It keeps its coverage
  for small counts and rates near 0 where the Wald interval collapses. The p-value is the classic
  two-proportion z-test with the *pooled* standard error (the SE under H0: p1 = p2), identical to
  Pearson's chi-square test without Yates' correction.
- Difference in means: Welch's t interval and test (unequal variances, Welch-Satterthwaite df) are
  the default, also for heavy-tailed revenue: with the thousands of customers per arm a campaign
  has, the CLT makes Welch accurate, it is deterministic and it is O(n). The seeded percentile
  bootstrap (`method="bootstrap"`) is there for small arms or extreme skew; it resamples exactly
  but draws only the non-zero values (see `_bootstrap_means`), so it stays fast for revenue where
  most customers spend nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from winback.errors import DataError

DEFAULT_BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Comparison:
    """One arm against its control: sizes, means, the difference, its CI and p-value."""

    n_arm: int
    n_control: int
    mean_arm: float
    mean_control: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str

    def to_dict(self) -> dict:
        """Plain dict with JSON-friendly floats (NaN → None)."""
        return {k: _json_float(v) for k, v in asdict(self).items()}


def _json_float(value):
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise DataError(f"confidence must be between 0 and 1, got {confidence}")
    return float(sps.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for one proportion (no continuity correction); (nan, nan) when n = 0."""
    if n < 0 or successes < 0 or successes > n:
        raise DataError(f"impossible counts: {successes} successes out of {n}")
    if n == 0:
        return (math.nan, math.nan)
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp float noise at the edges (x = 0 or x = n give exactly 0 / 1 in exact arithmetic).
    return (max(0.0, centre - half), min(1.0, centre + half))


def diff_proportions(
    x_arm: int, n_arm: int, x_control: int, n_control: int, confidence: float = 0.95
) -> Comparison:
    """p_arm − p_control with Newcombe's hybrid score CI and the pooled two-proportion z-test p-value."""
    for x, n in ((x_arm, n_arm), (x_control, n_control)):
        if n < 0 or x < 0 or x > n:
            raise DataError(f"impossible counts: {x} successes out of {n}")
    if n_arm == 0 or n_control == 0:
        p1 = x_arm / n_arm if n_arm else math.nan
        p2 = x_control / n_control if n_control else math.nan
        return Comparison(n_arm, n_control, p1, p2, p1 - p2, math.nan, math.nan, math.nan, "newcombe")
    p1, p2 = x_arm / n_arm, x_control / n_control
    l1, u1 = wilson_interval(x_arm, n_arm, confidence)
    l2, u2 = wilson_interval(x_control, n_control, confidence)
    d = p1 - p2
    # Newcombe (1998) method 10: combine the Wilson limits' distances from each estimate.
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (x_arm + x_control) / (n_arm + n_control)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_arm + 1 / n_control))
    if se0 == 0:
        p_value = 1.0  # both arms all-0 or all-1: no evidence of any difference
    else:
        p_value = float(2 * sps.norm.sf(abs(d) / se0))
    return Comparison(n_arm, n_control, p1, p2, d, low, high, p_value, "newcombe")


def diff_proportions_array(
    x_arm: np.ndarray, n_arm: np.ndarray, x_control: np.ndarray, n_control: np.ndarray,
    confidence: float = 0.95,
) -> dict[str, np.ndarray]:
    """Vectorised `diff_proportions` over arrays of counts (for breakdowns and calibration runs)."""
    x1, n1, x2, n2 = (np.asarray(a, dtype=float) for a in (x_arm, n_arm, x_control, n_control))
    z = _z(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p2 = x1 / n1, x2 / n2

        def wilson(p, n):
            denom = 1 + z * z / n
            centre = (p + z * z / (2 * n)) / denom
            half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
            return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)

        l1, u1 = wilson(p1, n1)
        l2, u2 = wilson(p2, n2)
        d = p1 - p2
        low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
        pooled = (x1 + x2) / (n1 + n2)
        se0 = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p_value = np.where(se0 > 0, 2 * sps.norm.sf(np.abs(d) / np.where(se0 > 0, se0, 1)), 1.0)
        p_value = np.where(np.isfinite(d), p_value, np.nan)
    return {"p_arm": p1, "p_control": p2, "diff": d, "ci_low": low, "ci_high": high, "p_value": p_value}


def welch_from_moments(
    mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int, confidence: float = 0.95
) -> Comparison:
    """Welch difference in means from sufficient statistics (sample variances with ddof=1)."""
    d = mean1 - mean2
    if n1 < 2 or n2 < 2:
        return Comparison(n1, n2, mean1, mean2, d, math.nan, math.nan, math.nan, "welch")
    a, b = var1 / n1, var2 / n2
    se = math.sqrt(a + b)
    if se == 0:
        # Both arms constant: the difference is known exactly.
        return Comparison(n1, n2, mean1, mean2, d, d, d, 1.0 if d == 0 else 0.0, "welch")
    # Welch-Satterthwaite degrees of freedom.
    df = (a + b) ** 2 / ((a * a / (n1 - 1) if a else 0.0) + (b * b / (n2 - 1) if b else 0.0))
    t = float(sps.t.ppf(0.5 + confidence / 2, df))
    p = float(2 * sps.t.sf(abs(d) / se, df))
    return Comparison(n1, n2, mean1, mean2, d, d - t * se, d + t * se, p, "welch")


def _clean(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        arr = arr.ravel()
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: outcome has missing or infinite values")
    return arr


def diff_means(
    arm, control, *, confidence: float = 0.95, method: str = "welch",
    resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES, seed: int = 0,
) -> Comparison:
    """mean(arm) − mean(control) with a Welch (default) or seeded percentile-bootstrap CI and p-value."""
    x, y = _clean(arm, "arm"), _clean(control, "control")
    if method == "welch":
        v1 = float(x.var(ddof=1)) if len(x) > 1 else math.nan
        v2 = float(y.var(ddof=1)) if len(y) > 1 else math.nan
        m1 = float(x.mean()) if len(x) else math.nan
        m2 = float(y.mean()) if len(y) else math.nan
        return welch_from_moments(m1, v1, len(x), m2, v2, len(y), confidence)
    if method == "bootstrap":
        return bootstrap_diff_means(x, y, confidence=confidence, resamples=resamples, seed=seed)
    raise DataError(f"unknown method {method!r}; use 'welch' or 'bootstrap'")


def _bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `resamples` bootstrap resamples of `values`, drawing only the non-zero values.

    A resample of size n from data with m non-zero values holds K ~ Binomial(n, m/n) non-zero draws,
    each uniform over the non-zero values; zeros add nothing to the sum. This is the same
    distribution as naive resampling at a fraction of the cost when most customers spend 0.
    """
    n = len(values)
    nonzero = values[values != 0]
    m = len(nonzero)
    if m == 0:
        return np.zeros(resamples)
    counts = rng.binomial(n, m / n, size=resamples)
    out = np.empty(resamples)
    # Chunk the resamples so at most ~20M draws are held at once (million-row arms).
    chunks = max(1, math.ceil(int(counts.sum()) / 20_000_000))
    for block in np.array_split(np.arange(resamples), chunks):
        k = counts[block]
        draws = nonzero[rng.integers(0, m, size=int(k.sum()))]
        owner = np.repeat(np.arange(len(block)), k)
        out[block] = np.bincount(owner, weights=draws, minlength=len(block)) / n
    return out


def bootstrap_diff_means(
    arm, control, *, confidence: float = 0.95, resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES, seed: int = 0
) -> Comparison:
    """Seeded percentile bootstrap CI for a difference in means; p-value by inverting the percentile CI."""
    x, y = _clean(arm, "arm"), _clean(control, "control")
    if len(x) == 0 or len(y) == 0:
        m1 = float(x.mean()) if len(x) else math.nan
        m2 = float(y.mean()) if len(y) else math.nan
        return Comparison(len(x), len(y), m1, m2, m1 - m2, math.nan, math.nan, math.nan, "bootstrap")
    rng = np.random.default_rng(seed)
    diffs = _bootstrap_means(x, resamples, rng) - _bootstrap_means(y, resamples, rng)
    alpha = 1 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    # Two-sided p: twice the share of resamples on the far side of zero (with the +1 correction
    # so p is never exactly 0 from a finite number of resamples).
    below = (np.sum(diffs <= 0) + 1) / (resamples + 1)
    above = (np.sum(diffs >= 0) + 1) / (resamples + 1)
    p = float(min(1.0, 2 * min(below, above)))
    m1, m2 = float(x.mean()), float(y.mean())
    return Comparison(len(x), len(y), m1, m2, m1 - m2, float(low), float(high), p, "bootstrap")


def is_binary(values) -> bool:
    """True when every value is 0 or 1 (so the proportion methods apply)."""
    arr = np.asarray(values, dtype=float)
    return bool(np.all((arr == 0) | (arr == 1)))


def compare(arm, control, *, confidence: float = 0.95, method: str = "auto", seed: int = 0) -> Comparison:
    """Compare two samples: Newcombe for 0/1 outcomes, else Welch (or `method="bootstrap"`)."""
    x, y = _clean(arm, "arm"), _clean(control, "control")
    if method == "auto":
        method = "newcombe" if is_binary(x) and is_binary(y) else "welch"
    if method == "newcombe":
        if not (is_binary(x) and is_binary(y)):
            raise DataError("the proportion method needs a 0/1 outcome")
        return diff_proportions(int(x.sum()), len(x), int(y.sum()), len(y), confidence)
    return diff_means(x, y, confidence=confidence, method=method, seed=seed)


def holm_adjust(p_values) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out
