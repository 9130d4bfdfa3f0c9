"""Contact policy on literal frames: every exclusion reason, the order of checks, channel fallback."""

from __future__ import annotations

import pandas as pd
import pytest

from winback.campaigns import parse_campaign
from winback.policy import apply_contact_policy, ordered_since, route_to_call

AS_OF = pd.Timestamp("2026-11-23 12:00", tz="UTC")
CAMPAIGN = parse_campaign("""
id: c1
name: test
channels: [email, sms]
offers: [{id: r, kind: reminder, template: reminder}]
policy:
  frequency_caps:
    email: {max_messages: 2, per_days: 14}
    sms: {max_messages: 1, per_days: 14}
  min_days_since_last_order: 14
human_followup:
  rules: [{value_tiers: [platinum]}, {value_tiers: [gold], complaint_open: true}]
  no_manager: exclude
""")


def customer(cid: str, **overrides) -> dict:
    row = {"customer_id": cid, "email": f"{cid}@example.com", "phone": "+8613800000000",
           "email_opt_in": True, "sms_opt_in": True, "account_manager": pd.NA, "value_tier": "iron",
           "lapse_stage": "lapsing", "likely_reason": "forgotten", "complaint_open": False,
           "last_order_at": AS_OF - pd.Timedelta(days=100)}
    row.update(overrides)
    return row


def run(rows: list[dict], **kwargs) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["last_order_at"] = pd.to_datetime(frame["last_order_at"], utc=True)
    out = apply_contact_policy(frame, CAMPAIGN, as_of=AS_OF, **kwargs)
    return out.set_index(frame["customer_id"])


def test_allowed_customer_gets_first_preferred_channel() -> None:
    out = run([customer("a")])
    assert out.loc["a", "channel"] == "email" and out.loc["a", "to_address"] == "a@example.com"
    assert pd.isna(out.loc["a", "policy_reason"])


def test_no_email_consent_falls_back_to_sms() -> None:
    out = run([customer("a", email_opt_in=False)])
    assert out.loc["a", "channel"] == "sms" and out.loc["a", "to_address"] == "+8613800000000"
    assert out.loc["a", "policy_detail"] == "email=no_consent:email"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"email_opt_in": False, "sms_opt_in": False}, "no_consent:email"),
        ({"email": None, "phone": None}, "no_address:email"),
        ({"email": "not-an-email", "phone": "12345"}, "invalid_address:email"),
        ({"last_order_at": AS_OF - pd.Timedelta(days=3)}, "ordered_recently"),
    ],
)
def test_each_exclusion_reason(overrides: dict, reason: str) -> None:
    out = run([customer("a", **overrides)])
    assert pd.isna(out.loc["a", "channel"])
    assert out.loc["a", "policy_reason"] == reason


def test_suppression_by_customer_and_by_address() -> None:
    suppressions = pd.DataFrame({
        "customer_id": ["a", None, "c"], "channel": ["email", "email", None],
        "address": [None, "B@Example.com", None], "reason": ["unsubscribed", "bounced", "complained"],
        "created_at": [AS_OF] * 3})
    out = run([customer("a", sms_opt_in=False), customer("b", sms_opt_in=False), customer("c")],
              suppressions=suppressions)
    assert out.loc["a", "policy_reason"] == "suppressed:unsubscribed"
    assert out.loc["b", "policy_reason"] == "suppressed:bounced"  # address match, case-insensitive
    # A suppression without a channel covers every channel.
    assert out.loc["c", "policy_reason"] == "suppressed:complained"
    assert out.loc["c", "policy_detail"] == "email=suppressed:complained; sms=suppressed:complained"


def test_order_of_checks_consent_before_suppression_before_address() -> None:
    suppressions = pd.DataFrame({"customer_id": ["a", "b"], "channel": ["email", "email"], "address": [None, None],
                                 "reason": ["unsubscribed", "unsubscribed"], "created_at": [AS_OF] * 2})
    out = run([customer("a", email_opt_in=False, email=None, sms_opt_in=False),
               customer("b", email=None, sms_opt_in=False)], suppressions=suppressions)
    assert out.loc["a", "policy_reason"] == "no_consent:email"
    assert out.loc["b", "policy_reason"] == "suppressed:unsubscribed"


def test_frequency_cap_counts_other_campaigns_within_the_window() -> None:
    history = pd.DataFrame({
        "customer_id": ["a", "a", "b", "b", "c", "c"],
        "channel": ["email", "email", "email", "email", "email", "email"],
        "sent_at": [AS_OF - pd.Timedelta(days=d) for d in (1, 5, 1, 20, 1, 2)],
        "campaign_id": ["other", "other2", "other", "other", "c1", "c1"]})
    out = run([customer("a", sms_opt_in=False), customer("b", sms_opt_in=False), customer("c", sms_opt_in=False)],
              contact_history=history)
    assert out.loc["a", "policy_reason"] == "frequency_cap"
    assert out.loc["b", "channel"] == "email"  # one contact in 14 days, the other is older
    assert out.loc["c", "channel"] == "email"  # the campaign's own cadence does not count by default


def test_frequency_cap_is_per_channel() -> None:
    history = pd.DataFrame({"customer_id": ["a", "a"], "channel": ["email", "email"],
                            "sent_at": [AS_OF - pd.Timedelta(days=1)] * 2, "campaign_id": ["x", "y"]})
    out = run([customer("a")], contact_history=history)
    assert out.loc["a", "channel"] == "sms"
    assert out.loc["a", "policy_detail"] == "email=frequency_cap"


def test_human_followup_routing_and_missing_manager() -> None:
    rows = [customer("p", value_tier="platinum", account_manager="王经理"),
            customer("g", value_tier="gold", complaint_open=True, account_manager="Ann"),
            customer("g2", value_tier="gold", complaint_open=False, account_manager="Ann"),
            customer("p2", value_tier="platinum")]
    out = run(rows)
    assert out.loc["p", "channel"] == "call_task" and out.loc["p", "to_address"] == "王经理"
    assert out.loc["g", "channel"] == "call_task"
    assert out.loc["g2", "channel"] == "email"
    assert out.loc["p2", "policy_reason"] == "no_account_manager"  # no_manager: exclude
    fallback = CAMPAIGN.model_copy(update={"human_followup": CAMPAIGN.human_followup.model_copy(
        update={"no_manager": "message"})})
    frame = pd.DataFrame(rows)
    assert list(route_to_call(frame, fallback)) == [True, True, False, True]
    res = apply_contact_policy(frame, fallback, as_of=AS_OF)
    assert list(res["channel"]) == ["call_task", "call_task", "email", "email"]


def test_ordered_since() -> None:
    orders = pd.DataFrame({"customer_id": ["a", "b"], "ordered_at": pd.to_datetime(
        ["2026-11-25", "2026-11-20"], utc=True)})
    ids = pd.Series(["a", "b", "c"])
    since = pd.Series(pd.to_datetime(["2026-11-24"] * 3, utc=True))
    assert list(ordered_since(ids, since, orders)) == [True, False, False]
