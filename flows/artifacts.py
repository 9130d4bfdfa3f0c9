"""Artifacts a CRM manager reads in the Prefect UI: plan summary, exclusions, send progress and results.

Keys are stable per campaign (`<campaign-id>-plan`, `-exclusions`, `-dispatch`, `-uplift`), so the
UI shows each artifact's history across runs. Nothing secret is ever written here: only counts,
reasons, offers and money.
"""

from __future__ import annotations

import re

import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_table_artifact


def artifact_key(campaign_id: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes) for one campaign's artifact."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{campaign_id}-{what}".lower()).strip("-")
    return slug[:100]


def _table(frame: pd.DataFrame) -> str:
    """A small markdown table without extra dependencies (pandas' to_markdown needs tabulate)."""
    if frame.empty:
        return "_none_\n"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def plan_markdown(campaign_id: str, plan: pd.DataFrame, *, budget: float | None, currency: str,
                  as_of: str, dry_run: bool) -> str:
    """The plan summary: audience, arms, exclusions by reason, offers by tier, expected cost vs budget."""
    arms = plan["arm"].value_counts().rename_axis("arm").reset_index(name="customers")
    excluded = plan[plan["arm"] == "excluded"]
    reasons = excluded["reason"].value_counts().rename_axis("reason").reset_index(name="customers")
    treated = plan[plan["arm"] == "treatment"]
    offers = (
        treated.groupby(["value_tier", "offer"], dropna=False)
        .agg(customers=("customer_id", "size"), expected_cost=("expected_cost", "sum"))
        .reset_index()
    )
    channels = treated["channel"].value_counts().rename_axis("channel").reset_index(name="customers")
    cost = float(treated["expected_cost"].sum()) if "expected_cost" in treated else 0.0
    budget_line = (
        f"{cost:,.2f} {currency} of {budget:,.2f} {currency} budget ({cost / budget:.0%})"
        if budget
        else f"{cost:,.2f} {currency} (no budget cap)"
    )
    mode = "dry run — nothing was sent" if dry_run else "planned and persisted to the ledger"
    return (
        f"# Campaign `{campaign_id}` — plan for {as_of}\n\n"
        f"**Audience:** {len(plan):,} customers · **{mode}**\n\n"
        f"**Expected offer cost:** {budget_line}\n\n"
        f"## Arms\n{_table(arms)}\n"
        f"## Channels (treatment)\n{_table(channels)}\n"
        f"## Offers by value tier (treatment)\n{_table(offers)}\n"
        f"## Exclusions by reason\n{_table(reasons)}\n"
    )


def publish_plan(campaign_id: str, plan: pd.DataFrame, **kwargs) -> None:
    """Create the plan summary (markdown) and the exclusion-reason table artifacts."""
    create_markdown_artifact(
        plan_markdown(campaign_id, plan, **kwargs),
        key=artifact_key(campaign_id, "plan"),
        description=f"Plan of campaign {campaign_id}",
    )
    excluded = plan[plan["arm"] == "excluded"]
    reasons = excluded["reason"].value_counts().rename_axis("reason").reset_index(name="customers")
    create_table_artifact(
        reasons.to_dict("records") or [{"reason": "(none excluded)", "customers": 0}],
        key=artifact_key(campaign_id, "exclusions"),
        description=f"Why customers of {campaign_id} were excluded",
    )


def dispatch_markdown(campaign_id: str, now: str, summary, status: dict[str, int]) -> str:
    """The result of one dispatch: sent, failed by reason, uncertain, suppressed, gated, still planned."""
    totals_frame = pd.DataFrame([
        {"outcome": "sent", "messages": summary.sent},
        {"outcome": "failed", "messages": sum(summary.failed.values())},
        {"outcome": "suppressed at send time", "messages": summary.suppressed},
        {"outcome": "uncertain", "messages": sum(summary.uncertain.values())},
        {"outcome": "throttled past the deadline (deferred)", "messages": summary.throttled},
    ])
    failures_frame = pd.DataFrame([{"reason": k, "messages": v} for k, v in sorted(summary.failed.items())])
    gate_frame = pd.DataFrame([{"decision": k, "messages": v} for k, v in sorted(summary.gated.items())])
    status_frame = pd.DataFrame([{"state": k, "rows": v} for k, v in sorted(status.items())])
    return (
        f"# Dispatch of `{campaign_id}` at {now}\n\n"
        f"## This run\n{_table(totals_frame)}\n"
        f"## Send-time gate (deferred or skipped at the moment of sending)\n{_table(gate_frame)}\n"
        f"## Failed by reason\n{_table(failures_frame)}\n"
        f"## Ledger state of the campaign\n{_table(status_frame)}\n"
    )
