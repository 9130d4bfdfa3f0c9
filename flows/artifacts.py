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
                  as_of: str, dry_run: bool, name: str | None = None) -> str:
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
    offers["expected_cost"] = offers["expected_cost"].map(lambda x: _money(x, currency))
    budget_line = (
        f"{_money(cost, currency)} of {_money(budget, currency)} budget ({cost / budget:.0%})"
        if budget
        else f"{_money(cost, currency)} (no budget cap)"
    )
    mode = "dry run — nothing was sent" if dry_run else "planned and persisted to the ledger"
    return (
        f"# {name or 'Campaign'} (`{campaign_id}`) — plan for {as_of}\n\n"
        f"**Audience:** {len(plan):,} customers · **{mode}**\n\n"
        f"**Expected offer cost:** {budget_line}\n\n"
        f"## Arms\n{_table(arms)}\n"
        f"## Channels (treatment)\n{_table(channels)}\n"
        f"## Offers by value tier (treatment)\n{_table(offers)}\n"
        f"## Exclusions by reason\n{_table(reasons)}\n"
        f"Why one customer was left out, held out or given an offer (every customer evaluated has a decision "
        f"row in the ledger): `winback explain CUSTOMER_ID --campaign {campaign_id}`.\n"
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
        {"outcome": "deferred to a later run (provider asked to wait, retries ran out)",
         "messages": sum(summary.deferred.values())},
        {"outcome": "held for a person, uncertain (`winback uncertain list`)",
         "messages": summary.uncertain_held or status.get("uncertain", 0)},
    ])
    failures_frame = pd.DataFrame([{"reason": k, "messages": v} for k, v in sorted(summary.failed.items())])
    gate_frame = pd.DataFrame([{"decision": k, "messages": v} for k, v in sorted(summary.gated.items())])
    status_frame = pd.DataFrame([{"state": k, "rows": v} for k, v in sorted(status.items())])
    stopped = f"**Channels stopped for this run:** {summary.outage}\n\n" if summary.outage else ""
    return (
        f"# Dispatch of `{campaign_id}` at {now}\n\n{stopped}"
        f"## This run\n{_table(totals_frame)}\n"
        f"## Send-time gate (deferred or skipped at the moment of sending)\n{_table(gate_frame)}\n"
        f"## Failed by reason\n{_table(failures_frame)}\n"
        f"## Ledger state of the campaign\n{_table(status_frame)}\n"
    )


def _pct(x) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def _pp(x) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:+.1f} pp"


def _money(x, currency: str) -> str:
    symbol = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}.get(currency, "")
    if x is None or pd.isna(x):
        return "–"
    return f"{'-' if x < 0 else ''}{symbol}{abs(x):,.0f}" + ("" if symbol else f" {currency}")


def _p(x) -> str:
    return "–" if x is None or pd.isna(x) else ("<0.001" if x < 1e-3 else f"{x:.3f}")


def uplift_markdown(measured: dict, *, currency: str, title: str, images: dict[str, str] | None = None) -> str:
    """The uplift report a CRM lead reads in the Prefect UI: narrow tables, percent with one decimal,
    money with its currency; p-values in their own table; the plots inline (PNG data URIs)."""
    t, h = measured["arms"]["treatment"], measured["arms"]["holdout"]
    rr, rev = measured["uplift"]["return_rate"], measured["uplift"]["revenue_per_customer"]
    m = lambda x: _money(x, currency)  # noqa: E731 - a local shorthand
    roi = measured.get("roi")
    lines = [
        f"# {title}", "",
        f"**回头率 / return rate** {_pct(t['return_rate'])} treated vs {_pct(h['return_rate'])} holdout: "
        f"**{_pp(rr['diff'])}** (95% CI {_pp(rr['ci_low'])} … {_pp(rr['ci_high'])})", "",
        f"**Incremental revenue** {m(measured['incremental_revenue']['estimate'])} · offer cost "
        f"{m(measured['offer_cost'])} · net {m(measured['net_incremental_value'])} · ROI "
        f"{'–' if roi is None else f'{roi:.1f}×'}", "",
        "| | Treatment | Holdout |", "|---|---:|---:|",
        f"| Customers | {t['n']:,} | {h['n']:,} |",
        f"| Came back | {t['returned']:,} | {h['returned']:,} |",
        f"| Return rate | {_pct(t['return_rate'])} | {_pct(h['return_rate'])} |",
        f"| Revenue / customer | {m(t['revenue_per_customer'])} | {m(h['revenue_per_customer'])} |",
        "",
        "## By offer", "",
        "| Offer | Treated | Return T | Return H | Uplift [95% CI] | Net value |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for row in measured.get("by_offer", []):
        lines.append(f"| {row['offer']} | {row['n_treated']:,} | {_pct(row['return_rate_treated'])} | "
                     f"{_pct(row['return_rate_holdout'])} | {_pp(row['uplift'])} "
                     f"[{_pp(row['ci_low'])}, {_pp(row['ci_high'])}] | {m(row['net_incremental_value'])} |")
    for key in ("uplift_png", "curve_png"):
        if images and images.get(key):
            lines += ["", f"![{key.replace('_png', '').replace('_', ' ')}]({images[key]})"]
    lines += ["", "## Significance", "", "| Measure | p-value | Holm-adjusted |", "|---|---:|---:|",
              f"| Return rate (all) | {_p(rr['p_value'])} | – |",
              f"| Revenue / customer (all) | {_p(rev['p_value'])} | – |"]
    for row in measured.get("by_offer", []):
        lines.append(f"| {row['offer']} | {_p(row['p_value'])} | {_p(row.get('p_holm'))} |")
    return "\n".join(lines) + "\n"


def by_offer_rows(measured: dict, *, currency: str) -> list[dict[str, str]]:
    """The per-offer table artifact with formatted cells (no raw floats)."""
    return [{"offer": r["offer"], "treated": f"{r['n_treated']:,}", "holdout": f"{r['n_holdout']:,}",
             "return T": _pct(r["return_rate_treated"]), "return H": _pct(r["return_rate_holdout"]),
             "uplift": _pp(r["uplift"]), "95% CI": f"{_pp(r['ci_low'])} … {_pp(r['ci_high'])}",
             "incremental revenue": _money(r["incremental_revenue"], currency),
             "offer cost": _money(r["offer_cost"], currency),
             "net value": _money(r["net_incremental_value"], currency)}
            for r in measured.get("by_offer", [])]


def png_data_uri(path) -> str:
    """A PNG file as a data URI (the Prefect UI shows it inline in a markdown artifact)."""
    import base64
    from pathlib import Path

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
