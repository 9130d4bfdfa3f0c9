"""The `winback-dispatch` flow: advance cadences, then send every planned message whose time has come."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from flows.artifacts import artifact_key, dispatch_markdown
from flows.tasks import (
    advance_cadence_task,
    campaigns_in_ledger_task,
    due_by_channel_task,
    ensure_concurrency_limit,
    load_campaign_task,
    reconcile_task,
    send_batch_task,
)
from winback.config import ledger_url as default_ledger_url
from winback.config import parse_timestamp, utc_now


def _run_name() -> str:
    params = flow_run.parameters
    return f"dispatch {params.get('campaign') or 'all campaigns'} · {params.get('now') or 'now'}"


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
) -> dict:
    """For each campaign (one, or every campaign in the ledger): plan due cadence steps, reconcile
    interrupted sends, then send what is due in batches. Meant to run every 15 minutes."""
    now_ts = parse_timestamp(now, option="now") or utc_now()
    url = default_ledger_url(ledger_url)
    refs = [campaign] if campaign else campaigns_in_ledger_task(url)
    send = dict(emulator_url=emulator_url, provider_config=provider_config, ledger_url=url, now=now_ts,
                concurrency=concurrency_per_batch, uncertain_policy=uncertain_policy)
    results = {}
    for ref in refs:
        spec = load_campaign_task(ref)
        lock = ensure_concurrency_limit(f"winback-dispatch-{spec.id}")
        with concurrency(lock, occupy=1, strict=True):
            followups = advance_cadence_task(spec, world, url, now_ts)
            reconciled = reconcile_task(spec, **send)
            due = due_by_channel_task(url, spec.id, now_ts)
            total = max(sum(due.values()), 1)
            progress = create_progress_artifact(0.0, key=artifact_key(spec.id, "send-progress"),
                                                description=f"Sending {spec.id}")
            totals, failures, done, batches = {"sent": 0, "suppressed": 0, "uncertain": 0}, {}, 0, 0
            for channel, n_due in due.items():
                n_batches = -(-n_due // batch_size)
                for i in range(1, n_batches + 1):
                    summary = send_batch_task.with_options(
                        task_run_name=f"send batch {i}/{n_batches} · {channel}"
                    )(spec, channel=channel, batch_size=batch_size, **send)
                    batches += 1
                    done += summary["messages"]
                    totals["sent"] += summary["sent"]
                    totals["suppressed"] += summary["suppressed"]
                    totals["uncertain"] += sum(summary["uncertain"].values())
                    for reason, n in summary["failed"].items():
                        failures[reason] = failures.get(reason, 0) + n
                    update_progress_artifact(progress, min(100.0, 100.0 * done / total))
            update_progress_artifact(progress, 100.0)
        status = reconciled["status"]
        create_markdown_artifact(
            dispatch_markdown(spec.id, str(now_ts), totals, failures, status, batches),
            key=artifact_key(spec.id, "dispatch"), description=f"Dispatch result of {spec.id}",
        )
        results[spec.id] = {**totals, "failed": failures, "followups_planned": followups, "batches": batches,
                            "reconciled": reconciled["reconciled"]}
        get_run_logger().info("Dispatched %s: %s", spec.id, results[spec.id])
    return results
