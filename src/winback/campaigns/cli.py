"""`winback validate` and `winback plan`: thin wrappers over `winback.campaigns`."""

from __future__ import annotations

import os
from pathlib import Path

import typer


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
        segments = segment_customers(inputs.customers, inputs.orders, inputs.complaints, as_of=when,
                                     departed_managers=inputs.departed_managers or src["departed_managers"] or ())
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


def _days(n: int):
    import pandas as pd

    return pd.Timedelta(days=n)


def _load(path: Path):
    from winback.campaigns.loading import load_campaign

    return load_campaign(path)


def validate_templates(spec) -> tuple[list[str], list[str]]:
    """(errors, warnings) of every template the campaign uses, via `winback.render.Renderer.validate`."""
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
    budget = f" of budget {summary.budget:,.2f} ({summary.expected_cost / summary.budget:.0%})" \
        if summary.budget else " (no budget cap)"
    console.print(f"Expected offer cost {summary.expected_cost:,.2f} {summary.currency}{budget}; "
                  f"expected net value {summary.expected_net_value:,.2f} {summary.currency}", highlight=False)
    if summary.power is not None:
        style = "green" if summary.power.ok else "bold yellow"
        prefix = "Power" if summary.power.ok else "Warning"
        console.print(f"[{style}]{prefix}:[/] {summary.power.message}", highlight=False)
