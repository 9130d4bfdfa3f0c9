"""`winback demo-data` and `winback simulate-returns` through the real CLI and a real SQLite ledger."""

from __future__ import annotations

import json

import pandas as pd

from winback.cli import main
from winback.demo import read_world, true_uplift
from winback.ledger import Ledger, Outcome

SENT = pd.Timestamp("2026-11-24 02:00", tz="UTC")


def _make_world(tmp_path, n=3000, csv=False):
    out = tmp_path / "world"
    args = ["demo-data", "--out", str(out), "--customers", str(n), "--seed", "5", "--as-of", "2026-11-23"]
    assert main(args + (["--csv"] if csv else [])) == 0
    return out


def test_demo_data_writes_the_world_and_prints_a_summary(tmp_path, capsys):
    out = _make_world(tmp_path, n=800, csv=True)
    printed = capsys.readouterr().out
    assert "customers" in printed and "800" in printed and "orders" in printed
    for name in ("customers", "orders", "complaints", "truth"):
        assert (out / f"{name}.parquet").exists() and (out / f"{name}.csv").exists()
    assert (out / "departed_managers.txt").exists()
    world = read_world(out)
    # --as-of DATE is the end of that day in Asia/Shanghai, as everywhere in winback.
    assert world.as_of == pd.Timestamp("2026-11-23 23:59:59.999999", tz="Asia/Shanghai").tz_convert("UTC")
    assert len(world.customers) == 800 and world.seed == 5


def test_demo_data_rejects_bad_options(tmp_path, capsys):
    assert main(["demo-data", "--out", str(tmp_path / "w"), "--customers", "0"]) == 1
    assert "Error:" in capsys.readouterr().err
    assert main(["demo-data", "--out", str(tmp_path / "w"), "--as-of", "not-a-date"]) == 1
    assert "Error:" in capsys.readouterr().err


def _plan(world_dir, campaign="winter") -> pd.DataFrame:
    truth = pd.read_parquet(world_dir / "truth.parquet")
    ids = truth.loc[~truth["alive"], "customer_id"].iloc[:1200].reset_index(drop=True)
    arm = pd.Series(["holdout" if i % 5 == 0 else "treatment" for i in range(len(ids))])
    return pd.DataFrame({
        "campaign_id": campaign, "customer_id": ids, "step": 1, "arm": arm, "reason": "lapsed",
        "channel": "email", "to_address": ids + "@example.com", "send_at_utc": SENT,
        "send_at_local": "2026-11-24T10:00:00+08:00", "timezone": "Asia/Shanghai", "locale": "zh-CN",
        "offer": "pct20", "offer_kind": "percent_off", "expected_cost": 5.0, "expected_net_value": 10.0,
        "p_return": 0.05, "template": "winback_percent", "coupon_code": "WB-" + ids,
        "value_tier": "gold", "lapse_stage": "lapsed", "likely_reason": "forgotten", "account_manager": None,
        "context": json.dumps({"offer": {"percent": 20}}), "as_of": SENT - pd.Timedelta(hours=8),
    })


def test_simulate_returns_reads_the_ledger_and_appends_orders_idempotently(tmp_path, capsys):
    out = _make_world(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    plan = _plan(out)
    with Ledger(url) as ledger:
        assert ledger.plan(plan, now=SENT - pd.Timedelta(hours=1)) == len(plan)
        claimed = ledger.claim("winter", now=SENT, limit=10_000)
        outcomes = [Outcome("winter", cid, 1, "sent" if i % 10 else "failed", provider="emulator")
                    for i, cid in enumerate(claimed["customer_id"])]
        ledger.record(outcomes, claim_token=claimed.attrs["claim_token"], now=SENT)
    history = pd.read_parquet(out / "orders.parquet")
    capsys.readouterr()

    args = ["simulate-returns", "--campaign", "winter", "--world", str(out), "--ledger", url, "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    first = pd.read_parquet(out / "orders.parquet")
    sim = first[first["order_id"].str.startswith("SIM-winter-")]
    assert summary["new_orders"] == len(sim) > 0 and summary["replaced_orders"] == 0
    assert len(first) == len(history) + len(sim)
    assert summary["arms"]["treatment"]["customers"] == (plan["arm"] == "treatment").sum()
    assert summary["arms"]["holdout"]["contacted"] == 0
    assert (sim["ordered_at"] > SENT).all() and (sim["ordered_at"] < SENT + pd.Timedelta(days=30)).all()
    coupons = sim.dropna(subset=["coupon_code"])
    assert len(coupons) > 0
    holdout_ids = set(plan.loc[plan["arm"] == "holdout", "customer_id"])
    assert not set(coupons["customer_id"]) & holdout_ids
    # The 20% from the ledger's context is the discount on redeemed coupons.
    assert ((coupons["discount"] / (coupons["amount"] + coupons["discount"])).round(2) == 0.20).all()
    assert str(first["ordered_at"].dtype) == "datetime64[ns, UTC]"

    assert main(args) == 0  # a re-run replaces the campaign's simulated orders
    again = json.loads(capsys.readouterr().out)
    second = pd.read_parquet(out / "orders.parquet")
    assert again["replaced_orders"] == len(sim)
    pd.testing.assert_frame_equal(first, second)

    truth = pd.read_parquet(out / "truth.parquet")
    treated = plan[plan["arm"] == "treatment"]
    assert 0 < true_uplift(truth, treated) < 0.2


def test_simulate_returns_errors_are_clear(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main(["simulate-returns", "--campaign", "x", "--world", str(tmp_path / "none"), "--ledger", url]) == 1
    assert "not found" in capsys.readouterr().err
    out = _make_world(tmp_path, n=300)
    capsys.readouterr()
    assert main(["simulate-returns", "--campaign", "nope", "--world", str(out), "--ledger", url]) == 1
    assert "no rows for campaign 'nope'" in capsys.readouterr().err
