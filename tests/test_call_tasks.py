"""Call tasks that reach a person: contact details from the customer record, never to a manager who left,
names in the customer's locale order, refused without a phone or an e-mail; outcomes imported back."""

from __future__ import annotations

import asyncio
import csv
import json

import pandas as pd
import pytest

from winback.campaigns import build_plan, parse_campaign
from winback.campaigns.plan import display_name
from winback.channels.base import OutboundMessage
from winback.channels.call_task import CallTaskChannel
from winback.channels.dispatch import SendSettings, build_message
from winback.cli import main as winback
from winback.ledger import Ledger
from winback.ledger.decisions import call_outcomes
from winback.measure.run import call_outcome_summary
from winback.policy.contact import apply_contact_policy
from winback.render import Renderer

AS_OF = pd.Timestamp("2026-11-23 15:59:59", tz="UTC")
YAML = """
id: calls
name: calls
channels: [email]
offers: [{id: hello, kind: reminder, template: reminder}]
holdout: {share: 0.0}
human_followup: {rules: [{value_tiers: [platinum]}], no_manager: message%s}
"""


def campaign(fallback: str | None = None):
    return parse_campaign(YAML % (f", fallback_manager: {fallback}" if fallback else ""))


def customer(cid, **kw):
    row = {"customer_id": cid, "email": f"{cid}@example.com", "phone": "+8613800000001", "locale": "zh-CN",
           "timezone": "Asia/Shanghai", "email_opt_in": True, "sms_opt_in": True, "first_name": "芳",
           "last_name": "王", "account_manager": "周若曦", "manager_departed": False, "value_tier": "platinum",
           "lapse_stage": "lapsed", "likely_reason": "manager_left", "expected_order_value": 500.0,
           "last_order_at": AS_OF - pd.Timedelta(days=90), "recency_days": 90}
    row.update(kw)
    return row


def policy(rows, spec):
    return apply_contact_policy(pd.DataFrame(rows), spec, as_of=AS_OF).set_index(pd.Index([r["customer_id"]
                                                                                          for r in rows]))


def test_a_departed_managers_customers_go_to_the_fallback_never_to_the_one_who_left() -> None:
    rows = [customer("a"), customer("b", manager_departed=True)]
    out = policy(rows, campaign(fallback="李雷"))
    assert out.loc["a", "to_address"] == "周若曦"
    assert out.loc["b", "channel"] == "call_task" and out.loc["b", "to_address"] == "李雷"
    assert "周若曦 left" in out.loc["b", "human_followup"]
    queue = policy(rows, campaign())
    assert queue.loc["b", "to_address"] == "team_queue"


def test_a_call_without_phone_or_email_is_refused_and_the_message_goes_instead() -> None:
    rows = [customer("a", phone=None, email=None), customer("b", phone=None, email="b@example.com"),
            customer("c", phone="not a phone", email=None, email_opt_in=False)]
    out = policy(rows, campaign())
    assert out.loc["b", "channel"] == "call_task"  # an e-mail is enough to reach them
    assert pd.isna(out.loc["a", "channel"]) and out.loc["a", "policy_reason"] == "no_address:email"
    assert json.loads(out.loc["a", "policy_checks"])["call_task"] == "no_phone_or_email"
    assert out.loc["a", "human_followup"].startswith("routed, but no_phone_or_email → message instead")


def test_platinum_falling_back_to_a_message_reports_the_real_blocker() -> None:
    rows = [customer("p", account_manager=None, email_opt_in=False)]
    out = policy(rows, campaign())
    assert out.loc["p", "policy_reason"] == "no_consent:email"  # not no_account_manager
    assert out.loc["p", "policy_detail"] == "call_task=no_account_manager; email=no_consent:email"


def test_names_in_the_customers_locale_order() -> None:
    assert display_name("芳", "王", "zh-CN") == "王芳"
    assert display_name("Karen", "Baker", "en-US") == "Karen Baker"
    assert display_name("Karen", None, "en-US") == "Karen"
    assert display_name(None, None, "zh-CN") == ""


def _plan(spec):
    rows = [customer("zh1"), customer("en1", locale="en-US", first_name="Karen", last_name="Baker",
                                    manager_departed=True), customer("x", phone=None, email=None)]
    frame = pd.DataFrame(rows)
    customers = frame[["customer_id", "email", "phone", "locale", "timezone", "email_opt_in", "sms_opt_in",
                       "first_name", "last_name", "account_manager"]]
    segments = frame[["customer_id", "value_tier", "lapse_stage", "likely_reason", "expected_order_value",
                      "last_order_at", "recency_days", "manager_departed"]]
    return build_plan(spec, customers, segments, as_of=AS_OF).set_index("customer_id")


def test_the_plan_carries_how_to_reach_the_customer_and_who_calls() -> None:
    plan = _plan(campaign(fallback="李雷"))
    zh = json.loads(plan.loc["zh1", "context"])["call"]
    assert zh["name"] == "王芳" and zh["phone"] == "+8613800000001" and zh["email"] == "zh1@example.com"
    en = json.loads(plan.loc["en1", "context"])["call"]
    assert en["name"] == "Karen Baker"
    assert plan.loc["en1", "account_manager"] == "李雷" and plan.loc["en1", "manager_of_record"] == "周若曦"
    # No way to call them, and no address for the message either: the message's reason, not the call's.
    assert plan.loc["x", "arm"] == "excluded" and plan.loc["x", "reason"] == "no_address:email"


def test_call_list_rows_have_phone_email_and_name(tmp_path) -> None:
    plan = _plan(campaign(fallback="李雷")).reset_index()
    settings = SendSettings(router=None, renderer=Renderer("templates"))
    channel = CallTaskChannel(tmp_path)
    messages = [build_message(r, settings) for r in plan[plan["channel"] == "call_task"].to_dict("records")]
    results = asyncio.run(channel.send(messages))
    assert [r.status for r in results] == ["accepted", "accepted"]
    files = sorted(p.name for p in (tmp_path / "calls").glob("*.csv"))
    assert files == ["周若曦.csv", "李雷.csv"]  # the departed manager's customer is on the fallback's list
    with (tmp_path / "calls" / "李雷.csv").open(encoding="utf-8-sig", newline="") as fh:
        row = next(csv.DictReader(fh))
    # (A leading + is quoted against spreadsheet formulas by the call list itself.)
    assert (row["customer_name"], row["phone"].lstrip("'"), row["email"]) == \
        ("Karen Baker", "+8613800000001", "en1@example.com")


def test_the_channel_refuses_a_task_nobody_can_act_on(tmp_path) -> None:
    msg = OutboundMessage(key="calls:x:1", channel="call_task", to="周若曦", from_="", text="call",
                          metadata={"customer_name": "王芳", "phone": "", "email": ""})
    [result] = asyncio.run(CallTaskChannel(tmp_path).send([msg]))
    assert result.status == "permanent" and result.reason == "no_phone_or_email"
    assert not list(tmp_path.rglob("*.csv"))


def test_call_outcomes_import_and_show_in_the_measurement(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    plan = _plan(campaign(fallback="李雷")).reset_index()
    with Ledger(url) as ledger:
        ledger.plan(plan, now=AS_OF)
    outcomes = tmp_path / "outcomes.csv"
    # The call list handed back: key, …, outcome and note filled in by the managers (one not called yet).
    pd.DataFrame({"key": ["calls:zh1:1", "calls:en1:1", "calls:x:1"], "outcome": ["won back", "no_answer", None],
                  "note": ["下周来店", "voicemail", None]}).to_csv(outcomes, index=False, encoding="utf-8-sig")
    assert winback(["calls", "import", str(outcomes), "--ledger", url]) == 0
    with Ledger(url) as ledger:
        got = call_outcomes(ledger, "calls").set_index("customer_id")
        rows = ledger.rows("calls")
    assert got.loc["zh1", "outcome"] == "won_back" and got.loc["zh1", "note"] == "下周来店"
    assert got.loc["en1", "outcome"] == "no_answer"
    rows.loc[rows["channel"] == "call_task", "state"] = "sent"
    summary = call_outcome_summary(rows, got.reset_index())
    assert summary == {"tasks": 2, "sent": 2, "reached": 0, "no_answer": 1, "declined": 0, "won_back": 1,
                       "no_outcome": 0}
    # A later report replaces the earlier one for the same task.
    pd.DataFrame({"key": ["calls:en1:1"], "outcome": ["reached"], "note": ["called back"]}).to_csv(outcomes,
                                                                                                    index=False)
    assert winback(["calls", "import", str(outcomes), "--ledger", url]) == 0
    with Ledger(url) as ledger:
        assert call_outcomes(ledger, "calls").set_index("customer_id").loc["en1", "outcome"] == "reached"


def test_a_bad_outcome_is_an_error_naming_the_row(tmp_path, capsys) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"key": ["calls:a:1", "calls:b:1"], "outcome": ["reached", "maybe"]}).to_csv(path, index=False)
    assert winback(["calls", "import", str(path), "--ledger", f"sqlite:///{tmp_path / 'l.db'}"]) == 1
    err = capsys.readouterr().err
    assert "unknown outcome 'maybe'" in err and "row 2" in err


@pytest.mark.parametrize("column", ["outcome", "key"])
def test_an_outcomes_file_needs_its_columns(tmp_path, column) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"key": ["calls:a:1"], "outcome": ["reached"]}).drop(columns=[column]).to_csv(path, index=False)
    assert winback(["calls", "import", str(path), "--ledger", f"sqlite:///{tmp_path / 'l.db'}"]) == 1
