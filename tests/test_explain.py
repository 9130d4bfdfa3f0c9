"""The decision trail: every customer a run evaluates has a decision row in the ledger, and `winback explain`
answers from the ledger alone — outside the audience, excluded, held out, treated."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from test_plan import AS_OF, campaign, population
from winback.campaigns import build_plan
from winback.campaigns.decisions import plan_decisions
from winback.cli import main as winback
from winback.ledger import Ledger
from winback.ledger.decisions import decisions, record_decisions


@pytest.fixture(scope="module")
def persisted(tmp_path_factory):
    customers, segments = population(400, seed=5)
    spec = campaign(budget=300)
    plan = build_plan(spec, customers, segments, as_of=AS_OF)
    url = f"sqlite:///{tmp_path_factory.mktemp('explain') / 'ledger.db'}"
    with Ledger(url) as ledger:
        ledger.plan(plan, now=AS_OF)
        written = record_decisions(ledger, plan_decisions(plan), now=AS_OF)
    return spec, customers, plan, url, written


def _explain(url, customer_id, capsys, *extra):
    assert winback(["explain", customer_id, "--campaign", "plan-test", "--ledger", url, *extra]) == 0
    return capsys.readouterr().out


def test_every_customer_of_the_sources_has_a_decision(persisted) -> None:
    _, customers, plan, url, written = persisted
    assert written == len(customers) > len(plan)  # also those outside the audience
    with Ledger(url) as ledger:
        rows = decisions(ledger, "plan-test")
    assert set(rows["customer_id"]) == set(customers["customer_id"])
    assert (rows["decided_at"] == AS_OF).all()


def test_outside_the_audience(persisted, capsys) -> None:
    _, customers, plan, url, _ = persisted
    out_id = sorted(set(customers["customer_id"]) - set(plan["customer_id"]))[0]
    text = _explain(url, out_id, capsys)
    assert "audience: OUT" in text and "not in [at_risk, lapsing, lapsed]" in text
    trail = json.loads(_explain(url, out_id, capsys, "--json"))
    assert trail["decisions"][0]["in_audience"] is False and trail["ledger"] == []


def test_excluded_held_out_and_treated(persisted, capsys) -> None:
    _, _, plan, url, _ = persisted
    excluded = plan[(plan["arm"] == "excluded") & plan["reason"].str.startswith("no_consent")].iloc[0]
    text = _explain(url, excluded["customer_id"], capsys)
    assert f"arm: excluded ({excluded['reason']})" in text and "policy: " in text and "ledger:" not in text
    held = plan[plan["arm"] == "holdout"].iloc[0]
    text = _explain(url, held["customer_id"], capsys)
    assert "arm: holdout" in text and "ledger: held_out" in text and f"offer: {held['offer']}" in text
    treated = plan[(plan["arm"] == "treatment") & plan["runner_up"].notna()].iloc[0]
    trail = json.loads(_explain(url, treated["customer_id"], capsys, "--json"))
    step = trail["decisions"][0]
    assert step["arm"] == "treatment" and step["offer"] == treated["offer"]
    assert step["runner_up"] == treated["runner_up"]
    assert step["expected_net_value"] == pytest.approx(treated["expected_net_value"])
    assert step["expected_net_value"] >= step["runner_up_net_value"]
    assert step["channel"] == treated["channel"] and step["channel_reason"]
    assert set(step["policy"]) >= {treated["channel"]} and step["human_followup"]
    assert trail["ledger"][0]["state"] == "planned"


def test_routed_platinum_without_a_manager_shows_the_real_blocker(persisted, capsys) -> None:
    _, customers, plan, url, _ = persisted
    merged = plan.merge(customers, on="customer_id")
    stuck = merged[(merged["value_tier"] == "platinum") & merged["account_manager_y"].isna()
                   & (merged["arm"] == "excluded")]
    if stuck.empty:
        pytest.skip("no routed platinum customer without a manager and a message channel in this population")
    row = stuck.iloc[0]
    assert row["reason"] != "no_account_manager"
    text = _explain(url, row["customer_id"], capsys)
    assert "no_account_manager → message instead" in text


def test_a_rerun_keeps_the_decision_behind_a_ledger_row_and_replaces_the_others(persisted, tmp_path) -> None:
    spec, customers, plan, _, _ = persisted
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    later = AS_OF + pd.Timedelta(days=1)
    with Ledger(url) as ledger:
        record_decisions(ledger, plan_decisions(plan), now=AS_OF)
        record_decisions(ledger, plan_decisions(plan), now=later)
        rows = decisions(ledger, "plan-test").set_index("customer_id")
    in_ledger = plan.loc[plan["arm"] != "excluded", "customer_id"]
    assert (rows.loc[in_ledger, "decided_at"] == AS_OF).all()
    left_out = plan.loc[plan["arm"] == "excluded", "customer_id"]
    assert (rows.loc[left_out, "decided_at"] == later).all()


def test_unknown_customer_is_a_clear_error(persisted, capsys) -> None:
    *_, url, _ = persisted
    assert winback(["explain", "nobody", "--campaign", "plan-test", "--ledger", url]) == 1
    assert "no decision about customer 'nobody'" in capsys.readouterr().err
