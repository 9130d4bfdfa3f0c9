"""`winback validate`, `winback plan`, `winback explain` and `winback calls import`: thin wrappers over
`winback.campaigns` and the ledger's decision trail."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")]


def register(app: typer.Typer) -> None:
    """Add the campaign commands to the winback app."""

    @app.command("validate")
    def validate(
        campaign: Path = typer.Argument(..., help="campaign YAML file"),
        strict: bool = typer.Option(False, "--strict", help="treat template warnings as errors"),
    ) -> None:
        """Check a campaign file and the templates its offers and cadence use."""
        from rich.console import Console

        from winback.errors import ConfigError

        spec = _load(campaign)
        console = Console()
        errors, warnings = validate_templates(spec)
        for line in warnings:
            console.print(f"[yellow]warning[/] {line}", highlight=False)
        if errors or (strict and warnings):
            problems = errors + (warnings if strict else [])
            raise ConfigError(f"{len(problems)} template problem(s): " + "; ".join(problems[:5])
                              + ("; …" if len(problems) > 5 else ""), path=str(campaign))
        console.print(f"[green]OK[/] {campaign}: campaign {spec.id!r} · {len(spec.offers)} offers · "
                      f"{len(spec.cadence)} step(s) · channels {', '.join(spec.channels)} · templates in "
                      f"{spec.templates_path()}", highlight=False)

    @app.command("plan")
    def plan(
        campaign: Path = typer.Argument(..., help="campaign YAML file"),
        out: Path = typer.Option(..., "--out", help="decision table to write, .csv or .parquet"),
        as_of: str | None = typer.Option(None, "--as-of", help="date or timestamp (default: now)"),
        world: Path | None = typer.Option(None, "--world", help="a `winback demo-data` folder (overrides sources)"),
        customers: str | None = typer.Option(None, "--customers", help="customers source (overrides the campaign)"),
        orders: str | None = typer.Option(None, "--orders", help="orders source (overrides the campaign)"),
        complaints: str | None = typer.Option(None, "--complaints", help="complaints source"),
        ledger: str | None = typer.Option(None, "--ledger", help="ledger URL for suppressions, contact history "
                                          "and past offer results (default: WINBACK_LEDGER_URL if set)"),
        quarantine: Path | None = typer.Option(None, "--quarantine", help="write quarantined input rows here"),
    ) -> None:
        """Dry run: decide who gets what, when and why not — writes the plan, sends nothing."""
        from rich.console import Console

        from winback.campaigns.plan import build_plan, plan_summary
        from winback.campaigns.sources import resolve_sources
        from winback.config import parse_timestamp, utc_now
        from winback.segments import segment_customers
        from winback.sources import load_inputs
        from winback.sources.files import table_format, write_table

        table_format(out)  # reject an unsupported extension before any work
        spec = _load(campaign)
        when = parse_timestamp(as_of, tz=spec.policy.default_timezone) if as_of else utc_now()
        src = resolve_sources(spec, world=world, customers=customers, orders=orders, complaints=complaints)
        inputs = load_inputs(**src, quarantine_path=quarantine, default_timezone=spec.policy.default_timezone)
        from winback.segments.core import SegmentParams

        segments = segment_customers(inputs.customers, inputs.orders, inputs.complaints, as_of=when,
                                     departed_managers=inputs.departed_managers or src["departed_managers"] or (),
                                     params=SegmentParams(purchase_model=spec.segments_model))
        suppressions = history = learner = None
        url = ledger or os.environ.get("WINBACK_LEDGER_URL")
        console = Console()
        if url:
            from winback.measure.learning import ThompsonLearner
            from winback.resources import Resources, RunSettings

            with Resources(RunSettings(ledger_url=url)) as resources:
                book = resources.ledger
                longest = max([c.per_days for c in spec.policy.frequency_caps.values()] or [0])
                suppressions = book.suppressions()
                history = book.contact_history(when - _days(longest))
                learner = ThompsonLearner.from_ledger(book)
        else:
            console.print("[yellow]No ledger given (--ledger / WINBACK_LEDGER_URL): suppressions and frequency "
                          "caps from past sends are not applied.[/]", highlight=False)
        result = build_plan(spec, inputs.customers, segments, as_of=when, suppressions=suppressions,
                            contact_history=history, learner=learner)
        write_table(result, out)
        summary = plan_summary(result, spec)
        print_summary(console, summary, inputs=inputs)
        console.print(f"Wrote {len(result):,} rows to {out} (nothing was sent)", highlight=False)


    @app.command("explain")
    def explain(
        customer_id: Annotated[str, typer.Argument(help="The customer to explain.")],
        campaign: Annotated[str, typer.Option("--campaign", help="The campaign id (as in the ledger).")],
        ledger: LedgerOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the trail as JSON.")] = False,
    ) -> None:
        """Why a customer got what they got — or nothing: the decision trail, from the ledger alone."""
        from winback.resources import Resources, RunSettings

        with Resources(RunSettings.from_env(ledger_url=ledger)) as resources:
            trail = explain_customer(resources.ledger, campaign, customer_id)
        if as_json:
            typer.echo(json.dumps(trail, ensure_ascii=False, indent=2, default=str))
            return
        typer.echo(render_explanation(trail))

    calls = typer.Typer(help="Call tasks of the account managers: bring their outcomes back.", no_args_is_help=True)
    app.add_typer(calls, name="calls")

    @calls.command("import")
    def calls_import(
        path: Annotated[Path, typer.Argument(help="CSV or Parquet: key (or campaign_id, customer_id, step), "
                                                   "outcome, note; optional account_manager, called_at.")],
        campaign: Annotated[str | None, typer.Option("--campaign", help="Campaign of rows that name none.")] = None,
        ledger: LedgerOpt = None,
    ) -> None:
        """Import call outcomes (reached / no_answer / declined / won_back, with a note) into the ledger."""
        from winback.ledger.decisions import record_call_outcomes
        from winback.resources import Resources, RunSettings
        from winback.sources.files import read_table

        frame = call_outcome_rows(read_table(str(path)), campaign=campaign, source=str(path))
        with Resources(RunSettings.from_env(ledger_url=ledger)) as resources:
            unknown = _unknown_tasks(resources.ledger, frame)
            written = record_call_outcomes(resources.ledger, frame, source=Path(path).name)
        counts = frame["outcome"].value_counts().to_dict()
        typer.echo(f"Imported {written} call outcome(s) from {path}: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                   + (f" ({unknown} for customers with no call task in the ledger)" if unknown else ""))


OUTCOME_ALIASES = {"reached": "reached", "no_answer": "no_answer", "no answer": "no_answer", "noanswer": "no_answer",
                   "declined": "declined", "won_back": "won_back", "won back": "won_back", "wonback": "won_back",
                   "已接通": "reached", "未接通": "no_answer", "拒绝": "declined", "已挽回": "won_back"}


def call_outcome_rows(frame, *, campaign: str | None = None, source: str = "<calls>"):
    """Normalise an outcomes file (the call list with `outcome` and `note` filled in, or any table naming the
    task by `key` or campaign_id/customer_id/step) into call_outcomes rows; errors name the row."""
    import pandas as pd

    from winback.errors import DataError
    from winback.ledger.decisions import CALL_OUTCOMES

    columns = {str(c).strip().lower(): c for c in frame.columns}
    if "outcome" not in columns:
        raise DataError("no `outcome` column", file=source,
                        hint=f"fill in one of {', '.join(CALL_OUTCOMES)} per call, beside the call list's `key`")
    out = pd.DataFrame(index=frame.index)
    if "key" in columns:
        from winback.channels.call_task import unescape_cell

        # Call lists escape cells against formula injection (a leading '): read the key back as written.
        keys = frame[columns["key"]].astype("string").map(lambda v: unescape_cell(v) if isinstance(v, str) else v)
        parts = keys.astype("string").str.rsplit(":", n=2, expand=True)
        if parts.shape[1] != 3 or parts.isna().any().any():
            bad = int(parts.isna().any(axis=1).to_numpy().nonzero()[0][0]) + 1 if parts.shape[1] == 3 else 1
            raise DataError("a key is not campaign:customer:step", file=source, row=bad, column="key")
        out["campaign_id"], out["customer_id"], out["step"] = parts[0], parts[1], parts[2]
    else:
        if "customer_id" not in columns:
            raise DataError("no `key` or `customer_id` column", file=source)
        out["customer_id"] = frame[columns["customer_id"]].astype("string")
        out["campaign_id"] = frame[columns["campaign_id"]].astype("string") if "campaign_id" in columns else campaign
        out["step"] = frame[columns["step"]] if "step" in columns else 1
    if out["campaign_id"].isna().any():
        raise DataError("rows without a campaign", file=source, column="campaign_id",
                        hint="give --campaign or a campaign_id / key column")
    steps = pd.to_numeric(out["step"], errors="coerce")
    if steps.isna().any():
        raise DataError("step is not a number", file=source, row=int(steps.isna().to_numpy().nonzero()[0][0]) + 1,
                        column="step")
    out["step"] = steps.astype("int64")
    raw = frame[columns["outcome"]].astype("string").str.strip()
    outcome = raw.str.lower().map(OUTCOME_ALIASES).fillna(raw.map(OUTCOME_ALIASES))
    bad = outcome.isna() & raw.notna() & (raw != "")
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"unknown outcome {raw.iloc[first]!r} (one of {', '.join(CALL_OUTCOMES)})", file=source,
                        row=first + 1, column="outcome")
    out["outcome"] = outcome
    for name in ("note", "account_manager", "called_at"):
        out[name] = frame[columns[name]] if name in columns else None
    if "called_at" in columns:
        out["called_at"] = pd.to_datetime(out["called_at"], utc=True, errors="coerce")
    # A call list handed back with some rows not yet called: those have no outcome and are left out.
    return out[out["outcome"].notna()].reset_index(drop=True)


def _unknown_tasks(ledger, frame) -> int:
    """How many outcomes name a (campaign, customer, step) with no call task in the ledger."""
    known = 0
    for campaign_id in frame["campaign_id"].unique():
        rows = ledger.rows(str(campaign_id))
        tasks = set(zip(rows.loc[rows["channel"] == "call_task", "customer_id"].astype(str),
                        rows.loc[rows["channel"] == "call_task", "step"].astype(int), strict=True))
        part = frame[frame["campaign_id"] == campaign_id]
        known += sum((str(c), int(s)) in tasks for c, s in zip(part["customer_id"], part["step"], strict=True))
    return len(frame) - known


def explain_customer(ledger, campaign_id: str, customer_id: str) -> dict:
    """The decision trail of one customer in one campaign, from the ledger: decisions per step, the ledger rows
    (what happened at send time) and call outcomes. A DataError when the ledger knows nothing of them."""
    from winback.errors import DataError
    from winback.ledger.decisions import call_outcomes, decisions

    found = decisions(ledger, campaign_id, customer_id)
    rows = ledger.rows(campaign_id)
    rows = rows[rows["customer_id"].astype(str) == str(customer_id)]
    calls = call_outcomes(ledger, campaign_id)
    calls = calls[calls["customer_id"].astype(str) == str(customer_id)]
    if found.empty and rows.empty:
        known = ledger.campaigns()
        hint = ("the campaign is not in this ledger; known: " + ", ".join(known[:10])) if campaign_id not in known \
            else "the customer was not in the sources when the campaign was planned"
        raise DataError(f"no decision about customer {customer_id!r} in campaign {campaign_id!r}", hint=hint)

    def records(frame, columns):
        sub = frame[[c for c in columns if c in frame.columns]]
        return [{k: (None if _missing(v) else v) for k, v in r.items()} for r in sub.astype(object).to_dict("records")]

    out = {"campaign_id": campaign_id, "customer_id": customer_id, "decisions": []}
    for rec in records(found, list(found.columns)):
        for name in ("policy", "detail"):
            if isinstance(rec.get(name), str):
                try:
                    rec[name] = json.loads(rec[name])
                except ValueError:
                    pass
        out["decisions"].append(rec)
    out["ledger"] = records(rows, ["step", "arm", "state", "channel", "offer", "coupon_code", "send_at_utc",
                                   "sent_at", "gate_reason", "provider", "error", "delivery_status"])
    out["call_outcomes"] = records(calls, ["step", "outcome", "note", "account_manager", "called_at", "recorded_at"])
    return out


def _missing(value) -> bool:
    try:
        import pandas as pd

        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def render_explanation(trail: dict) -> str:
    """The trail as text a CRM manager reads: one block per step."""
    lines = [f"Customer {trail['customer_id']} · campaign {trail['campaign_id']}"]
    ledger_by_step = {int(r["step"]): r for r in trail["ledger"]}
    steps = sorted({int(d["step"]) for d in trail["decisions"]} | set(ledger_by_step))
    decided = {int(d["step"]): d for d in trail["decisions"]}
    for step in steps:
        d = decided.get(step)
        lines.append("")
        if d is None:
            lines.append(f"Step {step}: no decision row (planned before the decision trail existed)")
        else:
            lines.append(f"Step {step} · decided {d.get('decided_at')} (data as of {d.get('as_of') or '–'})")
            if not d.get("in_audience"):
                lines.append(f"  audience: OUT — {d.get('audience_rule')}")
                detail = d.get("detail") or {}
                if detail:
                    lines.append("  segment: " + ", ".join(f"{k} {v}" for k, v in detail.items()))
                continue
            rule = d.get("audience_rule")
            lines.append("  audience: in" + (f" ({rule})" if rule and rule != "in audience" else ""))
            policy = d.get("policy") or {}
            if policy:
                lines.append("  policy: " + " · ".join(f"{ch} {verdict}" for ch, verdict in policy.items()))
            lines.append(f"  arm: {d.get('arm')} ({d.get('reason')})")
            if d.get("offer"):
                offer = f"  offer: {d['offer']}"
                if d.get("expected_net_value") is not None:
                    offer += f" — expected net value {d['expected_net_value']:.2f}"
                if d.get("expected_cost") is not None:
                    offer += f", expected cost {d['expected_cost']:.2f}"
                if d.get("runner_up"):
                    value = d.get("runner_up_net_value")
                    offer += f"; runner-up {d['runner_up']}" + (f" ({value:.2f})" if value is not None else "")
                lines.append(offer)
            detail = d.get("detail") or {}
            for key, label in (("offer_guard", "offer guard"), ("budget_note", "budget")):
                if detail.get(key):
                    lines.append(f"  {label}: {detail[key]}")
            if d.get("channel"):
                lines.append(f"  channel: {d['channel']} — {d.get('channel_reason') or ''}".rstrip(" —"))
            lines.append(f"  human follow-up: {d.get('human_followup') or '–'}")
        row = ledger_by_step.get(step)
        if row is not None:
            happened = f"  ledger: {row['state']}"
            if row.get("sent_at"):
                happened += f" at {row['sent_at']}"
            if row.get("provider"):
                happened += f" via {row['provider']}"
            if row.get("gate_reason"):
                happened += f" (gate: {row['gate_reason']})"
            if row.get("error"):
                happened += f" — {row['error']}"
            lines.append(happened)
    for call in trail["call_outcomes"]:
        lines.append(f"Call (step {call['step']}): {call['outcome']}" + (f" — {call['note']}" if call.get("note") else ""))
    return "\n".join(lines)


def _days(n: int):
    import pandas as pd

    return pd.Timedelta(days=n)


def _load(path: Path):
    from winback.campaigns.loading import load_campaign

    return load_campaign(path)


def message_combinations(spec) -> list[tuple[str, str, str]]:
    """Every (template, channel, locale) the campaign can produce: the offers' templates on step 1's channels
    (and on call tasks when human follow-up routes customers to calls), each later step's template or the
    offers' on its channel, in the default locale, every fallback target and every locale an offer title names."""
    locales = [spec.policy.default_locale, *spec.locale_fallback.values()]
    for offer in spec.offers:
        if isinstance(offer.title, dict):
            locales += list(offer.title)
    locales = list(dict.fromkeys(locales))
    offer_templates = list(dict.fromkeys(o.template for o in spec.offers))
    pairs: list[tuple[str, str]] = []
    first = spec.cadence[0]
    for channel in ([first.channel] if first.channel else spec.channels):
        pairs += [(first.template or t, channel) for t in offer_templates]
    if spec.human_followup.rules:
        pairs += [(t, "call_task") for t in offer_templates] if spec.human_followup.with_offer \
            else [("call_task", "call_task")]
    for step in spec.cadence[1:]:
        templates = [step.template] if step.template else offer_templates
        for channel in ([step.channel] if step.channel else spec.channels):
            pairs += [(t, channel) for t in templates]
    pairs = list(dict.fromkeys(pairs))
    return [(t, ch, loc) for t, ch in pairs for loc in locales]


def validate_templates(spec) -> tuple[list[str], list[str]]:
    """(errors, warnings) of every template the campaign uses (`winback.render.Renderer.validate`) and of every
    locale × channel × template it can produce: no files for one is an error, a fallback to another
    language a warning."""
    from winback.errors import WinbackError
    from winback.render import Renderer

    names: dict[str, str | None] = {}
    for offer in spec.offers:
        names.setdefault(offer.template, offer.kind)
    for step in spec.cadence:
        if step.template:
            names.setdefault(step.template, None)
    renderer = Renderer(spec.templates_path(), spec.locale_fallback)
    available = set(renderer.templates())
    errors: list[str] = []
    warnings: list[str] = []
    for name, kind in names.items():
        if name not in available:
            errors.append(f"template {name!r} not found in {spec.templates_path()}")
            continue
        for problem in renderer.validate(name, offer_kind=kind):
            (warnings if ": warning: " in problem else errors).append(problem)
    for template, channel, locale in message_combinations(spec):
        if template not in available:
            if template not in names:
                errors.append(f"template {template!r} not found in {spec.templates_path()}")
                names[template] = None
            continue
        try:
            used = renderer.resolve_locale(template, channel, locale)
        except WinbackError as exc:
            errors.append(f"{template}: {channel} in {locale}: {exc}")
            continue
        if used.split("-")[0].lower() != locale.split("-")[0].lower():
            warnings.append(f"{template}: warning: {channel} in {locale} falls back to {used}")
    return errors, warnings


def print_summary(console, summary, *, inputs=None) -> None:
    """Rich tables of a PlanSummary: arms, reasons, offers × tier, cost vs budget, power warning."""
    from rich.table import Table

    if inputs is not None and getattr(inputs, "counts", None):
        console.print(f"Quarantined input rows: {dict(inputs.counts)}", highlight=False)
    arms = Table(title=f"Plan · {summary.campaign_id} · audience {summary.audience:,}")
    for column in ("arm", "customers"):
        arms.add_column(column, justify="right" if column == "customers" else "left")
    for arm, n in summary.by_arm.items():
        arms.add_row(arm, f"{n:,}")
    console.print(arms)
    reasons = Table(title="Reasons")
    for column in ("arm", "reason", "customers"):
        reasons.add_column(column, justify="right" if column == "customers" else "left")
    for row in summary.by_reason.itertuples():
        reasons.add_row(str(row.arm), str(row.reason), f"{row.customers:,}")
    console.print(reasons)
    if not summary.offers_by_tier.empty:
        offers = Table(title="Offers × value tier (treatment)")
        offers.add_column("offer")
        for tier in summary.offers_by_tier.columns:
            offers.add_column(str(tier), justify="right")
        for offer, row in summary.offers_by_tier.iterrows():
            offers.add_row(str(offer), *[f"{int(v):,}" for v in row])
        console.print(offers)
    if summary.by_channel:
        console.print("Channels (treatment): " + ", ".join(f"{k} {v:,}" for k, v in summary.by_channel.items()),
                      highlight=False)
    budget = f" of budget {summary.budget:,.2f} ({summary.expected_cost / summary.budget:.0%}; the budget also " \
        "holds the later cadence steps)" if summary.budget else " (no budget cap)"
    console.print(f"Expected offer cost of step 1 (offers and contacts) {summary.expected_cost:,.2f} "
                  f"{summary.currency}{budget}; "
                  f"expected net value {summary.expected_net_value:,.2f} {summary.currency}", highlight=False)
    if summary.power is not None:
        style = "green" if summary.power.ok else "bold yellow"
        prefix = "Power" if summary.power.ok else "Warning"
        console.print(f"[{style}]{prefix}:[/] {summary.power.message}", highlight=False)
