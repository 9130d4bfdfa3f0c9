"""The statistics against published worked examples and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from winback.errors import DataError
from winback.measure import stats


# Newcombe (1998), "Interval estimation for the difference between independent proportions: comparison
# of eleven methods", Statistics in Medicine 17:873-890, Table II, method 10 (score interval from
# Wilson limits, no continuity correction), rounded to 4 decimals as published.
@pytest.mark.parametrize(
    "x1, n1, x2, n2, low, high",
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
        (10, 10, 0, 10, 0.6075, 1.0000),
    ],
)
def test_newcombe_published_examples(x1, n1, x2, n2, low, high):
    c = stats.diff_proportions(x1, n1, x2, n2)
    assert c.diff == pytest.approx(x1 / n1 - x2 / n2)
    assert round(c.ci_low, 4) == pytest.approx(low, abs=1e-9)
    assert round(c.ci_high, 4) == pytest.approx(high, abs=1e-9)


def test_newcombe_hand_computed():
    # 56/70 vs 48/80 by hand, z² = 3.84146:
    # Wilson(56/70): centre (0.8 + z²/140)/(1 + z²/70) = 0.78440, half-width 1.95996·sqrt(0.16/70 + z²/19600)/1.054878
    #   = 0.09256 → (0.6918, 0.8770); Wilson(48/80): centre 0.59542, half-width 0.10496 → (0.4905, 0.7004).
    # low = 0.2 − sqrt(0.10817² + 0.10038²) = 0.0524; high = 0.2 + sqrt(0.07696² + 0.10954²) = 0.3339.
    l1, u1 = stats.wilson_interval(56, 70)
    l2, u2 = stats.wilson_interval(48, 80)
    assert (round(l1, 4), round(u1, 4), round(l2, 4), round(u2, 4)) == (0.6918, 0.8770, 0.4905, 0.7004)
    c = stats.diff_proportions(56, 70, 48, 80)
    assert c.ci_low == pytest.approx(0.2 - math.hypot(0.8 - l1, u2 - 0.6))
    assert c.ci_high == pytest.approx(0.2 + math.hypot(u1 - 0.8, 0.6 - l2))


@pytest.mark.parametrize("x, n", [(81, 263), (0, 15), (15, 15), (1, 2), (3, 1000)])
def test_wilson_matches_scipy(x, n):
    ci = sps.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = stats.wilson_interval(x, n)
    assert low == pytest.approx(ci.low, abs=1e-12)
    assert high == pytest.approx(ci.high, abs=1e-12)


def test_wilson_81_of_263_published():
    # Newcombe (1998a) single-proportion example: 81/263, Wilson 0.2553 to 0.3662.
    low, high = stats.wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize("x1, n1, x2, n2", [(56, 70, 48, 80), (120, 1000, 95, 1000), (3, 40, 9, 35)])
def test_pooled_z_p_value_equals_uncorrected_chi_square(x1, n1, x2, n2):
    chi2, p, _, _ = sps.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    assert stats.diff_proportions(x1, n1, x2, n2).p_value == pytest.approx(p, rel=1e-9)


def test_vectorised_proportions_match_scalar():
    x1, n1, x2, n2 = [56, 9, 5, 0], [70, 10, 56, 10], [48, 3, 0, 0], [80, 10, 29, 10]
    v = stats.diff_proportions_array(x1, n1, x2, n2)
    for i in range(4):
        c = stats.diff_proportions(x1[i], n1[i], x2[i], n2[i])
        assert (v["ci_low"][i], v["ci_high"][i], v["p_value"][i]) == pytest.approx((c.ci_low, c.ci_high, c.p_value))


def test_welch_matches_scipy():
    rng = np.random.default_rng(5)
    x = rng.lognormal(3, 1.2, 400) * (rng.random(400) < 0.2)
    y = rng.lognormal(3, 1.2, 900) * (rng.random(900) < 0.15)
    c = stats.diff_means(x, y)
    ref = sps.ttest_ind(x, y, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert c.method == "welch"


def test_welch_literal():
    # x = [1, 2, 3, 4], y = [2, 4, 6]: means 2.5 and 4, variances 5/3 and 4; SE² = 5/12 + 4/3 = 1.75.
    c = stats.diff_means([1, 2, 3, 4], [2, 4, 6])
    assert c.diff == pytest.approx(-1.5)
    se = math.sqrt(1.75)
    df = 1.75**2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    t = sps.t.ppf(0.975, df)
    assert (c.ci_low, c.ci_high) == pytest.approx((-1.5 - t * se, -1.5 + t * se))


def test_bootstrap_is_seeded_and_close_to_scipy():
    rng = np.random.default_rng(11)
    x = rng.exponential(50, 600) * (rng.random(600) < 0.25)
    y = rng.exponential(50, 600) * (rng.random(600) < 0.15)
    a = stats.diff_means(x, y, method="bootstrap", seed=3, resamples=4000)
    b = stats.diff_means(x, y, method="bootstrap", seed=3, resamples=4000)
    assert a == b
    ref = sps.bootstrap((x, y), lambda u, v, axis=-1: u.mean(axis=-1) - v.mean(axis=-1), method="percentile",
                        n_resamples=4000, rng=3, vectorized=True).confidence_interval
    width = ref.high - ref.low
    assert a.ci_low == pytest.approx(ref.low, abs=0.06 * width)
    assert a.ci_high == pytest.approx(ref.high, abs=0.06 * width)
    assert 0 < a.p_value < 0.05


def test_bootstrap_of_mostly_zeros_has_the_naive_spread():
    # The non-zero trick must give the same sampling distribution as naive resampling.
    rng = np.random.default_rng(2)
    values = np.where(rng.random(2000) < 0.1, rng.gamma(2, 30, 2000), 0.0)
    fast = stats._bootstrap_means(values, 4000, np.random.default_rng(1))
    naive = values[np.random.default_rng(1).integers(0, 2000, size=(4000, 2000))].mean(axis=1)
    assert fast.mean() == pytest.approx(values.mean(), rel=0.01)
    assert fast.std() == pytest.approx(naive.std(), rel=0.06)


def test_compare_picks_the_method():
    assert stats.compare([0, 1, 1], [0, 0, 1]).method == "newcombe"
    assert stats.compare([0, 2.5, 1], [0, 0, 1]).method == "welch"
    with pytest.raises(DataError):
        stats.compare([0, 2.5], [0, 1], method="newcombe")
    with pytest.raises(DataError):
        stats.compare([0, float("nan")], [0, 1])


def test_holm_literal():
    # Sorted p: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone: 0.06.
    out = stats.holm_adjust([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert out[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(out[4])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(1, 500), st.data())
def test_newcombe_interval_properties(n1, n2, data):
    x1 = data.draw(st.integers(0, n1))
    x2 = data.draw(st.integers(0, n2))
    c = stats.diff_proportions(x1, n1, x2, n2)
    assert -1 - 1e-12 <= c.ci_low <= c.diff <= c.ci_high <= 1 + 1e-12
    assert 0 <= c.p_value <= 1


def test_impossible_counts():
    with pytest.raises(DataError):
        stats.diff_proportions(5, 4, 1, 10)
