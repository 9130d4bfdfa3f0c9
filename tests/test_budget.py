"""A budget over the whole campaign: every cadence step counts, what costs nothing is never cut, and the
send-time gate stops spending at the budget (real SQLite files; PostgreSQL for the gate)."""

from __future__ import annotations

import pandas as pd
import pytest

from test_channels_support import make_plan
from winback.campaigns import build_plan, load_campaign, plan_followup
from winback.campaigns.decisions import plan_decisions
from winback.config import parse_timestamp
from winback.demo import generate_world
from winback.ledger import Ledger
from winback.ledger.decisions import record_decisions
from winback.ledger.ledger import Outcome
from winback.policy.gate import SendRules
from winback.segments import segment_customers

AS_OF = parse_timestamp("2026-11-23")  # end of that day in Shanghai
CAMPAIGN = "campaigns/cn_retail_winback.yaml"


@pytest.fixture(scope="module")
def world():
    world = generate_world(4000, seed=7, as_of=AS_OF)
    segments = segment_customers(world.customers, world.orders, world.complaints, as_of=AS_OF,
                                 departed_managers=tuple(world.departed_manager_entries))
    return world, segments


def _campaign(budget: float | None):
    spec = load_campaign(CAMPAIGN)
    return spec.model_copy(update={"budget": budget})


def _send_all_due(ledger: Ledger, campaign_id: str, now: pd.Timestamp) -> None:
    """Every due row goes out (no gate: this test is about planning); stamped at `now`."""
    rows = ledger.claim(campaign_id, now=now, limit=1_000_000, gate=False)
    ledger.record([Outcome(r.campaign_id, r.customer_id, int(r.step), "sent", "test", f"m-{r.id}", row_id=int(r.id))
                   for r in rows.itertuples()], claim_token=rows.attrs["claim_token"], now=now)


def run_cadence(spec, world, segments, path) -> pd.DataFrame:
    """Plan step 1, send it, then plan and send steps 2 and 3 on their days (nobody returns): the ledger."""
    w, seg = world, segments
    with Ledger(f"sqlite:///{path}") as ledger:
        plan = build_plan(spec, w.customers, seg, as_of=AS_OF)
        ledger.plan(plan, now=AS_OF)
        record_decisions(ledger, plan_decisions(plan), now=AS_OF)
        sent = AS_OF + pd.Timedelta(days=1)
        _send_all_due(ledger, spec.id, sent)
        for step in (2, 3):
            # A day after the step is due for everyone (its delay counts from the previous send).
            now = sent + pd.Timedelta(days=spec.cadence[step - 1].day - spec.cadence[step - 2].day + 1)
            rows = plan_followup(spec, step, ledger.rows(spec.id), w.customers, w.orders, now=now)
            ledger.plan(rows, now=now)
            sent = now + pd.Timedelta(days=1)
            _send_all_due(ledger, spec.id, sent)
        return ledger.rows(spec.id)


def _spent(book: pd.DataFrame) -> float:
    return float(book.loc[book["arm"] == "treatment", "expected_cost"].fillna(0).sum())


@pytest.mark.parametrize("budget", [5.0, 150.0])
def test_a_budget_holds_over_every_step_and_never_cuts_free_messages(world, tmp_path, budget) -> None:
    book = run_cadence(_campaign(budget), *world, tmp_path / "ledger.db")
    by_step = book[book["arm"] == "treatment"].groupby("step")["expected_cost"].sum()
    assert _spent(book) <= budget + 1e-6, by_step.to_dict()
    treated = book[(book["arm"] == "treatment") & (book["step"] == 1)]
    free = treated[treated["expected_cost"] == 0]
    # The free e-mail reminders go out whatever the budget.
    assert (free["offer_kind"] == "reminder").sum() > 100
    unlimited = run_cadence(_campaign(None), *world, tmp_path / "unlimited.db")
    free_anyway = unlimited[(unlimited["arm"] == "treatment") & (unlimited["expected_cost"] == 0)
                            & (unlimited["step"] == 1)]
    kept = book.set_index(["customer_id", "step"])
    assert kept.reindex(free_anyway.set_index(["customer_id", "step"]).index)["arm"].eq("treatment").all()
    assert _spent(unlimited) > 2 * budget  # the budget binds
    if budget == 150.0:
        assert book["coupon_code"].notna().sum() > 0  # costly offers still go where they earn most per yuan


def test_follow_up_steps_keep_the_offer_they_hold_when_a_new_one_does_not_fit(world, tmp_path) -> None:
    book = run_cadence(_campaign(150.0), *world, tmp_path / "ledger.db")
    step3 = book[(book["step"] == 3) & (book["arm"] == "treatment")]
    step1 = book[book["step"] == 1].set_index("customer_id")
    # Step 3 brings welcome_back_85; whoever did not get it for budget kept their step-1 offer and code.
    kept = step3[step3["offer"] != "welcome_back_85"]
    assert len(kept) > 0
    before = step1.loc[kept["customer_id"]]
    assert (kept["offer"].to_numpy() == before["offer"].to_numpy()).all()
    same = kept["coupon_code"].notna().to_numpy()
    assert (kept["coupon_code"].to_numpy()[same] == before["coupon_code"].to_numpy()[same]).all()


# -- the send-time gate ------------------------------------------------------------------------------


def _budget_plan(campaign_id: str, budget: float) -> pd.DataFrame:
    plan = make_plan(6, campaign_id=campaign_id)
    plan["expected_cost"] = [4.0, 4.0, 0.0, 4.0, 0.0, 4.0]
    plan["send_rules"] = SendRules(budget=budget).to_json()
    return plan


def _gate_stops_at_the_budget(url: str) -> None:
    now = pd.Timestamp("2026-11-20T03:00:00Z")
    with Ledger(url) as ledger:
        ledger.plan(_budget_plan("spring", 10.0), now=now)
        first = ledger.claim("spring", now=now, limit=3)  # 4 + 4 + 0: all fit
        assert len(first) == 3 and not first.attrs["gate"]
        rows = ledger.claim("spring", now=now, limit=10)  # 8 committed (in flight): 4 more would pass 10
        assert rows["customer_id"].tolist() == ["C000004"]  # the free one still goes
        assert rows.attrs["gate"] == {"skipped: budget": 2}
        book = ledger.rows("spring").set_index("customer_id")
        assert book.loc[["C000003", "C000005"], "state"].tolist() == ["skipped", "skipped"]
        assert set(book.loc[["C000003", "C000005"], "gate_reason"]) == {"budget"}


def test_the_gate_stops_spending_at_the_budget_on_sqlite(tmp_path) -> None:
    _gate_stops_at_the_budget(f"sqlite:///{tmp_path / 'ledger.db'}")


def test_the_gate_stops_spending_at_the_budget_on_postgres(postgres_schema) -> None:
    _gate_stops_at_the_budget(postgres_schema)


def test_the_gate_counts_what_was_sent_before_and_other_campaigns_budgets_apart(tmp_path) -> None:
    now = pd.Timestamp("2026-11-20T03:00:00Z")
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.plan(_budget_plan("spring", 9.0), now=now)
        ledger.plan(_budget_plan("autumn", 100.0), now=now)
        rows = ledger.claim("spring", now=now, limit=2)
        ledger.record([Outcome("spring", c, 1, "sent") for c in rows["customer_id"]], now=now)
        later = ledger.claim(now=now + pd.Timedelta(minutes=5), limit=20)
        assert sorted(later.loc[later["campaign_id"] == "spring", "customer_id"]) == ["C000002", "C000004"]
        assert (later["campaign_id"] == "autumn").sum() == 6
        assert later.attrs["gate"] == {"skipped: budget": 2}
