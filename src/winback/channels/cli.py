"""`winback emulator` (the local provider emulator) and `winback send` (the exactly-once send engine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from winback.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add `emulator` and `send` to the winback command line."""

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
        uncertain: Annotated[str, typer.Option("--uncertain", help="Policy for sends nobody can confirm: resend|skip.")] = "resend",
        max_attempts: Annotated[int, typer.Option("--max-attempts", help="Tries per message.")] = 5,
        stale_after: Annotated[float, typer.Option("--stale-after", help="Seconds after which a `sending` row counts as abandoned by a crashed run (0: all; set it when another sender may be running).")] = 0.0,
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
        from winback.channels.dispatch import (
            DispatchSummary,
            SendSettings,
            count_due,
            dispatch,
            dispatch_in_processes,
            run_async,
        )
        from winback.channels.providers import Router, load_provider_config, provider_config_for_emulator
        from winback.config import ledger_url, parse_timestamp, secret, utc_now
        from winback.ledger import Ledger
        from winback.render import Renderer
        from winback.sources.files import read_table

        if (provider_config is None) == (emulator is None):
            raise ConfigError("give exactly one of --provider-config and --emulator", field="--provider-config")
        if uncertain not in ("resend", "skip"):
            raise ConfigError("must be 'resend' or 'skip'", field="--uncertain")
        if concurrency < 1 or batch_size < 1 or max_attempts < 1 or workers < 1:
            raise ConfigError("--concurrency, --batch-size, --max-attempts and --workers must be at least 1")
        if not plan.exists():
            raise ConfigError("plan file not found", path=str(plan))
        config = (load_provider_config(provider_config) if provider_config is not None
                  else provider_config_for_emulator(emulator, smtp_port=smtp_port))
        updates = {}
        if email_provider:
            if email_provider not in ("sendgrid", "mailgun", "smtp"):
                raise ConfigError("must be sendgrid, mailgun or smtp", field="--email-provider")
            updates["email"] = email_provider
        if transport:
            if transport not in ("aiohttp", "httpx"):
                raise ConfigError("must be aiohttp or httpx", field="--transport")
            updates["transport"] = transport
        if updates:
            config = config.model_copy(update=updates)
        frame = read_table(plan)
        when = parse_timestamp(now, option="--now") if now else utc_now()
        renderer = Renderer(templates, unsubscribe_mailto=config.unsubscribe_mailto)
        unsubscribe_secret = secret("WINBACK_UNSUBSCRIBE_SECRET",
                                    required=bool((frame.get("channel") == "email").any()) if "channel" in frame else False)
        url = ledger_url(ledger)
        store = Ledger(url)
        show_progress = not (no_progress or as_json)

        def run(ledger_store, *, share: int = 1, reconcile: bool = True, max_batches: int | None = None,
                progress=None) -> DispatchSummary:
            async def go():
                async with Router(config) as router:
                    settings = SendSettings.from_config(
                        config, router=router, renderer=renderer, concurrency=concurrency, share=share,
                        unsubscribe_secret=unsubscribe_secret, max_attempts=max_attempts,
                        uncertain_policy=uncertain, progress=progress,
                    )
                    return await dispatch(ledger_store, settings, now=when, batch_size=batch_size,
                                          stale_after_s=stale_after, reconcile=reconcile, max_batches=max_batches)
            return run_async(go())

        def sender(index: int, progress) -> DispatchSummary:  # one of --workers processes
            own = Ledger(url)
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
                result.remaining_planned = store.status(None).get("planned", 0)
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
            inserted = store.plan(frame)  # the whole plan is persisted before the first send
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

                total = count_due(store, now=when)
                with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              transient=True) as bar:
                    task = bar.add_task("send", total=total or None)
                    summary = send_all(lambda n: bar.advance(task, n), started, inserted)
        finally:
            gc.set_threshold(*threshold)
            gc.unfreeze()
            store.close()
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), ensure_ascii=False))
        else:
            from rich.console import Console
            from rich.table import Table

            from winback.channels.dispatch import summary_rows

            table = Table(title=f"winback send — {plan.name}", show_header=False)
            table.add_column("what")
            table.add_column("count", justify="right")
            table.add_row("new rows planned", str(summary.planned_new))
            for label, value in summary_rows(summary):
                table.add_row(label, value)
            Console().print(table)
        if summary.outage:
            from winback.errors import ChannelError

            raise ChannelError(f"provider outage, stopped: {summary.outage}; "
                               f"{summary.released} messages left planned",
                               hint="re-run `winback send` with the same plan once the provider is back")
