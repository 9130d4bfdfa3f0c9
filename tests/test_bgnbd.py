"""BG/NBD and Gamma-Gamma against the published CDNOW 1/10 estimates, plus model properties."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from winback.cli import main
from winback.segments.cdnow import read_cdnow
from winback.segments.models import (
    BgNbdParams,
    bgnbd_conditional_expected_purchases,
    bgnbd_log_likelihood,
    bgnbd_p_alive,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
    rfm_summary,
)

# Fader, Hardie & Lee (2005), Marketing Science 24(2), CDNOW 1/10 sample, time in weeks.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BGNBD_LL = -9582.4
# Fader & Hardie (2013) "The Gamma-Gamma Model of Monetary Value": 946 repeat buyers, calibration spend.
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}
PUBLISHED_GG_LL = -4055.92
CALIBRATION_END = pd.Timestamp("1997-09-30", tz="UTC")


@pytest.fixture(scope="module")
def cdnow_summary(shared_data):
    orders = read_cdnow(shared_data / "CDNOW_sample.txt")
    summary = rfm_summary(orders, until=CALIBRATION_END, unit="week")
    sample_ids = orders.drop_duplicates("customer_id").set_index("customer_id")["sample_id"]
    return summary.assign(sample_id=summary["customer_id"].map(sample_ids).to_numpy())


def _close(value: float, published: float, rel: float = 0.01) -> bool:
    # Published figures are rounded to 3 decimals; allow 1% or the rounding, whichever is larger.
    return abs(value - published) <= max(rel * abs(published), 0.0006)


def test_bgnbd_reproduces_fader_hardie_lee_2005_on_cdnow(cdnow_summary):
    assert len(cdnow_summary) == 2357
    fit = fit_bgnbd(cdnow_summary["frequency"], cdnow_summary["recency"], cdnow_summary["T"], unit="week")
    for name, published in PUBLISHED_BGNBD.items():
        assert _close(getattr(fit, name), published), (name, getattr(fit, name), published)
    assert fit.log_likelihood == pytest.approx(PUBLISHED_BGNBD_LL, abs=0.1)
    assert fit.n_customers == 2357


def test_summary_matches_the_published_cdnow_summary_file(cdnow_summary, shared_data):
    # The x / t_x / T / zbar file distributed with the Fader-Hardie notes is the same calibration data.
    published = pd.read_csv(shared_data / "cdnow_customers_summary_with_transactions.csv")
    ours = cdnow_summary.sort_values("sample_id")
    assert (ours["sample_id"].to_numpy() == published["ID"].to_numpy()).all()
    assert (ours["frequency"].to_numpy() == published["x"].to_numpy()).all()
    assert np.allclose(ours["recency"].to_numpy(), published["t_x"].to_numpy(), atol=0.006)
    assert np.allclose(ours["T"].to_numpy(), published["T"].to_numpy(), atol=0.006)
    assert np.allclose(ours["monetary_value"].to_numpy(), published["zbar"].to_numpy(), atol=0.006)


def test_gamma_gamma_reproduces_fader_hardie_2013_on_cdnow(cdnow_summary):
    repeat = cdnow_summary[cdnow_summary["frequency"] > 0]
    assert len(repeat) == 946
    fit = fit_gamma_gamma(repeat["frequency"], repeat["monetary_value"])
    for name, published in PUBLISHED_GG.items():
        assert getattr(fit, name) == pytest.approx(published, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(PUBLISHED_GG_LL, abs=0.1)
    # The conditional expectation is a weighted mean of the population mean and the customer's own mean.
    expected = gamma_gamma_expected_value(fit, repeat["frequency"], repeat["monetary_value"])
    lo = np.minimum(repeat["monetary_value"], fit.population_mean)
    hi = np.maximum(repeat["monetary_value"], fit.population_mean)
    assert ((expected >= lo - 1e-9) & (expected <= hi + 1e-9)).all()
    assert gamma_gamma_expected_value(fit, [0], [0])[0] == pytest.approx(fit.population_mean)


def test_predictions_on_cdnow_match_the_paper(cdnow_summary):
    params = BgNbdParams(0.243, 4.414, 0.793, 2.426, unit="week")
    x, tx, T = cdnow_summary["frequency"], cdnow_summary["recency"], cdnow_summary["T"]
    # FHL 2005 (p. 280): a customer with x=2, t_x=30.43, T=38.86 expects 1.226 purchases in the next 39 weeks.
    assert bgnbd_conditional_expected_purchases(params, 39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=0.002)
    alive = bgnbd_p_alive(params, x, tx, T)
    assert ((alive > 0) & (alive <= 1)).all()
    assert (alive[x == 0] == 1).all()
    expected = bgnbd_conditional_expected_purchases(params, 39, x, tx, T)
    assert (expected >= 0).all() and np.isfinite(expected).all()
    # Heavy buyers: the Euler-transformed hypergeometric term stays finite.
    assert np.isfinite(bgnbd_conditional_expected_purchases(params, 52, [2000], [38.0], [38.86])).all()


def test_weights_are_the_same_as_repeated_rows():
    x, tx, T = np.array([0, 1, 3, 1]), np.array([0, 5, 20, 5]), np.array([30, 30, 40, 30])
    params = (0.5, 10.0, 0.8, 2.0)
    repeated = bgnbd_log_likelihood(params, np.r_[x, x[:1]], np.r_[tx, tx[:1]], np.r_[T, T[:1]])
    weighted = bgnbd_log_likelihood(params, x, tx, T, weights=[2, 1, 1, 1])
    assert repeated == pytest.approx(weighted)


def test_analytic_gradient_matches_finite_differences():
    from winback.segments.models import _Lookup

    rng = np.random.default_rng(3)
    T = rng.integers(5, 60, 300).astype(float)
    x = rng.poisson(2, 300).astype(float)
    tx = np.where(x > 0, np.floor(T * rng.uniform(0.1, 1, 300)), 0.0)
    lookup = _Lookup(x, tx, T, np.ones(300))
    theta = np.log([0.4, 7.0, 0.9, 2.5])
    _, grad = lookup.neg_ll_and_grad(theta, 0.0, theta)
    for i in range(4):
        step = np.zeros(4)
        step[i] = 1e-6
        numeric = (lookup.neg_ll_and_grad(theta + step, 0.0, theta)[0]
                   - lookup.neg_ll_and_grad(theta - step, 0.0, theta)[0]) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-4)


def test_fit_bgnbd_cli_on_the_raw_cdnow_log(shared_data, capsys):
    code = main(["fit-bgnbd", "--orders", str(shared_data / "CDNOW_sample.txt"), "--until", "1997-09-30",
                 "--unit", "week", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_customers"] == 2357
    for name, published in PUBLISHED_BGNBD.items():
        assert _close(result[name], published)
    assert result["log_likelihood"] == pytest.approx(PUBLISHED_BGNBD_LL, abs=0.1)


def test_fit_bgnbd_cli_on_a_plain_orders_csv(tmp_path, capsys):
    orders = pd.DataFrame({
        "customer_id": ["a", "a", "a", "b", "b", "c", "d", "d"],
        "ordered_at": ["2024-01-01T10:00:00+08:00", "2024-01-01T18:00:00+08:00", "2024-02-10T09:00:00+08:00",
                       "2024-01-15T09:00:00+08:00", "2024-03-01T09:00:00+08:00", "2024-02-01T09:00:00+08:00",
                       "2024-01-03T09:00:00+08:00", "2024-04-01T09:00:00+08:00"],
        "amount": [10, 20, 30, 40, 50, 60, 70, 80],
    })
    path = tmp_path / "orders.csv"
    orders.to_csv(path, index=False)
    assert main(["fit-bgnbd", "--orders", str(path), "--until", "2024-06-30", "--json",
                 "--timezone", "Asia/Shanghai"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_customers"] == 4 and result["unit"] == "day"
    assert all(np.isfinite(result[k]) and result[k] > 0 for k in ("r", "alpha", "a", "b"))
    # Same-day orders of "a" count as one transaction: x = 1 for "a".
    summary = rfm_summary(orders.assign(ordered_at=pd.to_datetime(orders["ordered_at"], utc=True)),
                          until=pd.Timestamp("2024-06-30", tz="Asia/Shanghai"), timezone="Asia/Shanghai")
    assert summary.set_index("customer_id").loc["a", "frequency"] == 1


def test_fit_bgnbd_cli_errors(tmp_path, capsys):
    bad = tmp_path / "orders.csv"
    pd.DataFrame({"customer_id": ["a"], "ordered_at": ["yesterday-ish"], "amount": [1]}).to_csv(bad, index=False)
    assert main(["fit-bgnbd", "--orders", str(bad)]) == 1
    assert "Error:" in capsys.readouterr().err
    missing = tmp_path / "nocol.csv"
    pd.DataFrame({"customer_id": ["a"], "amount": [1]}).to_csv(missing, index=False)
    assert main(["fit-bgnbd", "--orders", str(missing)]) == 1
    assert "ordered_at" in capsys.readouterr().err
    assert main(["fit-bgnbd", "--orders", str(missing), "--unit", "month"]) == 1


def test_segmentation_fit_in_days_is_the_weekly_fit_rescaled(shared_data):
    from winback.segments import SegmentParams, fit_customer_models

    orders = read_cdnow(shared_data / "CDNOW_sample.txt")
    models = fit_customer_models(orders, as_of=pd.Timestamp("1997-09-30 23:00", tz="UTC"),
                                 params=SegmentParams(timezone="UTC", fit_ridge=0.0))
    fit = models.bgnbd
    assert fit.unit == "day" and fit.n_customers == 2357
    assert fit.r == pytest.approx(PUBLISHED_BGNBD["r"], rel=0.01)
    assert fit.alpha / 7 == pytest.approx(PUBLISHED_BGNBD["alpha"], rel=0.01)
    assert fit.a == pytest.approx(PUBLISHED_BGNBD["a"], rel=0.01)
    assert fit.b == pytest.approx(PUBLISHED_BGNBD["b"], rel=0.01)


def test_segmentation_fit_in_weeks_reproduces_the_published_alpha(shared_data):
    from winback.segments import SegmentParams, fit_customer_models

    orders = read_cdnow(shared_data / "CDNOW_sample.txt")
    fit = fit_customer_models(orders, as_of=pd.Timestamp("1997-09-30 23:00", tz="UTC"),
                              params=SegmentParams(timezone="UTC", fit_ridge=0.0, fit_unit="week")).bgnbd
    assert fit.unit == "week"
    for name, published in PUBLISHED_BGNBD.items():
        assert _close(getattr(fit, name), published), name
