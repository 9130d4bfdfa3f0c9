"""The `winback-campaign` flow: load → validate → segment → plan → persist → dispatch what is due."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.artifacts import publish_plan
from flows.dispatch import dispatch_flow
from flows.tasks import load_campaign_task, load_sources_task, persist_plan_task, plan_task, segment_task
from winback.config import ledger_url as default_ledger_url
from winback.config import parse_timestamp, utc_now


def _run_name() -> str:
    params = flow_run.parameters
    campaign = str(params.get("campaign", "campaign")).rsplit("/", 1)[-1].removesuffix(".yaml")
    return f"{campaign} · {params.get('as_of') or 'today'}" + (" · dry run" if params.get("dry_run") else "")


@flow(name="winback-campaign", flow_run_name=_run_name, log_prints=False)
def campaign_flow(
    campaign: str,
    as_of: str | None = None,
    dry_run: bool = False,
    world: str | None = None,
    ledger_url: str | None = None,
    emulator_url: str | None = None,
    provider_config: str | None = None,
    now: str | None = None,
    batch_size: int = 5000,
) -> dict:
    """Plan a win-back campaign for `as_of` (default: now), persist it idempotently and send what is due.

    `world` reads a demo-data folder instead of the campaign's own sources; `now` pretends it is
    later (tests and the demo). A second run for the same campaign and date plans nothing new.
    """
    now_ts = parse_timestamp(now, option="now") or utc_now()
    as_of_ts = parse_timestamp(as_of) or now_ts
    url = default_ledger_url(ledger_url)
    spec = load_campaign_task(campaign)
    inputs = load_sources_task(spec, world)
    segments = segment_task(inputs, as_of_ts)
    plan = plan_task(spec, inputs, segments, as_of_ts, url)
    publish_plan(spec.id, plan, budget=spec.budget, currency=spec.brand.currency,
                 as_of=str(as_of_ts.date()), dry_run=dry_run)
    summary = {"campaign_id": spec.id, "as_of": str(as_of_ts), "dry_run": dry_run,
               "audience": len(plan), "arms": plan["arm"].value_counts().to_dict()}
    if dry_run:
        return summary
    summary["persisted"] = persist_plan_task(plan, url)
    summary["dispatch"] = dispatch_flow(
        campaign=campaign, now=str(now_ts), world=world, ledger_url=url, emulator_url=emulator_url,
        provider_config=provider_config, batch_size=batch_size,
    )
    return summary
