"""`winback run`: the campaign flow through Prefect (ephemeral API unless PREFECT_API_URL is set)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add `run` to the winback command line."""

    @app.command("run")
    def run(
        campaign: Annotated[str, typer.Argument(help="Campaign YAML file (or its id, looked up in campaigns/).")],
        as_of: Annotated[str | None, typer.Option("--as-of", help="Plan as of this date (default: now).")] = None,
        world: Annotated[Path | None, typer.Option("--world", help="A folder written by `winback demo-data`.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and report; persist and send nothing.")] = False,
        ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")] = None,
        emulator: Annotated[str | None, typer.Option("--emulator", help="Route every channel to this emulator URL.")] = None,
        provider_config: Annotated[Path | None, typer.Option("--provider-config", help="Provider settings YAML.")] = None,
        now: Annotated[str | None, typer.Option("--now", help="Pretend it is this time (tests, demos).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the flow's summary as JSON.")] = False,
    ) -> None:
        """Run the `winback-campaign` flow: segment → plan → persist → dispatch what is due."""
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        from flows.campaign import campaign_flow

        summary = campaign_flow(
            campaign=campaign, as_of=as_of, dry_run=dry_run, world=str(world) if world else None,
            ledger_url=ledger, emulator_url=emulator,
            provider_config=str(provider_config) if provider_config else None, now=now,
        )
        if as_json:
            typer.echo(json.dumps(summary, default=str, ensure_ascii=False))
            return
        from rich.console import Console
        from rich.pretty import Pretty

        Console().print(Pretty(summary))
