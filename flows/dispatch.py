"""The `winback-dispatch` flow: advance cadences, then send every planned message whose time has come."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run

from flows.artifacts import artifact_key, dispatch_markdown
from flows.tasks import (
    advance_cadence_task,
    campaign_lock,
    campaigns_in_ledger_task,
    due_by_channel_task,
    load_campaign_task,
    reconcile_task,
    send_batch_task,
)
from winback.config import ledger_url as default_ledger_url
from winback.config import parse_timestamp, utc_now


def _run_name() -> str:
    params = flow_run.parameters
    campaign = str(params.get("campaign") or "all campaigns").rsplit("/", 1)[-1].removesuffix(".yaml")
    return f"dispatch {campaign} · {params.get('now') or 'now'}"


@flow(name="winback-dispatch", flow_run_name=_run_name)
def dispatch_flow(
    campaign: str | None = None,
    now: str | None = None,
    world: str | None = None,
    ledger_url: str | None = None,
    emulator_url: str | None = None,
    provider_config: str | None = None,
    batch_size: int = 2000,
    concurrency_per_batch: int = 64,
    uncertain_policy: str = "resend",
    lock_wait_seconds: float = 600,
) -> dict:
    """For each campaign (one, or every campaign in the ledger): plan due cadence steps, reconcile
    interrupted sends, then send what is due in batches. Meant to run every 15 minutes."""
    now_ts = parse_timestamp(now, option="now") or utc_now()
    url = default_ledger_url(ledger_url)
    send = dict(emulator_url=emulator_url, provider_config=provider_config, ledger_url=url, now=now_ts,
                concurrency=concurrency_per_batch, uncertain_policy=uncertain_policy)
    results = {}
    for ref in [campaign] if campaign else campaigns_in_ledger_task(url):
        spec = load_campaign_task(ref)
        with campaign_lock(f"winback-dispatch-{spec.id}", wait_seconds=lock_wait_seconds) as held:
            if not held:
                get_run_logger().warning("Another dispatch of %s is still running; skipped", spec.id)
                results[spec.id] = {"skipped": "another dispatch is running"}
                continue
            followups = advance_cadence_task(spec, world, url, now_ts)
            reconciled = reconcile_task(spec, **send)
            results[spec.id] = {**_send_due(spec, batch_size, send), "followups_planned": followups,
                                "reconciled": reconciled}
        get_run_logger().info("Dispatched %s: %s", spec.id, results[spec.id])
    return results


def _send_due(spec, batch_size: int, send: dict) -> dict:
    """Send every due message of one campaign in batches per channel, with a progress artifact."""
    due = due_by_channel_task(send["ledger_url"], spec.id, send["now"])
    progress = create_progress_artifact(0.0, key=artifact_key(spec.id, "send-progress"),
                                        description=f"Sending {spec.id}")
    totals = {"sent": 0, "suppressed": 0, "uncertain": 0, "failed": {}, "batches": 0}
    done = 0
    for channel, n_due in due.items():
        n_batches = -(-n_due // batch_size)
        for i in range(1, n_batches + 1):
            batch = send_batch_task.with_options(task_run_name=f"send batch {i}/{n_batches} · {channel}")(
                spec, channel=channel, batch_size=batch_size, **send)
            totals["batches"] += 1
            totals["sent"] += batch["sent"]
            totals["suppressed"] += batch["suppressed"]
            totals["uncertain"] += sum(batch["uncertain"].values())
            for reason, n in batch["failed"].items():
                totals["failed"][reason] = totals["failed"].get(reason, 0) + n
            done += batch["messages"]
            update_progress_artifact(progress, min(100.0, 100.0 * done / max(sum(due.values()), 1)))
    update_progress_artifact(progress, 100.0)
    from winback.ledger import Ledger

    create_markdown_artifact(
        dispatch_markdown(spec.id, str(send["now"]), totals, Ledger(send["ledger_url"]).status(spec.id)),
        key=artifact_key(spec.id, "dispatch"), description=f"Dispatch result of {spec.id}",
    )
    return totals
