"""Power planning: textbook sample sizes, unequal allocation, the inverse, and the CLI."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats as sps

from winback.cli import main
from winback.errors import ConfigError
from winback.measure.power import min_detectable_effect, required_sample_size


def test_textbook_equal_allocation():
    # p0 = 0.10, p1 = 0.15, α = 0.05 two-sided, power 0.80, equal arms (Fleiss §4.2 without continuity
    # correction). By hand: p̄ = 0.125, z = 1.95996 and 0.84162;
    # n = [1.95996·sqrt(2·0.125·0.875) + 0.84162·sqrt(0.09 + 0.1275)]² / 0.05² = 685.6 → 686 per arm.
    s = required_sample_size(0.10, 0.05, alpha=0.05, power=0.8, holdout_share=0.5)
    assert (s.n_treatment, s.n_holdout, s.total) == (686, 686, 1372)


def test_hand_formula_unequal_allocation():
    p0, d, share = 0.04, 0.01, 0.1
    k = (1 - share) / share
    p1 = p0 + d
    pbar = (k * p1 + p0) / (k + 1)
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    n_h = (za * math.sqrt(pbar * (1 - pbar) * (1 / k + 1)) + zb * math.sqrt(p1 * (1 - p1) / k + p0 * (1 - p0))) ** 2 / d**2
    s = required_sample_size(p0, d, holdout_share=share)
    assert s.n_holdout == math.ceil(n_h)
    assert s.n_treatment == math.ceil(k * n_h)
    # A 10% holdout needs a much larger audience than a 50/50 split for the same effect.
    assert s.total > required_sample_size(p0, d, holdout_share=0.5).total


def test_mde_inverts_sample_size():
    s = required_sample_size(0.08, 0.02, holdout_share=0.2)
    assert min_detectable_effect(s.n_treatment, s.n_holdout, 0.08) == pytest.approx(0.02, abs=2e-4)
    assert min_detectable_effect(s.n_treatment, s.n_holdout, 0.08) <= 0.02
    assert min_detectable_effect(10, 0, 0.08) == math.inf
    # Bigger arms detect smaller effects.
    assert min_detectable_effect(100_000, 20_000, 0.08) < min_detectable_effect(10_000, 2_000, 0.08)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"baseline": 0, "mde": 0.01}, "--baseline"), ({"baseline": 0.1, "mde": -0.01}, "--mde"),
     ({"baseline": 0.1, "mde": 0.01, "alpha": 1.2}, "--alpha"),
     ({"baseline": 0.1, "mde": 0.01, "holdout_share": 1}, "--holdout-share"),
     ({"baseline": 0.6, "mde": 0.5}, "--mde")],
)
def test_bad_parameters(kwargs, field):
    with pytest.raises(ConfigError) as err:
        required_sample_size(**kwargs)
    assert err.value.field == field


def test_cli(capsys):
    assert main(["power", "--baseline", "0.1", "--mde", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "686" in out and "1,372" in out
    assert main(["power", "--baseline", "0.1", "--mde", "0.05", "--holdout-share", "0.2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n_treatment"] == 4 * got["n_holdout"] or abs(got["n_treatment"] - 4 * got["n_holdout"]) <= 4
    assert main(["power", "--baseline", "1.5", "--mde", "0.05"]) == 1
    assert "Error:" in capsys.readouterr().err
