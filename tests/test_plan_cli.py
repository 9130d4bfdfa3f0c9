"""`winback plan` end to end on a small demo world: sources → segments → plan file + summary; ledger inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from winback.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from winback.demo import generate_world, write_world

    out = tmp_path_factory.mktemp("demo") / "world"
    world = generate_world(1200, seed=11, as_of=pd.Timestamp("2026-11-23 12:00", tz="UTC"))
    write_world(world, out)
    return out


def test_plan_with_world_writes_decision_table(world: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("WINBACK_LEDGER_URL", raising=False)
    out = tmp_path / "plan.parquet"
    code = main(["plan", str(REPO / "campaigns" / "cn_retail_winback.yaml"), "--world", str(world),
                 "--as-of", "2026-11-23", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    plan = pd.read_parquet(out)
    assert {"customer_id", "arm", "reason", "channel", "send_at_utc", "send_at_local", "offer",
            "expected_net_value", "template", "coupon_code", "context"} <= set(plan.columns)
    assert set(plan["arm"]) <= {"treatment", "holdout", "excluded"} and (plan["arm"] == "treatment").any()
    assert plan["campaign_id"].eq("cn-retail-winback-2026w").all()
    assert "Reasons" in printed.out and "Expected offer cost" in printed.out and "CNY" in printed.out
    assert "No ledger given" in printed.out
    assert "nothing was sent" in printed.out


def test_plan_campaign_sources_relative_to_file_and_csv_out(world: Path, tmp_path: Path, capsys) -> None:
    # The campaign's own sources point to ../demo-out/world relative to the campaign file.
    (tmp_path / "campaigns").mkdir()
    shutil.copytree(world, tmp_path / "demo-out" / "world")
    campaign = tmp_path / "campaigns" / "us.yaml"
    campaign.write_text((REPO / "campaigns" / "us_winback.yaml").read_text(encoding="utf-8")
                        .replace("templates_dir: ../templates", f"templates_dir: {REPO / 'templates'}"),
                        encoding="utf-8")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    out = tmp_path / "plan.csv"
    code = main(["plan", str(campaign), "--as-of", "2026-11-23", "--ledger", ledger, "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    plan = pd.read_csv(out, encoding="utf-8-sig")
    assert len(plan) > 0 and "USD" in printed.out
    assert "No ledger given" not in printed.out


def test_plan_errors_are_clean(world: Path, tmp_path: Path, capsys) -> None:
    campaign = str(REPO / "campaigns" / "cn_retail_winback.yaml")
    assert main(["plan", campaign, "--world", str(tmp_path / "nope"), "--out", str(tmp_path / "p.parquet")]) == 1
    assert "demo world folder not found" in capsys.readouterr().err
    assert main(["plan", campaign, "--world", str(world), "--out", str(tmp_path / "p.xlsx")]) == 1
    assert "unsupported file type" in capsys.readouterr().err
    assert main(["plan", campaign, "--world", str(world), "--customers", "x.csv", "--orders", "y.csv",
                 "--out", str(tmp_path / "p.parquet")]) == 1
    assert "either --world or --customers" in capsys.readouterr().err
