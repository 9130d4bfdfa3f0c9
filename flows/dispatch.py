"""The `winback-dispatch` flow: advance cadences, then send every planned message whose time has come."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run

from flows.artifacts import artifact_key, dispatch_markdown
from flows.tasks import (
    campaign_lock,
    campaigns_in_ledger_task,
    check_providers_task,
    count_due_task,
    ledger_status_task,
    load_campaign_task,
    ok,
    prepare_dispatch_task,
    send_batch_task,
    user_errors,
)
from winback.channels.dispatch import DispatchSummary
from winback.clock import Clock
from winback.config import parse_timestamp
from winback.resources import RunSettings


def _run_name() -> str:
    """`dispatch 老客回流 · 2026 冬季挽回 · 2026-11-24 09:30`: the campaign's name, the time in its zone."""
    import pandas as pd

    from winback.campaigns.loading import find_campaign

    params = flow_run.parameters
    ref = params.get("campaign")
    spec = find_campaign(str(ref)) if ref else None
    name = spec.name if spec is not None else (str(ref).rsplit("/", 1)[-1].removesuffix(".yaml") if ref
                                                  else "all campaigns")
    zone = spec.policy.default_timezone if spec is not None else "Asia/Shanghai"
    when = params.get("now") or flow_run.scheduled_start_time
    if not when:
        return f"dispatch {name}"
    try:
        stamp = pd.Timestamp(str(when)).tz_convert(zone).strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        stamp = str(when)[:16]
    return f"dispatch {name} · {stamp}"


@flow(name="winback-dispatch", flow_run_name=_run_name)
@user_errors
def dispatch_flow(
    campaign: str | None = None,
    now: str | None = None,
    world: str | None = None,
    ledger_url: str | None = None,
    emulator_url: str | None = None,
    provider_config: str | None = None,
    batch_size: int = 2000,
    concurrency_per_batch: int = 64,
    uncertain_policy: str = "hold",
    lock_wait_seconds: float = 600,
) -> dict:
    """For each campaign (one, or every campaign in the ledger): plan due cadence steps, then run the
    send engine batch by batch (reconcile, gate, send, record). Meant to run every 15 minutes."""
    clock = Clock.starting_at(parse_timestamp(now, option="now"))

    def settings() -> RunSettings:  # each task's resources start at the flow's current business time
        return RunSettings.from_env(ledger_url=ledger_url, emulator_url=emulator_url, provider_config=provider_config,
                                    now=clock.now() if now else None, concurrency=concurrency_per_batch,
                                    uncertain_policy=uncertain_policy)

    ok(check_providers_task(settings()))
    results = {}
    for ref in [campaign] if campaign else ok(campaigns_in_ledger_task(settings())):
        spec = ok(load_campaign_task(ref))
        with campaign_lock(f"winback-dispatch-{spec.id}", wait_seconds=lock_wait_seconds) as held:
            if not held:
                get_run_logger().warning("Another dispatch of %s is still running; skipped", spec.id)
                results[spec.id] = {"skipped": "another dispatch is running"}
                continue
            followups, last_orders = ok(prepare_dispatch_task(spec, world, settings()))
            summary = _send_due(spec, settings, last_orders, batch_size)
            results[spec.id] = {**summary.to_dict(), "followups_planned": followups}
        get_run_logger().info("Dispatched %s: %s sent, gate %s", spec.id, summary.sent, dict(summary.gated) or 0)
    return results


def _send_due(spec, settings, last_orders, batch_size: int) -> DispatchSummary:
    """Run the send engine one batch per task until nothing is due; progress and result artifacts."""
    total = ok(count_due_task(settings(), spec.id))
    summary = DispatchSummary()
    progress = None
    if total:
        progress = create_progress_artifact(0.0, key=artifact_key(spec.id, "send-progress"),
                                            description=f"Sending {spec.id}")
    batches = 0
    while True:
        batch = DispatchSummary.from_dict(ok(send_batch_task.with_options(task_run_name=f"send batch {batches + 1}")(
            spec, spec.id, settings(), last_orders=last_orders, batch_size=batch_size, reconcile=batches == 0)))
        summary.merge(batch)
        summary.remaining_planned = batch.remaining_planned  # the ledger's count after the latest batch
        batches += 1
        if progress is not None:
            update_progress_artifact(progress, min(100.0, 100.0 * (summary.messages + sum(summary.gated.values()))
                                                   / max(total, 1)))
        if batch.messages + batch.released + batch.in_doubt + batch.throttled == 0:
            break  # the engine found nothing more to claim
    if progress is not None:
        update_progress_artifact(progress, 100.0)
    if summary.messages or summary.gated or summary.reconciled:
        # An empty dispatch (every 15 minutes) does not overwrite the last one that did something.
        create_markdown_artifact(
            dispatch_markdown(spec.id, str(settings().now or "now"), summary,
                              ok(ledger_status_task(settings(), spec.id))),
            key=artifact_key(spec.id, "dispatch"), description=f"Dispatch result of {spec.id}",
        )
    return summary
