"""`winback emulator` (the local provider emulator), `winback send` and `winback dispatch` (the exactly-once
send engine), and `winback uncertain list|resend|drop` (sends nobody could confirm, held for a person)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from winback.errors import ConfigError, WinbackError


def _print_summary(title: str, summary, first_rows=()) -> None:
    """A dispatch summary as a two-column rich table (labels printed as text, never as markup)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from winback.channels.dispatch import summary_rows

    table = Table(title=Text(title), show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in [*first_rows, *summary_rows(summary)]:
        table.add_row(Text(label), Text(value))
    Console().print(table)


def _stopped(summary, hint: str):
    """The one line a person reads when a channel stopped: which provider, why, and what is still planned."""
    from winback.errors import ChannelError

    return ChannelError(f"{summary.outage}; {summary.remaining_planned:,} messages left planned, none failed for it",
                        hint=hint)


def register(app: typer.Typer) -> None:
    """Add `emulator`, `send`, `dispatch` and `uncertain` to the winback command line."""
    _register_uncertain(app)

    @app.command("emulator")
    def emulator(
        host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8025,
        smtp_port: Annotated[int | None, typer.Option("--smtp-port", help="SMTP port (default: HTTP port + 1).")] = None,
        no_smtp: Annotated[bool, typer.Option("--no-smtp", help="Do not start the SMTP listener.")] = False,
        fault_rate: Annotated[float, typer.Option("--fault-rate", help="Share of send requests that fail (0-1).")] = 0.0,
        latency_ms: Annotated[float, typer.Option("--latency-ms", help="Added latency per send request.")] = 0.0,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the fault RNG.")] = 0,
        slow_seconds: Annotated[float, typer.Option("--slow-seconds", help="Stall of a 'slow' fault.")] = 5.0,
    ) -> None:
        """Run the local provider emulator (SendGrid, Mailgun, Twilio, webhook gateway, SMTP) with faults."""
        if not 0.0 <= fault_rate <= 1.0:
            raise ConfigError("must be between 0 and 1", field="--fault-rate")
        if latency_ms < 0 or slow_seconds < 0:
            raise ConfigError("must not be negative", field="--latency-ms/--slow-seconds")
        if not 0 < port < 65536:
            raise ConfigError("must be a TCP port (1-65535)", field="--port")
        from winback.channels.emulator import serve

        smtp = None if no_smtp else (smtp_port if smtp_port is not None else port + 1)

        def announce(_app) -> None:
            typer.echo(f"winback emulator on http://{host}:{port}" + (f", SMTP on {host}:{smtp}" if smtp else "")
                       + f" (fault rate {fault_rate:g}, latency {latency_ms:g} ms, seed {seed})", err=True)

        try:
            serve(host=host, port=port, smtp_port=smtp, fault_rate=fault_rate, latency_ms=latency_ms, seed=seed,
                  slow_seconds=slow_seconds, ready=announce)
        except OSError as exc:
            raise ConfigError(f"cannot listen: {exc}", field="--port") from None

    @app.command("send")
    def send(
        plan: Annotated[Path, typer.Option("--plan", help="A plan written by `winback plan` (CSV or Parquet).")],
        ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")] = None,
        provider_config: Annotated[Path | None, typer.Option("--provider-config", help="Provider settings YAML.")] = None,
        emulator: Annotated[str | None, typer.Option("--emulator", help="Route every channel to this emulator URL.")] = None,
        now: Annotated[str | None, typer.Option("--now", help="Pretend it is this time (e.g. past quiet hours).")] = None,
        concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight.")] = 64,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows claimed per batch.")] = 1000,
        uncertain: Annotated[str, typer.Option("--uncertain", help="Sends nobody can confirm (no provider lookup): "
                                               "hold them for a person (`winback uncertain`), or resend them.")] = "hold",
        max_attempts: Annotated[int, typer.Option("--max-attempts", help="Tries per message.")] = 5,
        lease: Annotated[float, typer.Option("--lease", help="Seconds a claim holds its rows without renewal (renewed "
                                             "every third while this sender runs; another sender reconciles them "
                                             "only once it lapsed).")] = 120.0,
        lookup_settle: Annotated[float, typer.Option("--lookup-settle", help="Seconds a provider may take to show an "
                                                     "accepted message in its lookup.")] = 2.0,
        templates: Annotated[Path, typer.Option("--templates", help="Templates folder.")] = Path("templates"),
        smtp_port: Annotated[int | None, typer.Option("--smtp-port", help="With --emulator and email over SMTP: its SMTP port.")] = None,
        email_provider: Annotated[str | None, typer.Option("--email-provider", help="Override the email provider: sendgrid|mailgun|smtp.")] = None,
        transport: Annotated[str | None, typer.Option("--transport", help="HTTP transport: aiohttp|httpx.")] = None,
        workers: Annotated[int, typer.Option("--workers", help="Sender processes sharing the plan (each with "
                                             "its share of --concurrency and of the rate limits).")] = 1,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON line.")] = False,
    ) -> None:
        """Render and send every due treatment message of a plan, exactly once (resumable)."""
        from winback.campaigns.loading import find_campaign
        from winback.channels.dispatch import (
            DispatchSummary,
            count_due,
            dispatch,
            dispatch_in_processes,
            run_async,
        )
        from winback.ledger import Ledger
        from winback.policy.gate import last_order_times
        from winback.resources import Resources, RunSettings, campaign_inputs
        from winback.sources.files import read_table

        if (provider_config is None) == (emulator is None):
            raise ConfigError("give exactly one of --provider-config and --emulator", field="--provider-config")
        if uncertain not in ("hold", "resend", "skip"):
            raise ConfigError("must be 'hold' or 'resend'", field="--uncertain")
        if not lease > 0 or lookup_settle < 0:
            raise ConfigError("--lease must be positive and --lookup-settle not negative", field="--lease")
        if concurrency < 1 or batch_size < 1 or max_attempts < 1 or workers < 1:
            raise ConfigError("--concurrency, --batch-size, --max-attempts and --workers must be at least 1")
        if email_provider and email_provider not in ("sendgrid", "mailgun", "smtp"):
            raise ConfigError("must be sendgrid, mailgun or smtp", field="--email-provider")
        if transport and transport not in ("aiohttp", "httpx"):
            raise ConfigError("must be aiohttp or httpx", field="--transport")
        if not plan.exists():
            raise ConfigError("plan file not found", path=str(plan))
        frame = read_table(plan)
        resources = Resources(RunSettings.from_env(
            ledger_url=ledger, provider_config=provider_config, emulator_url=emulator, smtp_port=smtp_port,
            email_provider=email_provider, transport=transport, now=now, concurrency=concurrency,
            max_attempts=max_attempts, uncertain_policy=uncertain, lease_s=lease, lookup_settle_s=lookup_settle))
        wants_email = bool((frame.get("channel") == "email").any()) if "channel" in frame else False
        # The campaign's own orders let the gate skip if_not_returned steps of customers who came back.
        campaign_ids = sorted(frame["campaign_id"].dropna().astype(str).unique()) if "campaign_id" in frame else []
        specs = [find_campaign(cid) for cid in campaign_ids]
        last_orders: dict = {}
        for spec in specs:
            if spec is not None:
                try:
                    last_orders.update(last_order_times(campaign_inputs(spec).orders, until=resources.clock.now()))
                except WinbackError:
                    pass  # the campaign's sources are not here: the gate checks everything else
        campaign = specs[0] if len(specs) == 1 else None
        # Only this plan's campaign is sent (another campaign's due rows in the same ledger are not ours).
        only = campaign_ids[0] if len(campaign_ids) == 1 else None
        url = resources.ledger_url
        store = resources.ledger
        when = resources.clock.now()
        show_progress = not (no_progress or as_json)

        def run(ledger_store, *, share: int = 1, reconcile: bool = True, max_batches: int | None = None,
                progress=None) -> DispatchSummary:
            async def go():
                async with resources.sender(campaign, templates=templates, share=share, progress=progress,
                                            require_unsubscribe_secret=wants_email) as settings:
                    return await dispatch(ledger_store, settings, campaign_id=only, batch_size=batch_size,
                                          reconcile=reconcile, max_batches=max_batches,
                                          last_orders=last_orders or None)
            return run_async(go())

        def sender(index: int, progress) -> DispatchSummary:  # one of --workers processes
            own = Ledger(url, clock=resources.clock)
            try:
                return run(own, share=workers, reconcile=False, progress=progress)
            finally:
                own.close()

        def send_all(progress, started: float, inserted: int) -> DispatchSummary:
            if workers == 1:
                result = run(store, progress=progress)
            else:
                # Reconcile once here; the senders then share the due rows through the ledger's claims.
                result = run(store, max_batches=0)
                store.engine.dispose()  # no pooled connection crosses the fork
                result.merge(dispatch_in_processes(sender, workers, progress=progress))
                result.remaining_planned = store.status(only).get("planned", 0)
            result.planned_new = inserted
            result.seconds = time.perf_counter() - started
            return result

        import gc
        import time
        # Everything loaded so far (libraries, the plan) lives until exit: move it out of the cyclic
        # collector's reach, and let the young generation grow before a pass. A send allocates many
        # short-lived objects per message; with the defaults the collector re-scanned the whole heap
        # ~1,500 times in 10,000 messages (1.7-2.4 s of an 8-10 s run; 0.4 s after). Reference counting
        # still frees them at once.
        gc.collect()
        gc.freeze()
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
        try:
            started = time.perf_counter()
            inserted = store.plan(frame, now=when)  # the whole plan is persisted before the first send
            if not show_progress:
                summary = send_all(None, started, inserted)
            else:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )

                total = count_due(store, now=when, campaign_id=only)
                with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              transient=True) as bar:
                    task = bar.add_task("send", total=total or None)
                    summary = send_all(lambda n: bar.advance(task, n), started, inserted)
        finally:
            gc.set_threshold(*threshold)
            gc.unfreeze()
            resources.close()
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), ensure_ascii=False))
        else:
            _print_summary(f"winback send — {plan.name}", summary, [("new rows planned", str(summary.planned_new))])
        if summary.outage:
            raise _stopped(summary, "re-run the same `winback send` command once it is fixed: the rows left planned "
                                    "are sent then, nothing twice")

    @app.command("dispatch")
    def dispatch_cmd(
        campaign: Annotated[str | None, typer.Option("--campaign", help="One campaign (id or YAML); default: "
                                                     "every campaign in the ledger.")] = None,
        now: Annotated[str | None, typer.Option("--now", help="Pretend it is this time (a bare date: end of "
                                                "that day in the campaign's zone).")] = None,
        world: Annotated[Path | None, typer.Option("--world", help="Read a demo-data folder instead of the "
                                                   "campaign's own sources.")] = None,
        ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")] = None,
        provider_config: Annotated[Path | None, typer.Option("--provider-config", help="Provider settings YAML "
                                                             "(default WINBACK_PROVIDER_CONFIG).")] = None,
        emulator: Annotated[str | None, typer.Option("--emulator", help="Route every channel to this emulator "
                                                     "URL (default WINBACK_EMULATOR_URL).")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows claimed per batch.")] = 2000,
        concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight.")] = 64,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line per campaign.")] = False,
    ) -> None:
        """What the 15-minute deployment does, by hand: plan due cadence steps, then send what is due."""
        from winback.campaigns.cadence import CampaignDispatch, prepare_dispatch, send_campaign
        from winback.campaigns.loading import campaign_path, find_campaign, load_campaign
        from winback.channels.dispatch import run_async
        from winback.resources import Resources, RunSettings

        if provider_config is not None and emulator is not None:
            raise ConfigError("give one of --provider-config and --emulator", field="--provider-config")
        if batch_size < 1:
            raise ConfigError("must be at least 1", field="--batch-size")
        spec = load_campaign(campaign_path(campaign)) if campaign else None
        zone = spec.policy.default_timezone if spec else None
        from winback.clock import DEFAULT_TIMEZONE, business_time

        start = business_time(now, option="--now", tz=zone or DEFAULT_TIMEZONE) if now else None
        with Resources(RunSettings.from_env(ledger_url=ledger, provider_config=provider_config, emulator_url=emulator,
                                            now=start, concurrency=concurrency)) as resources:
            ids = [spec.id] if spec else resources.ledger.campaigns()
            if not ids:
                typer.echo("Nothing to dispatch: the ledger has no campaign.", err=True)
            failures = []
            for cid in ids:
                current = spec if spec is not None else find_campaign(cid)
                result = CampaignDispatch(cid)
                last_orders = None
                if current is None:
                    result.notes.append(f"no campaign file defines {cid!r} in campaigns/: no cadence steps "
                                        "planned, no ordered-since check")
                else:
                    result.followups_planned, last_orders = prepare_dispatch(
                        resources, current, world=str(world) if world else None)
                result.summary = run_async(send_campaign(resources, current, cid, last_orders=last_orders,
                                                         batch_size=batch_size))
                if as_json:
                    typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, default=str))
                else:
                    _print_summary(f"winback dispatch — {cid}", result.summary,
                                   [("cadence steps planned", str(result.followups_planned)),
                                    *[("note", n) for n in result.notes]])
                if result.summary.outage:
                    failures.append(f"{cid}: {result.summary.outage}")
        if failures:
            from winback.errors import ChannelError

            raise ChannelError("; ".join(failures) + " (the messages left planned are sent by the next dispatch)",
                               hint="run `winback dispatch` again once the provider is back or the key is fixed")


# Options of `winback uncertain …` (module level: typer reads the annotations by name).
CampaignOpt = Annotated[str | None, typer.Option("--campaign", help="One campaign (default: all).")]
LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")]
CustomersOpt = Annotated[list[str] | None, typer.Option("--customer", help="Only these customers (repeatable).")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Act on every campaign's uncertain messages.")]


def _register_uncertain(app: typer.Typer) -> None:
    """`winback uncertain list|resend|drop`: sends nobody could confirm, held for a person to decide."""
    group = typer.Typer(help="Sends nobody could confirm (the provider had no lookup): held for a person. "
                             "List them, resend them (a second copy if the first did arrive), or drop them.",
                        no_args_is_help=True)
    app.add_typer(group, name="uncertain")

    def held(ledger, campaign, customers):
        rows = ledger.uncertain(campaign)
        if customers:
            rows = rows[rows["customer_id"].astype(str).isin(set(customers))]
        return rows

    @group.command("list")
    def list_cmd(campaign: CampaignOpt = None, ledger: LedgerOpt = None, customers: CustomersOpt = None,
                 as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False) -> None:
        """Show the messages held as uncertain, oldest first, with why nobody could tell."""
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from winback.resources import Resources, RunSettings

        with Resources(RunSettings.from_env(ledger_url=ledger)) as resources:
            rows = held(resources.ledger, campaign, customers)
        columns = ["campaign_id", "customer_id", "step", "channel", "to_address", "provider", "updated_at", "error"]
        if as_json:
            for record in rows[columns].astype(object).where(rows[columns].notna(), None).to_dict("records"):
                typer.echo(json.dumps(record, ensure_ascii=False, default=str))
            return
        table = Table(title=Text(f"uncertain: {len(rows)} held for a person"))
        for column in columns:
            table.add_column(column)
        for record in rows[columns].itertuples(index=False):
            table.add_row(*(Text("" if v is None or v != v else str(v)) for v in record))
        Console().print(table)

    def decide(action: str, campaign, ledger, customers, yes: bool) -> None:
        from winback.resources import Resources, RunSettings

        with Resources(RunSettings.from_env(ledger_url=ledger)) as resources:
            store = resources.ledger
            rows = held(store, campaign, customers)
            if len(rows) and not yes and campaign is None and not customers:
                raise ConfigError(f"this would {action} {len(rows)} messages of every campaign",
                                  hint="name --campaign (or --customer), or confirm with --yes")
            now = resources.clock.now()
            if action == "resend":
                n = store.release(rows, from_states=("uncertain",), now=now)
                typer.echo(f"{n} uncertain messages back to planned: the next `winback send` or dispatch sends "
                           "them (a second copy for any customer whose first one did arrive).")
            else:
                n = store.drop_uncertain(rows, now=now)
                typer.echo(f"{n} uncertain messages dropped (recorded failed, never resent).")

    @group.command("resend")
    def resend_cmd(campaign: CampaignOpt = None, ledger: LedgerOpt = None, customers: CustomersOpt = None,
                   yes: YesOpt = False) -> None:
        """Put held messages back to planned, to be sent again by the next send or dispatch."""
        decide("resend", campaign, ledger, customers, yes)

    @group.command("drop")
    def drop_cmd(campaign: CampaignOpt = None, ledger: LedgerOpt = None, customers: CustomersOpt = None,
                 yes: YesOpt = False) -> None:
        """Give held messages up: recorded failed with their reason, never resent."""
        decide("drop", campaign, ledger, customers, yes)
