"""Power planning for a treated-vs-holdout test of return rates (normal approximation, unequal arms).

The sample size solves, for holdout size n_h and treatment size n_t = k·n_h (k = (1−s)/s for holdout
share s), the two-sided test of H0: p_t = p_h at level α with power 1−β against p_t = p0 + D:

    D = z_{1−α/2}·sqrt(p̄(1−p̄)(1/n_t + 1/n_h)) + z_{1−β}·sqrt(p1(1−p1)/n_t + p0(1−p0)/n_h)

with p̄ the allocation-weighted mean of p0 and p1 (Fleiss, Levin & Paik, *Statistical Methods for
Rates and Proportions*, 3rd ed., §4.2, without the continuity correction; the first term is the
pooled SE the z-test in `stats.diff_proportions` uses). Solved in closed form for n_h.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import optimize
from scipy import stats as sps

from winback.errors import ConfigError


@dataclass(frozen=True)
class SampleSize:
    """Customers needed per arm and in total for the requested test."""

    n_treatment: int
    n_holdout: int
    total: int
    baseline: float
    mde: float
    alpha: float
    power: float
    holdout_share: float

    def to_dict(self) -> dict:
        """Plain dict for JSON output."""
        return asdict(self)


def _check(baseline: float, alpha: float, power: float, holdout_share: float) -> None:
    if not 0 < baseline < 1:
        raise ConfigError(f"must be strictly between 0 and 1, got {baseline}", field="--baseline")
    if not 0 < alpha < 1:
        raise ConfigError(f"must be strictly between 0 and 1, got {alpha}", field="--alpha")
    if not 0 < power < 1:
        raise ConfigError(f"must be strictly between 0 and 1, got {power}", field="--power")
    if not 0 < holdout_share < 1:
        raise ConfigError(f"must be strictly between 0 and 1, got {holdout_share}", field="--holdout-share")


def _detectable(d: float, n_t: float, n_h: float, p0: float, z_a: float, z_b: float) -> float:
    """Left side minus right side of the power equation for effect d (root = minimum detectable)."""
    p1 = p0 + d
    pbar = (n_t * p1 + n_h * p0) / (n_t + n_h)
    se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_t + 1 / n_h))
    se1 = math.sqrt(p1 * (1 - p1) / n_t + p0 * (1 - p0) / n_h)
    return d - (z_a * se0 + z_b * se1)


def required_sample_size(
    baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8, holdout_share: float = 0.5
) -> SampleSize:
    """Customers per arm (and total) to detect an absolute uplift `mde` over return rate `baseline`."""
    _check(baseline, alpha, power, holdout_share)
    if not mde > 0:
        raise ConfigError(f"must be a positive absolute uplift (0.02 = 2 points), got {mde}", field="--mde")
    if baseline + mde >= 1:
        raise ConfigError(f"baseline {baseline} + mde {mde} must stay below 1", field="--mde")
    z_a = float(sps.norm.ppf(1 - alpha / 2))
    z_b = float(sps.norm.ppf(power))
    k = (1 - holdout_share) / holdout_share  # treatment customers per holdout customer
    p0, p1 = baseline, baseline + mde
    pbar = (k * p1 + p0) / (k + 1)
    # n_h = [z_a·sqrt(p̄q̄(1/k + 1)) + z_b·sqrt(p1q1/k + p0q0)]² / D²  (the equation above with n_t = k·n_h)
    root = z_a * math.sqrt(pbar * (1 - pbar) * (1 / k + 1)) + z_b * math.sqrt(p1 * (1 - p1) / k + p0 * (1 - p0))
    n_h_exact = root * root / (mde * mde)
    n_h = math.ceil(n_h_exact - 1e-9)
    n_t = math.ceil(k * n_h_exact - 1e-9)
    return SampleSize(n_t, n_h, n_t + n_h, baseline, mde, alpha, power, holdout_share)


def min_detectable_effect(
    n_treat: int, n_hold: int, baseline: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute uplift in return rate detectable with these arm sizes (inf if an arm is empty)."""
    _check(baseline, alpha, power, 0.5)
    if n_treat <= 0 or n_hold <= 0:
        return math.inf
    z_a = float(sps.norm.ppf(1 - alpha / 2))
    z_b = float(sps.norm.ppf(power))
    hi = 1 - baseline - 1e-12
    if _detectable(hi, n_treat, n_hold, baseline, z_a, z_b) < 0:
        return math.inf  # even lifting everyone to a return rate of 1 would not be detectable
    return float(optimize.brentq(_detectable, 1e-12, hi, args=(n_treat, n_hold, baseline, z_a, z_b),
                                 xtol=1e-10))
