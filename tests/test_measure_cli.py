"""`winback measure` end to end over a real SQLite ledger: figures, artifacts, stored offer results."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from winback.cli import main

T = pd.Timestamp


def _plan() -> pd.DataFrame:
    ctx = json.dumps({"offer": {"kind": "percent_off", "percent": 20}})
    rows = []
    for cid, arm, tier in [("A", "treatment", "gold"), ("B", "treatment", "gold"), ("C", "treatment", "iron"),
                           ("D", "holdout", "gold"), ("E", "holdout", "iron"), ("F", "holdout", "gold")]:
        rows.append({
            "campaign_id": "spring", "customer_id": cid, "step": 1, "arm": arm, "channel": "email",
            "to_address": f"{cid.lower()}@example.com", "send_at_utc": T("2026-03-01 01:00", tz="UTC"),
            "offer": "pct20", "offer_kind": "percent_off", "expected_cost": 3.0, "coupon_code": f"WB-{cid}",
            "value_tier": tier, "lapse_stage": "lapsed", "likely_reason": "price", "context": ctx,
            "template": "winback", "locale": "en-US", "timezone": "UTC",
        })
    return pd.DataFrame(rows)


@pytest.fixture()
def world(tmp_path):
    from winback.ledger import Ledger, Outcome

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as ledger:
        assert ledger.plan(_plan(), now=T("2026-02-28", tz="UTC")) == 6
        claimed = ledger.claim("spring", now=T("2026-03-01 02:00", tz="UTC"), limit=10)
        token = claimed.attrs["claim_token"]
        ledger.record([Outcome("spring", "A", 1, "sent", "emulator", "m-A"),
                       Outcome("spring", "C", 1, "sent", "emulator", "m-C")],
                      claim_token=token, now=T("2026-03-01 02:00", tz="UTC"))
        ledger.record([Outcome("spring", "B", 1, "failed", "emulator", None, "bounced")],
                      claim_token=token, now=T("2026-03-01 02:00", tz="UTC"))
    orders = pd.DataFrame({
        "order_id": ["o1", "o2", "o3", "o4", "o5"],
        "customer_id": ["A", "A", "B", "D", "E"],
        "ordered_at": pd.to_datetime(["2026-03-01 01:30", "2026-03-05 00:00", "2026-03-10 00:00", "2026-03-20 00:00",
                                      "2026-04-15 00:00"]).tz_localize("UTC"),
        "amount": [40.0, 100.0, 60.0, 80.0, 50.0],
        "coupon_code": ["WB-A", "WB-A", None, None, None],
        "discount": [0.0, 0.0, 0.0, 0.0, 0.0],
    })
    path = tmp_path / "orders.parquet"
    orders.to_parquet(path)
    return url, path, tmp_path


def test_measure_json_and_artifacts(world, capsys):
    url, orders, tmp = world
    out_dir = tmp / "report"
    code = main(["measure", "spring", "--ledger", url, "--orders", str(orders), "--window-days", "30",
                 "--as-of", "2026-05-01", "--out", str(out_dir), "--json"])
    assert code == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out)
    # A: o1 at 01:30 is before A's real send (02:00) → not counted; o2 counts with the coupon (20% × 100).
    # B: failed, still treated (ITT), returned. D: holdout, returned. E: order 45 days later → outside.
    assert got["campaign_id"] == "spring"
    t, h = got["arms"]["treatment"], got["arms"]["holdout"]
    assert (t["n"], t["returned"], t["revenue"]) == (3, 2, 160.0)
    assert (h["n"], h["returned"], h["revenue"]) == (3, 1, 80.0)
    assert t["return_rate"] == pytest.approx(2 / 3) and h["return_rate"] == pytest.approx(1 / 3)
    assert got["offer_cost"] == pytest.approx(20.0)
    assert got["net_incremental_value"] == pytest.approx((160 / 3 - 80 / 3) * 3 - 20)
    assert got["roi"] == pytest.approx(60 / 20)
    assert got["delivery"]["delivery_rate"] == pytest.approx(2 / 3)
    for key in ("diff", "ci_low", "ci_high", "p_value"):
        assert key in got["uplift"]["return_rate"] and key in got["uplift"]["revenue_per_customer"]
    assert got["by_offer"][0]["offer"] == "pct20"
    assert got["offer_results_saved"] == 2
    for name in ("report.md", "measure.csv", "measure.parquet", "return_curve.png", "uplift_by_offer.png",
                 "measure.json"):
        assert (out_dir / name).stat().st_size > 0
    assert (out_dir / "return_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out_dir / "report.md").read_text()
    assert "Holm" in report and "Newcombe" in report
    table = pd.read_parquet(out_dir / "measure.parquet")
    assert {"overall", "offer", "value_tier", "step"} <= set(table["dimension"])


def test_offer_results_feed_the_learner(world, capsys):
    import numpy as np

    from winback.ledger import Ledger
    from winback.measure.learning import ThompsonLearner
    from winback.offers.learning import Learner

    url, orders, _ = world
    assert main(["measure", "spring", "--ledger", url, "--orders", str(orders), "--as-of", "2026-05-01",
                 "--json"]) == 0
    with Ledger(url) as ledger:
        stored = ledger.offer_results().set_index("value_tier")
        assert stored.loc["gold", ["n_treated", "returned_treated", "n_holdout", "returned_holdout"]].tolist() == \
            [2, 2, 2, 1]
        learner = ThompsonLearner.from_ledger(ledger)
    assert isinstance(learner, Learner)
    assert learner.sample_uplift("percent_off", "gold", np.random.default_rng(0)) is not None
    assert learner.sample_uplift("amount_off", "gold", np.random.default_rng(0)) is None


def test_human_table(world, capsys):
    url, orders, _ = world
    assert main(["measure", "spring", "--ledger", url, "--orders", str(orders), "--as-of", "2026-05-01",
                 "--no-learn"]) == 0
    out = capsys.readouterr().out
    assert "Treatment" in out and "Holdout" in out and "ROI" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--orders", "{orders}"], "no campaign 'nope' in the ledger; known: spring"),
        (["spring", "--orders", "{orders}", "--window-days", "0"], "--window-days"),
        (["spring"], "no orders to measure against"),
        (["spring", "--orders", "{tmp}/missing.parquet"], "file not found"),
        (["spring", "--world", "{tmp}"], "no orders.parquet or orders.csv"),
        (["spring", "--orders", "{orders}", "--as-of", "someday"], "--as-of"),
    ],
)
def test_measure_errors(world, capsys, args, message):
    url, orders, tmp = world
    (tmp / "orders.parquet").rename(tmp / "orders_moved.parquet") if "--world" in args else None
    orders = tmp / "orders_moved.parquet" if "--world" in args else orders
    argv = ["measure", *[a.format(orders=orders, tmp=tmp) for a in args], "--ledger", url]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Error:" in err and message in err
