"""build_plan / plan_followup / plan_summary on literal frames shaped per docs/CONTRACTS.md."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winback.campaigns import PLAN_COLUMNS, build_plan, parse_campaign, plan_followup, plan_summary
from winback.errors import DataError

AS_OF = pd.Timestamp("2026-11-23 15:59:59", tz="UTC")  # end of 23 Nov in Shanghai
CAMPAIGN_YAML = """
id: plan-test
name: 老客回流
budget: {budget}
holdout: {{share: {share}, stratify_by: value_tier}}
channels: [email, sms]
offers:
  - {{id: hello, kind: reminder, template: reminder}}
  - {{id: pct15, kind: percent_off, percent: 15, template: percent_off, title: {{zh-CN: 专属85折, en-US: 15% off}}}}
  - {{id: save50, kind: amount_off, amount: 50, min_spend: 300, template: amount_off, cap: 200}}
  - {{id: sorry, kind: service_recovery, survey_url: "https://survey.example/s", template: service_recovery}}
  - {{id: bday, kind: birthday_gift, gift_cost: 30, template: birthday_gift}}
human_followup: {{rules: [{{value_tiers: [platinum]}}, {{value_tiers: [gold], complaint_open: true}}]}}
coupons: {{length: 10, prefix: WB, group: 5}}
cadence:
  - {{step: 1, day: 0}}
  - {{step: 2, day: 3, channel: sms}}
  - {{step: 3, day: 10, offer: pct15}}
seed: 7
"""


def campaign(budget: float | str = "null", share: float = 0.1):
    return parse_campaign(CAMPAIGN_YAML.format(budget=budget, share=share))


def population(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers and segments shaped like winback.sources / winback.segments output."""
    rng = np.random.default_rng(seed)
    ids = [f"C{seed}-{i:05d}" for i in range(n)]
    customers = pd.DataFrame({
        "customer_id": ids,
        "email": pd.array([f"u{i}@example.com" if rng.random() > 0.05 else None for i in range(n)], dtype="string"),
        "phone": pd.array([f"+8613{i:09d}" if rng.random() > 0.3 else None for i in range(n)], dtype="string"),
        "locale": rng.choice(["zh-CN", "en-US", "zh-TW"], n),
        "timezone": rng.choice(["Asia/Shanghai", "America/Los_Angeles", "America/New_York"], n),
        "email_opt_in": rng.random(n) < 0.8, "sms_opt_in": rng.random(n) < 0.5,
        "first_name": "小明", "last_name": "王",
        "birthday": pd.to_datetime(rng.choice(["1990-11-25", "1988-05-01"], n)),
        "account_manager": pd.array([None if rng.random() < 0.2 else "李经理" for _ in range(n)], dtype="string"),
        "member_level": rng.choice(["A", "B"], n),
    })
    segments = pd.DataFrame({
        "customer_id": ids,
        "value_tier": rng.choice(["platinum", "gold", "iron", "lead"], n, p=[0.05, 0.15, 0.4, 0.4]),
        "lapse_stage": rng.choice(["active", "at_risk", "lapsing", "lapsed", "lost"], n),
        "likely_reason": rng.choice(["service", "price", "manager_left", "competitor", "forgotten"], n),
        "expected_order_value": rng.gamma(2.0, 150.0, n), "monetary": rng.gamma(2.0, 150.0, n),
        "total_spend": rng.gamma(2.0, 1500.0, n), "n_orders": rng.integers(1, 30, n),
        "last_order_at": AS_OF - pd.to_timedelta(rng.integers(2, 400, n), unit="D"),
        "recency_days": 100.0, "complaint_open": rng.random(n) < 0.1, "top_category": "茶叶",
        "p_alive": rng.random(n),
    })
    return customers, segments


@pytest.fixture(scope="module")
def small():
    customers, segments = population(1000, seed=1)
    spec = campaign(budget=1000)  # binds: the plan without a budget costs about 1,500
    return spec, customers, segments, build_plan(spec, customers, segments, as_of=AS_OF)


def test_plan_columns_and_one_row_per_audience_customer(small) -> None:
    spec, customers, segments, plan = small
    assert list(plan.columns[: len(PLAN_COLUMNS)]) == PLAN_COLUMNS
    in_audience = segments["lapse_stage"].isin(spec.audience.lapse_stages)
    assert sorted(plan["customer_id"]) == sorted(segments.loc[in_audience, "customer_id"])
    assert plan["customer_id"].is_unique
    assert set(plan["arm"]) <= {"treatment", "holdout", "excluded"}
    assert (plan["step"] == 1).all() and (plan["campaign_id"] == "plan-test").all()
    assert str(plan["send_at_utc"].dtype) == "datetime64[ns, UTC]"


def test_treatment_rows_are_complete(small) -> None:
    _, _, _, plan = small
    treat = plan[plan["arm"] == "treatment"]
    assert len(treat) > 100
    for column in ("channel", "to_address", "send_at_utc", "send_at_local", "offer", "template", "context"):
        assert treat[column].notna().all(), column
    coupon_rows = treat[treat["offer_kind"].isin(["percent_off", "amount_off", "birthday_gift"])]
    assert coupon_rows["coupon_code"].notna().all() and coupon_rows["coupon_code"].is_unique
    assert coupon_rows["coupon_code"].str.match(r"^WB-[2-9A-HJ-NP-Z]{5}-[2-9A-HJ-NP-Z]{5}$").all()
    assert treat.loc[treat["offer_kind"].isin(["reminder", "service_recovery"]), "coupon_code"].isna().all()
    assert (treat["expected_net_value"] > 0).all()


def test_holdout_rows_carry_what_they_would_have_had_but_no_code(small) -> None:
    _, _, _, plan = small
    held = plan[plan["arm"] == "holdout"]
    assert len(held) > 20
    assert held["channel"].notna().all() and held["send_at_utc"].notna().all() and held["offer"].notna().all()
    assert held["coupon_code"].isna().all()
    assert (held["reason"] == "holdout").all()


def test_excluded_rows_say_why(small) -> None:
    _, _, _, plan = small
    excluded = plan[plan["arm"] == "excluded"]
    assert excluded["reason"].notna().all()
    assert excluded["send_at_utc"].isna().all() and excluded["coupon_code"].isna().all()
    reasons = set(excluded["reason"].str.split(":").str[0])
    assert reasons <= {"no_consent", "suppressed", "no_address", "invalid_address", "frequency_cap",
                       "ordered_recently", "no_account_manager", "no_eligible_offer", "negative_value",
                       "offer_cap", "budget"}
    assert {"no_consent", "ordered_recently", "budget"} <= reasons


def test_send_times_respect_quiet_hours_in_local_time(small) -> None:
    _, _, _, plan = small
    sent = plan[plan["arm"] != "excluded"]
    for row in sent.itertuples():
        local = row.send_at_utc.tz_convert(row.timezone)
        start, end = {"sms": (10, 20), "call_task": (9.5, 18)}.get(row.channel, (9, 21))
        hour = local.hour + local.minute / 60
        assert start <= hour < end, (row.channel, local)
        assert row.send_at_local == local.isoformat()
        assert row.send_at_utc >= AS_OF


def test_context_json_per_contract(small) -> None:
    spec, _, _, plan = small
    row = plan[(plan["arm"] == "treatment") & (plan["offer"] == "pct15")].iloc[0]
    ctx = json.loads(row["context"])
    assert set(ctx) >= {"customer", "offer", "coupon_code", "history", "brand", "survey_url", "step"}
    assert ctx["customer"]["customer_id"] == row["customer_id"]
    assert ctx["customer"]["member_level"] in ("A", "B")  # extras travel along
    assert "email" not in ctx["customer"] and "phone" not in ctx["customer"]
    assert ctx["offer"]["percent"] == 15 and ctx["offer"]["currency"] == "CNY"
    assert ctx["offer"]["title"] == ("专属85折" if row["locale"].startswith("zh") else "15% off")
    assert ctx["offer"]["expires_at"] > row["send_at_local"][:10]
    assert ctx["coupon_code"] == row["coupon_code"]
    assert ctx["history"]["days_since_last_order"] >= 0 and ctx["step"] == 1
    sorry = plan[(plan["arm"] == "treatment") & (plan["offer"] == "sorry")]
    if len(sorry):
        assert json.loads(sorry.iloc[0]["context"])["survey_url"] == "https://survey.example/s"


def test_call_tasks_carry_manager_history_and_talking_point(small) -> None:
    _, _, segments, plan = small
    calls = plan[(plan["channel"] == "call_task") & (plan["arm"] != "excluded")]
    assert len(calls) > 0
    assert (calls["to_address"] == "李经理").all()
    assert (calls[calls["arm"] == "treatment"]["reason"] == "human_followup").all()
    tiers = calls["value_tier"].tolist()
    assert set(tiers) <= {"platinum", "gold"}
    assert calls["call_history"].notna().all() and calls["talking_point"].notna().all()
    ctx = json.loads(calls.iloc[0]["context"])
    assert ctx["call"]["talking_point"] == calls.iloc[0]["talking_point"]
    zh = calls[calls["locale"].str.startswith("zh")]
    if len(zh):
        assert "上次下单" in zh.iloc[0]["call_history"]


def test_budget_binds_keeps_what_costs_nothing_and_moves_the_rest_to_a_free_offer(small) -> None:
    spec, _, _, plan = small
    treat = plan[plan["arm"] == "treatment"]
    assert treat["expected_cost"].sum() <= spec.budget
    moved = plan[plan["budget_note"].str.startswith("over budget: ").fillna(False)]
    assert len(moved) > 0 and (moved["expected_cost"] == 0).all()
    assert set(moved["arm"]) == {"treatment", "holdout"}  # both arms lose the same kind of customer
    assert moved.loc[moved["arm"] == "treatment", "reason"].isin(["budget_free_offer", "human_followup"]).all()
    dropped = plan[plan["reason"] == "budget"]
    assert (dropped["arm"] == "excluded").all()
    # Whatever costs nothing is never cut by the budget.
    unbudgeted = build_plan(campaign(), *small[1:3], as_of=AS_OF)
    free = unbudgeted[(unbudgeted["arm"] != "excluded") & (unbudgeted["expected_cost"] == 0)]
    assert not plan.set_index("customer_id").loc[free["customer_id"], "reason"].eq("budget").any()


def test_suppressed_and_frequency_capped_are_excluded() -> None:
    customers, segments = population(300, seed=3)
    plan0 = build_plan(campaign(), customers, segments, as_of=AS_OF)
    target = plan0[plan0["arm"] == "treatment"].head(2)
    a, b = target["customer_id"].tolist()
    suppressions = pd.DataFrame({"customer_id": [a], "channel": [None], "address": [None],
                                 "reason": ["unsubscribed"], "created_at": [AS_OF]})
    history = pd.DataFrame({"customer_id": [b] * 4, "channel": ["email", "email", "sms", "sms"],
                            "sent_at": [AS_OF - pd.Timedelta(days=1)] * 4, "campaign_id": ["x"] * 4})
    plan = build_plan(campaign(), customers, segments, as_of=AS_OF, suppressions=suppressions,
                      contact_history=history).set_index("customer_id")
    assert plan.loc[a, "arm"] == "excluded" and plan.loc[a, "reason"] == "suppressed:unsubscribed"
    assert plan.loc[b, "arm"] == "excluded" and plan.loc[b, "reason"] == "frequency_cap"


def test_bad_inputs_are_named() -> None:
    customers, segments = population(10)
    with pytest.raises(DataError, match="segments.*likely_reason"):
        build_plan(campaign(), customers, segments.drop(columns=["likely_reason"]), as_of=AS_OF)
    with pytest.raises(DataError, match="customers.*appears more than once"):
        build_plan(campaign(), pd.concat([customers, customers.head(1)]), segments, as_of=AS_OF)
    with pytest.raises(DataError, match="1 customer\\(s\\) are not in segments"):
        build_plan(campaign(), customers, segments.iloc[1:], as_of=AS_OF)


def test_empty_audience_gives_an_empty_plan_with_the_columns() -> None:
    customers, segments = population(20)
    segments["lapse_stage"] = "active"  # nobody slipping
    plan = build_plan(campaign(), customers, segments, as_of=AS_OF)
    assert plan.empty and list(plan.columns[: len(PLAN_COLUMNS)]) == PLAN_COLUMNS
    summary = plan_summary(plan, campaign())
    assert summary.audience == 0 and summary.expected_cost == 0


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=40, max_value=250), st.integers(0, 10_000), st.floats(0.05, 0.5),
       st.sampled_from(["null", 500, 3000]))
def test_properties_consent_suppression_stability_budget(n: int, seed: int, share: float, budget) -> None:
    customers, segments = population(n, seed=seed)
    spec = campaign(budget=budget, share=round(share, 3))
    rng = np.random.default_rng(seed)
    sup_ids = rng.choice(customers["customer_id"], size=max(1, n // 10), replace=False)
    suppressions = pd.DataFrame({"customer_id": sup_ids, "channel": rng.choice(["email", "sms", None], len(sup_ids)),
                                 "address": None, "reason": "unsubscribed", "created_at": AS_OF})
    plan = build_plan(spec, customers, segments, as_of=AS_OF, suppressions=suppressions)
    merged = plan.merge(customers, on="customer_id", suffixes=("", "_c"))
    treat = merged[merged["arm"] == "treatment"]
    # Nobody without consent for their channel, and nobody suppressed on it, is ever treated.
    assert not ((treat["channel"] == "email") & ~treat["email_opt_in"]).any()
    assert not ((treat["channel"] == "sms") & ~treat["sms_opt_in"]).any()
    blocked = {(c, ch) for c, ch in zip(suppressions["customer_id"], suppressions["channel"], strict=True)}
    for cid, ch in zip(treat["customer_id"], treat["channel"], strict=True):
        assert (cid, ch) not in blocked and (cid, None) not in blocked
    # Budget never exceeded.
    if spec.budget is not None:
        assert plan.loc[plan["arm"] == "treatment", "expected_cost"].sum() <= spec.budget + 1e-6
    # Arms are stable across re-runs and under row reordering.
    perm = rng.permutation(n)
    again = build_plan(spec, customers.iloc[perm], segments.iloc[rng.permutation(n)], as_of=AS_OF,
                       suppressions=suppressions.iloc[::-1])
    cols = ["customer_id", "arm", "reason", "channel", "offer", "send_at_utc"]
    pd.testing.assert_frame_equal(plan[cols], again[cols])
    # Codes are unique.
    codes = plan["coupon_code"].dropna()
    assert codes.is_unique


def test_followup_exit_on_return_and_cadence_channel(small) -> None:
    spec, customers, segments, plan = small
    treat = plan[(plan["arm"] == "treatment") & (plan["channel"] != "call_task")]
    returned = treat["customer_id"].iloc[0]
    orders = pd.DataFrame({"order_id": ["o1"], "customer_id": [returned],
                           "ordered_at": [AS_OF + pd.Timedelta(days=1)], "amount": [120.0]})
    # Not yet due two days later: nothing planned.
    early = plan_followup(spec, 2, plan, customers, orders, now=AS_OF + pd.Timedelta(days=2), segments=segments)
    assert early.empty
    now = AS_OF + pd.Timedelta(days=4)
    step2 = plan_followup(spec, 2, plan, customers, orders, now=now, segments=segments).set_index("customer_id")
    assert step2.loc[returned, "arm"] == "excluded" and step2.loc[returned, "reason"] == "returned"
    live = step2[step2["arm"] == "treatment"]
    assert len(live) > 0 and (live["channel"] == "sms").all()  # the step's own channel
    assert (live["step"] == 2).all() and (live["send_at_utc"] >= now).all()
    assert set(live.index) <= set(treat["customer_id"])
    # Same offer as step 1 → same coupon code.
    prev = plan.set_index("customer_id")
    same = live[live["coupon_code"].notna()]
    assert (same["coupon_code"] == prev.loc[same.index, "coupon_code"]).all()
    # Holdout customers get held-out rows for the step too.
    held = step2[step2["arm"] == "holdout"]
    assert len(held) > 0 and set(held.index) <= set(plan.loc[plan["arm"] == "holdout", "customer_id"])
    # Call-task customers have no message cadence.
    assert not set(step2.index) & set(plan.loc[plan["channel"] == "call_task", "customer_id"])
    # Planned rows of step 2 are not planned again.
    again = plan_followup(spec, 2, pd.concat([plan, step2.reset_index()]), customers, orders, now=now,
                          segments=segments)
    assert again.empty


def test_followup_final_offer_gets_new_unique_codes(small) -> None:
    spec, customers, segments, plan = small
    now2 = AS_OF + pd.Timedelta(days=4)
    step2 = plan_followup(spec, 2, plan, customers, None, now=now2, segments=segments)
    sent = step2.assign(sent_at=step2["send_at_utc"], state="sent")
    step3 = plan_followup(spec, 3, pd.concat([plan, sent]), customers, None,
                          now=AS_OF + pd.Timedelta(days=12), segments=segments)
    live = step3[step3["arm"] == "treatment"]
    assert len(live) > 0
    changed = live[live["offer"] == "pct15"]
    assert changed["coupon_code"].notna().all()
    # A code belongs to one customer: re-used only by the same customer for the same offer.
    pairs = pd.concat([f[["customer_id", "coupon_code"]] for f in (plan, step2, step3)]).dropna()
    assert pairs.drop_duplicates()["coupon_code"].is_unique
    prev = plan.set_index("customer_id")["offer"]
    switched = changed[prev.loc[changed["customer_id"]].to_numpy() != "pct15"]
    assert len(switched) > 0 and not switched["coupon_code"].isin(plan["coupon_code"].dropna()).any()


def test_followup_rejects_unknown_step(small) -> None:
    spec, customers, _, plan = small
    with pytest.raises(DataError, match="no cadence step 9"):
        plan_followup(spec, 9, plan, customers, None, now=AS_OF)


def test_summary_counts_and_markdown(small) -> None:
    spec, _, _, plan = small
    summary = plan_summary(plan, spec)
    assert sum(summary.by_arm.values()) == summary.audience == len(plan)
    assert summary.by_reason["customers"].sum() == len(plan)
    assert summary.expected_cost <= spec.budget
    assert int(summary.offers_by_tier.to_numpy().sum()) == summary.by_arm["treatment"]
    md = summary.to_markdown()
    assert "# Plan · plan-test" in md and "budget" in md
    assert summary.power is not None and not summary.power.ok  # ~100 held out cannot see 2 points
    assert "holdout too small" in summary.power.message
    assert json.dumps(summary.to_dict(), default=str)


def test_followup_from_ledger_like_rows_without_segments(small) -> None:
    """The dispatch flow passes ledger rows (with state/sent_at) and orders, no segments."""
    spec, customers, _, plan = small
    prior = plan[plan["arm"] != "excluded"].copy()
    prior["state"] = prior["arm"].map({"treatment": "sent", "holdout": "held_out"})
    not_sent = prior.index[prior["arm"] == "treatment"][:3]
    prior.loc[not_sent, "state"] = "failed"
    prior["sent_at"] = prior["send_at_utc"].where(prior["state"] == "sent")
    ids = prior["customer_id"].tolist()
    orders = pd.DataFrame({"order_id": [f"o{i}" for i in range(len(ids))], "customer_id": ids,
                           "ordered_at": AS_OF - pd.Timedelta(days=60), "amount": 88.0})
    rows = plan_followup(spec, 2, prior, customers, orders, now=AS_OF + pd.Timedelta(days=5)).set_index("customer_id")
    failed = prior.loc[not_sent, "customer_id"]
    assert (rows.loc[rows.index.intersection(failed), "reason"] == "previous_step_not_sent").all()
    live = rows[rows["arm"] == "treatment"]
    assert len(live) > 0
    ctx = json.loads(live["context"].iloc[0])
    assert ctx["history"]["orders"] == 1 and ctx["history"]["total_spend"] == 88.0 and ctx["step"] == 2


def test_step_one_channel_is_strict_and_calls_still_routed() -> None:
    customers, segments = population(300, seed=4)
    spec = campaign()
    spec = spec.model_copy(update={"cadence": [spec.cadence[0].model_copy(update={"channel": "email"}),
                                               *spec.cadence[1:]]})
    plan = build_plan(spec, customers, segments, as_of=AS_OF)
    sent = plan[plan["arm"] != "excluded"]
    assert set(sent["channel"]) <= {"email", "call_task"} and (sent["channel"] == "call_task").any()
    assert (sent["send_at_utc"].dt.second == 0).all()
