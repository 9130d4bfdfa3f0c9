"""Pareto/NBD and MBG/NBD next to BG/NBD: hand-derived likelihoods, gradients, the CDNOW references,
the holdout check and `winback fit`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import hyp2f1

from winback.cli import main
from winback.segments.cdnow import read_cdnow
from winback.segments.model_check import check_holdout, choose_model, fit_purchase_model, purchase_p_alive
from winback.segments.models import (
    BgNbdParams,
    MbgNbdParams,
    _Lookup,
    bgnbd_log_likelihood,
    bgnbd_p_alive,
    holdout_summary,
    mbgnbd_log_likelihood,
    mbgnbd_p_alive,
)
from winback.segments.pareto_nbd import (
    ParetoNbdParams,
    _Rows,
    jacobi_nodes,
    log_tail,
    pareto_nbd_conditional_expected_purchases,
    pareto_nbd_expected_purchases,
    pareto_nbd_log_likelihood,
    pareto_nbd_p_alive,
)

# Fader, Hardie & Lee (2005), Marketing Science 24(2): Pareto/NBD on the CDNOW 1/10 sample, weeks.
PUBLISHED_PARETO = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
PUBLISHED_PARETO_LL = -9595.0
# lifetimes 0.11.3 ModifiedBetaGeoFitter on the same calibration summary (no published MBG/NBD figures).
LIFETIMES_MBGNBD = {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}
CALIBRATION_END = pd.Timestamp("1997-09-30 23:59:59", tz="UTC")
HOLDOUT_END = pd.Timestamp("1998-06-30 23:59:59", tz="UTC")
# Holdout repeat transactions (1997-10-01 to 1998-06-30, same-day orders merged) of the 2,357 customers.
ACTUAL_HOLDOUT = 1882


# ---------------------------------------------------------------------------------------------
# Literal cases, worked by hand


def test_pareto_nbd_likelihood_of_literal_cases():
    # r = s = α = β = 1, x = 0, T = 1: L = (2^-1 2^-1) + ∫_0^1 (1+τ)^-3 dτ = 1/4 + (1 − 1/4)/2 = 0.625.
    assert pareto_nbd_log_likelihood((1, 1, 1, 1), [0], [0], [1]) == pytest.approx(math.log(0.625), rel=1e-13)
    # x = 1, t_x = 1, T = 2: L = 3^-2 3^-1 + ∫_1^2 (1+τ)^-4 dτ = 1/27 + (1/8 − 1/27)/3.
    assert pareto_nbd_log_likelihood((1, 1, 1, 1), [1], [1], [2]) == pytest.approx(
        math.log(1 / 27 + (1 / 8 - 1 / 27) / 3), rel=1e-13)
    # α > β (the α-form): r=1, α=2, s=1, β=1, x=0, T=1: L = α β [1/(3·2) + ∫_0^1 dτ/((2+τ)(1+τ)²)],
    # partial fractions 1/(2+τ) − 1/(1+τ) + 1/(1+τ)² give ln(3/4) + 1/2.
    assert pareto_nbd_log_likelihood((1, 2, 1, 1), [0], [0], [1]) == pytest.approx(
        math.log(2 * (1 / 6 + math.log(3 / 4) + 0.5)), rel=1e-13)
    # α < β (the β-form): r=1, α=1, s=1, β=2: ∫_0^1 dτ/((1+τ)(2+τ)²) = ln(4/3) − 1/6.
    assert pareto_nbd_log_likelihood((1, 1, 1, 2), [0], [0], [1]) == pytest.approx(
        math.log(2 * (1 / 6 + math.log(4 / 3) - 1 / 6)), rel=1e-13)
    # t_x = T: no dropout window, only the alive term. Weights are repeated rows.
    assert pareto_nbd_log_likelihood((1, 1, 1, 1), [2], [3], [3]) == pytest.approx(
        math.log(math.gamma(3) * 4.0 ** -3 * 4.0 ** -1), rel=1e-13)
    rows = ([0, 1, 0], [0, 1, 0], [1, 2, 1])
    assert pareto_nbd_log_likelihood((1, 1, 1, 1), *rows) == pytest.approx(
        pareto_nbd_log_likelihood((1, 1, 1, 1), [0, 1], [0, 1], [1, 2], weights=[2, 1]))


def test_mbgnbd_and_bgnbd_likelihoods_of_literal_cases():
    # r = α = a = b = 1, x = 0, T = 1. MBG/NBD: gone at the first purchase with E[p] = 1/2 (L = 1), else
    # alive without a purchase in T: B(1,2)/B(1,1) · (1/2)^1 = 1/4; L = 1/2 + 1/4. BG/NBD: only 1/2.
    assert mbgnbd_log_likelihood((1, 1, 1, 1), [0], [0], [1]) == pytest.approx(math.log(0.75), rel=1e-13)
    assert bgnbd_log_likelihood((1, 1, 1, 1), [0], [0], [1]) == pytest.approx(math.log(0.5), rel=1e-13)
    # x = 1, t_x = 1, T = 2: MBG/NBD B(1,3)·3^-2 + B(2,2)·2^-2 = 1/27 + 1/24; BG/NBD B(1,2)·3^-2 + B(2,1)·2^-2.
    assert mbgnbd_log_likelihood((1, 1, 1, 1), [1], [1], [2]) == pytest.approx(math.log(1 / 27 + 1 / 24), rel=1e-13)
    assert bgnbd_log_likelihood((1, 1, 1, 1), [1], [1], [2]) == pytest.approx(math.log(1 / 18 + 1 / 8), rel=1e-13)


def test_p_alive_of_literal_one_time_buyers():
    # The issue: BG/NBD rates every one-timer alive; MBG/NBD and Pareto/NBD do not.
    assert bgnbd_p_alive(BgNbdParams(1, 1, 1, 1), [0], [0], [1])[0] == 1.0
    assert mbgnbd_p_alive((1, 1, 1, 1), [0], [0], [1])[0] == pytest.approx(1 / 3)  # 1 / (1 + a/b · 2^r)
    assert pareto_nbd_p_alive((1, 1, 1, 1), [0], [0], [1])[0] == pytest.approx(0.25 / 0.625)
    # MbgNbdParams carry their model into the shared BG/NBD functions.
    assert bgnbd_p_alive(MbgNbdParams(1, 1, 1, 1), [0], [0], [1])[0] == pytest.approx(1 / 3)


def test_one_time_buyers_fade_with_silence_except_under_bgnbd():
    T = np.array([10.0, 100.0, 400.0])
    zeros = np.zeros(3)
    bg = BgNbdParams(0.5, 30.0, 0.5, 3.0)
    mbg = MbgNbdParams(0.5, 30.0, 0.5, 3.0)
    pareto = ParetoNbdParams(0.5, 30.0, 0.5, 60.0)
    assert (bgnbd_p_alive(bg, zeros, zeros, T) == 1.0).all()
    for model in (mbg, pareto):
        alive = purchase_p_alive(model, zeros, zeros, T)
        assert (np.diff(alive) < 0).all() and (alive > 0).all() and (alive < 1).all()


def test_pareto_nbd_expectations():
    params = ParetoNbdParams(0.553, 10.578, 0.606, 11.669, unit="week")
    # The conditional expectation of a customer just acquired (x = t_x = T = 0) is the unconditional one.
    fresh = pareto_nbd_conditional_expected_purchases(params, 39.0, [0], [0], [0])[0]
    assert fresh == pytest.approx(pareto_nbd_expected_purchases(params, 39.0))
    # s = 1 is the log limit of (1 − q^(s−1)) / (s − 1).
    near = pareto_nbd_expected_purchases(ParetoNbdParams(0.5, 10, 1.0 + 1e-7, 10), 20.0)
    at = pareto_nbd_expected_purchases(ParetoNbdParams(0.5, 10, 1.0, 10), 20.0)
    assert at == pytest.approx(0.5 * math.log(3.0)) and near == pytest.approx(at, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# The quadrature and the gradients


@settings(max_examples=40, deadline=None)
@given(r=st.floats(0.05, 30.0), s=st.floats(0.05, 5.0), x=st.integers(0, 60), z=st.floats(0.0, 0.95),
       t=st.sampled_from([0.0, 3.0]), alpha_form=st.booleans())
def test_tail_integral_matches_scipy_hyp2f1(r, s, x, z, t, alpha_form):
    # F(t) = 2F1(A, e; A+1; z) / (A (M+t)^A), A = r+s+x, z = |α−β|/(M+t): e = s+1 when α ≥ β, r+x when α < β.
    small, large = 1.0, (1.0 + z * t) / (1.0 - z)  # then (large − small) / (large + t) = z
    alpha, beta = (large, small) if alpha_form else (small, large)
    A = r + s + x
    e = s + 1.0 if alpha >= beta else r + x
    log_F = log_tail((r, alpha, s, beta), np.array([float(x)]), np.array([t]))[0]
    reference = math.log(hyp2f1(A, e, A + 1.0, z) / A) - A * math.log(max(alpha, beta) + t)
    assert log_F == pytest.approx(reference, rel=1e-10, abs=1e-10)


def test_jacobi_nodes_integrate_the_weight_exactly():
    u, w = jacobi_nodes(np.array([0.3, 1.0, 2.5, 40.0]), 8)
    for A, uk, wk in zip((0.3, 1.0, 2.5, 40.0), u, w, strict=True):
        for m in range(16):  # ∫ u^(A−1) u^m du · A = A / (A + m): exact up to degree 2n − 1
            assert float(np.dot(wk, uk ** m)) == pytest.approx(A / (A + m), rel=1e-12)


def _finite_difference_check(objective, log_theta, rel=2e-5):
    value, grad = objective(log_theta)
    assert np.isfinite(value)
    for i in range(4):
        step = np.zeros(4)
        step[i] = 1e-6
        numeric = (objective(log_theta + step)[0] - objective(log_theta - step)[0]) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=rel, abs=1e-4 * max(1.0, abs(value)) ** 0.5), i


def _rows(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    T = rng.integers(1, 80, n).astype(float)
    x = rng.poisson(1.5, n).astype(float)
    tx = np.where(x > 0, np.floor(T * rng.uniform(0.05, 1.0, n)), 0.0)
    tx[:3] = T[:3]  # t_x = T: no dropout window
    return x, tx, T, rng.integers(1, 4, n).astype(float)


@settings(max_examples=25, deadline=None)
@given(r=st.floats(0.1, 5.0), alpha=st.floats(0.5, 80.0), s=st.floats(0.1, 5.0), beta=st.floats(0.5, 80.0),
       seed=st.integers(0, 10_000))
def test_pareto_nbd_gradient_matches_finite_differences(r, alpha, s, beta, seed):
    # Both forms: α ≥ β and α < β are both drawn.
    rows = _Rows(*_rows(seed))
    theta = np.log([r, alpha, s, beta])
    _finite_difference_check(lambda lt: rows.neg_ll_and_grad(lt, 0.0, theta), theta)


@settings(max_examples=25, deadline=None)
@given(r=st.floats(0.1, 5.0), alpha=st.floats(0.5, 80.0), a=st.floats(0.1, 5.0), b=st.floats(0.1, 8.0),
       shift=st.sampled_from([0, 1]), seed=st.integers(0, 10_000))
def test_beta_geometric_gradients_match_finite_differences(r, alpha, a, b, shift, seed):
    x, tx, T, w = _rows(seed)
    lookup = _Lookup(x, tx, T, w, shift)
    theta = np.log([r, alpha, a, b])
    _finite_difference_check(lambda lt: lookup.neg_ll_and_grad(lt, 0.0, theta), theta)


def test_pareto_nbd_is_stable_for_heavy_buyers_and_extreme_scales():
    x = np.array([0.0, 500.0, 2000.0, 3.0])
    tx = np.array([0.0, 700.0, 729.0, 0.5])
    T = np.array([730.0, 730.0, 730.0, 730.0])
    for theta in ((0.5, 80.0, 0.6, 85.0), (0.5, 5000.0, 0.3, 2.0), (2.0, 3.0, 0.8, 4000.0)):
        alive = pareto_nbd_p_alive(theta, x, tx, T)
        assert np.isfinite(alive).all() and ((alive >= 0) & (alive <= 1)).all()
        assert np.isfinite(pareto_nbd_log_likelihood(theta, x, tx, T))
        assert np.isfinite(pareto_nbd_conditional_expected_purchases(theta, 90.0, x, tx, T, p_alive=alive)).all()


# ---------------------------------------------------------------------------------------------
# CDNOW references


@pytest.fixture(scope="module")
def cdnow(shared_data):
    orders = read_cdnow(shared_data / "CDNOW_sample.txt")
    summary, horizon = holdout_summary(orders, until=CALIBRATION_END, holdout_until=HOLDOUT_END, unit="week")
    return summary, horizon


@pytest.fixture(scope="module")
def cdnow_fits(cdnow):
    summary, _ = cdnow
    data = (summary["frequency"], summary["recency"], summary["T"])
    return {name: fit_purchase_model(name, *data, unit="week") for name in ("bgnbd", "mbgnbd", "pareto-nbd")}


def test_pareto_nbd_reproduces_fader_hardie_lee_2005_on_cdnow(cdnow_fits):
    fit = cdnow_fits["pareto-nbd"]
    for name, published in PUBLISHED_PARETO.items():
        assert getattr(fit, name) == pytest.approx(published, rel=0.02), name
    assert fit.log_likelihood == pytest.approx(PUBLISHED_PARETO_LL, abs=0.1)
    assert fit.n_customers == 2357 and fit.unit == "week"


def test_mbgnbd_reproduces_lifetimes_on_cdnow(cdnow_fits):
    fit = cdnow_fits["mbgnbd"]
    for name, reference in LIFETIMES_MBGNBD.items():
        assert getattr(fit, name) == pytest.approx(reference, rel=0.002), name
    # MBG/NBD nests no better or worse by construction; on CDNOW its likelihood is BG/NBD's within 1.
    assert abs(fit.log_likelihood - cdnow_fits["bgnbd"].log_likelihood) < 1.0


def test_holdout_check_on_cdnow(cdnow, cdnow_fits):
    summary, horizon = cdnow
    assert horizon == 39.0
    assert int(summary["holdout_transactions"].sum()) == ACTUAL_HOLDOUT
    data = (summary["frequency"], summary["recency"], summary["T"], summary["holdout_transactions"])
    checks = {name: check_holdout(fit, *data, horizon) for name, fit in cdnow_fits.items()}
    # Predictions as lifetimes 0.11.3 computes them for its own fits (1653.4, 1576.7, 1665.6).
    assert checks["bgnbd"].predicted == pytest.approx(1653.4, rel=0.002)
    assert checks["mbgnbd"].predicted == pytest.approx(1576.7, rel=0.002)
    assert checks["pareto-nbd"].predicted == pytest.approx(1665.6, rel=0.002)
    assert abs(checks["pareto-nbd"].error) < 0.15
    for check in checks.values():
        assert check.actual == ACTUAL_HOLDOUT
        table = check.by_frequency
        assert list(table["frequency"]) == ["0", "1", "2", "3", "4", "5", "6", "7+"]
        assert table["customers"].sum() == 2357 and table.loc[0, "customers"] == 1411
        assert (table["customers"] * table["actual"]).sum() == pytest.approx(ACTUAL_HOLDOUT)
        assert (table["customers"] * table["predicted"]).sum() == pytest.approx(check.predicted)
        assert check.aic == pytest.approx(8 - 2 * check.log_likelihood)
    # The conditional expectations rise with calibration frequency, as in FHL 2005 fig. 4.
    assert (np.diff(checks["pareto-nbd"].by_frequency["predicted"]) > 0).all()
    # Per customer, Pareto/NBD is the best of the three here (deviance 1.594 vs 1.599 and 1.602).
    assert min(checks, key=lambda name: checks[name].deviance) == "pareto-nbd"


def test_holdout_deviance_of_a_literal_case():
    # Two customers predicted 1 each (t chosen so that the MBG/NBD expectation of x = 0, T = 0 is 1),
    # one returned twice, one never: mean Poisson deviance = (2·(0 + 1) + 2·(2 ln 2 − 1)) / 2 = 2 ln 2.
    from scipy.optimize import brentq

    from winback.segments.model_check import purchase_expected

    model = MbgNbdParams(1.0, 1.0, 2.0, 3.0)
    t = brentq(lambda h: purchase_expected(model, h, [0], [0], [0])[0] - 1.0, 0.1, 1e4, xtol=1e-14)
    check = check_holdout(model, [0, 0], [0, 0], [0, 0], [2, 0], t)
    assert check.predicted == pytest.approx(2.0) and check.actual == 2
    assert check.deviance == pytest.approx(2 * math.log(2)) and check.mse == pytest.approx(1.0)


def test_fit_command_with_a_holdout_on_the_raw_cdnow_log(shared_data, capsys):
    args = ["fit", "--orders", str(shared_data / "CDNOW_sample.txt"), "--model", "pareto-nbd", "--unit", "week",
            "--until", "1997-09-30", "--holdout-until", "1998-06-30"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "pareto-nbd" and result["n_customers"] == 2357
    for name, published in PUBLISHED_PARETO.items():
        assert result[name] == pytest.approx(published, rel=0.02)
    holdout = result["holdout"]
    assert holdout["actual"] == ACTUAL_HOLDOUT and abs(holdout["predicted"] / ACTUAL_HOLDOUT - 1) < 0.15
    assert holdout["from"] == "1997-10-01" and holdout["until"] == "1998-06-30" and holdout["horizon"] == 39
    assert result["aic"] == pytest.approx(8 - 2 * result["log_likelihood"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Pareto/NBD fit, time in weeks" in out and "actual 1,882" in out and "7+" in out


def test_fit_command_errors(tmp_path, capsys):
    orders = tmp_path / "orders.csv"
    pd.DataFrame({"customer_id": ["a", "a", "b"], "ordered_at": ["2024-01-01", "2024-02-01", "2024-01-05"],
                  "amount": [1, 2, 3]}).to_csv(orders, index=False)
    assert main(["fit", "--orders", str(orders), "--model", "pareto"]) == 1
    assert "bgnbd, mbgnbd, pareto-nbd" in capsys.readouterr().err
    assert main(["fit", "--orders", str(orders), "--model", "mbgnbd", "--holdout-until", "2024-03-01"]) == 1
    assert "--until" in capsys.readouterr().err
    assert main(["fit", "--orders", str(orders), "--model", "mbgnbd", "--until", "2024-03-01",
                 "--holdout-until", "2024-02-01"]) == 1
    assert "holdout must end after" in capsys.readouterr().err


def test_fit_bgnbd_stays_the_bgnbd_shortcut(tmp_path, capsys):
    orders = tmp_path / "orders.csv"
    rng = np.random.default_rng(2)
    days = rng.integers(0, 300, 200)
    pd.DataFrame({"customer_id": [f"c{i % 60}" for i in range(200)],
                  "ordered_at": [str(pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(d))) for d in days],
                  "amount": 10}).to_csv(orders, index=False)
    assert main(["fit-bgnbd", "--orders", str(orders), "--json"]) == 0
    shortcut = json.loads(capsys.readouterr().out)
    assert main(["fit", "--model", "bgnbd", "--orders", str(orders), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == shortcut


# ---------------------------------------------------------------------------------------------
# Choosing by the holdout check


def _simulate(n: int, *, model: str, seed: int, span: float = 104.0, horizon: float = 26.0):
    """(x, t_x, T) up to the split and the holdout transactions after it, in weeks."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.8, 1 / 4.0, n)
    first = rng.uniform(0, span - horizon, n)
    T = span - horizon - first
    if model == "pareto-nbd":
        death = rng.exponential(1 / rng.gamma(0.7, 1 / 30.0, n))
    else:  # MBG/NBD: a coin at the first purchase and after each one
        p = rng.beta(1.0, 3.0, n)
        death = np.where(rng.uniform(size=n) < p, 0.0, np.inf)
        t, k = np.zeros(n), np.zeros(n)
        for _ in range(60):
            gap = rng.exponential(1 / lam)
            alive = np.isinf(death)
            t = np.where(alive, t + gap, t)
            dies = alive & (rng.uniform(size=n) < p)
            death = np.where(dies, t, death)
            k += alive
    life = np.minimum(death, T + horizon)
    total = rng.poisson(lam * life)
    times = [np.sort(rng.uniform(0, life[i], total[i])) for i in range(n)]
    x = np.array([(ts <= T[i]).sum() for i, ts in enumerate(times)], dtype=float)
    tx = np.array([ts[ts <= T[i]].max() if (ts <= T[i]).any() else 0.0 for i, ts in enumerate(times)])
    y = total - x
    return x, tx, T, y, horizon


def test_choose_model_prefers_a_dropout_model_over_bgnbd_when_one_timers_lapse():
    x, tx, T, y, horizon = _simulate(3000, model="mbgnbd", seed=4)
    choice, checks = choose_model(x, tx, T, y, horizon, unit="week", ridge=0.0)
    assert choice.model != "bgnbd"
    assert set(checks) == {"bgnbd", "mbgnbd", "pareto-nbd"}
    assert choice.errors[choice.model] == min(choice.errors.values())
    assert "smallest holdout error" in choice.reason and choice.actual == y.sum()
