"""`winback preview`: render one real customer per template, channel and locale of a campaign's plan."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `preview` command to the winback app."""

    @app.command("preview")
    def preview(
        campaign: Path = typer.Argument(..., help="campaign YAML file"),
        out: Path = typer.Option(..., "--out", help="folder for the rendered files and index.html"),
        as_of: str | None = typer.Option(None, "--as-of", help="date or timestamp (default: now)"),
        world: Path | None = typer.Option(None, "--world", help="a `winback demo-data` folder (overrides sources)"),
        customers: str | None = typer.Option(None, "--customers", help="customers source (overrides the campaign)"),
        orders: str | None = typer.Option(None, "--orders", help="orders source (overrides the campaign)"),
        complaints: str | None = typer.Option(None, "--complaints", help="complaints source"),
        max_sms_segments: int = typer.Option(3, "--max-sms-segments", help="warn above this many SMS parts"),
    ) -> None:
        """Render sample messages from real customers of the plan to files (sends nothing)."""
        from rich.console import Console
        from rich.table import Table

        from winback.campaigns import build_plan, load_campaign, resolve_sources
        from winback.config import parse_timestamp, secret, utc_now
        from winback.errors import ConfigError
        from winback.render.preview import render_previews, text_cell
        from winback.render.renderer import Renderer
        from winback.render.tokens import make_unsubscribe_token, unsubscribe_url
        from winback.segments import segment_customers
        from winback.sources import load_inputs

        spec = load_campaign(campaign)
        when = parse_timestamp(as_of, tz=spec.policy.default_timezone) if as_of else utc_now()
        src = resolve_sources(spec, world=world, customers=customers, orders=orders, complaints=complaints)
        inputs = load_inputs(**src, default_timezone=spec.policy.default_timezone)
        segments = segment_customers(inputs.customers, inputs.orders, inputs.complaints, as_of=when,
                                     departed_managers=inputs.departed_managers or src["departed_managers"] or ())
        plan = build_plan(spec, inputs.customers, segments, as_of=when)
        renderer = Renderer(spec.templates_path(), spec.locale_fallback, max_sms_segments=max_sms_segments)

        url_for = None
        key, public = secret("WINBACK_UNSUBSCRIBE_SECRET"), os.environ.get("WINBACK_PUBLIC_URL")
        if key is not None and public:
            def url_for(row):  # real signed links when the edge configuration is there
                token = make_unsubscribe_token(row["campaign_id"], row["customer_id"], "email", key)
                return unsubscribe_url(public, token)

        frame = render_previews(plan, renderer, out, unsubscribe_url_for=url_for)
        console = Console()
        table = Table(title=f"Previews of {spec.id} ({(plan['arm'] == 'treatment').sum():,} treatment rows)")
        for col in ("template", "channel", "locale", "customer", "customers", "subject / text", "SMS", "notes"):
            table.add_column(col, overflow="fold")
        for rec in frame.to_dict("records"):
            seg = f"{rec['sms_segments']} × {rec['sms_encoding']}" if text_cell(rec["sms_segments"]) else ""
            note = text_cell(rec["error"]) or text_cell(rec["warnings"])
            table.add_row(rec["template"], rec["channel"], rec["locale"], str(rec["customer_id"]),
                          f"{rec['n_customers']:,}", text_cell(rec["subject"]), seg,
                          f"[red]{note}[/]" if note else "")
        console.print(table)
        console.print(f"Wrote {len(frame)} preview(s) to {out}/index.html (nothing was sent)", highlight=False)
        failed = frame[frame["error"] != ""]
        if len(failed):
            raise ConfigError(f"{len(failed)} preview(s) failed to render: " + "; ".join(failed["error"].head(3)))
