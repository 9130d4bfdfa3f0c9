"""The `winback-campaign` flow: load → validate → segment → plan → persist → dispatch what is due."""

from __future__ import annotations

from prefect import flow, tags
from prefect.runtime import flow_run

from flows.artifacts import publish_plan
from flows.dispatch import dispatch_flow
from flows.tasks import (
    check_providers_task,
    load_campaign_task,
    load_sources_task,
    ok,
    persist_plan_task,
    plan_task,
    segment_task,
    user_errors,
)
from winback.clock import Clock
from winback.config import parse_timestamp
from winback.resources import RunSettings


def _run_name() -> str:
    """`老客回流 · 2026 冬季挽回 · 2026-11-23`: the campaign's own name and the business date."""
    from winback.campaigns.loading import find_campaign

    params = flow_run.parameters
    ref = str(params.get("campaign", "campaign"))
    spec = find_campaign(ref)
    name = spec.name if spec is not None else ref.rsplit("/", 1)[-1].removesuffix(".yaml")
    day = params.get("as_of") or (str(flow_run.scheduled_start_time)[:10] if flow_run.scheduled_start_time else "today")
    return f"{name} · {day}" + (" · dry run" if params.get("dry_run") else "")


@flow(name="winback-campaign", flow_run_name=_run_name, log_prints=False)
@user_errors
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
    A bare date (as_of or now) is the end of that day in the campaign's default zone.
    """
    spec = ok(load_campaign_task(campaign))
    with tags(f"campaign:{spec.id}"):  # runs and task runs filterable per campaign in the UI
        zone = spec.policy.default_timezone
        clock = Clock.starting_at(parse_timestamp(now, option="now", tz=zone))
        as_of_ts = parse_timestamp(as_of, tz=zone) or clock.now()
        settings = RunSettings.from_env(ledger_url=ledger_url, emulator_url=emulator_url, provider_config=provider_config,
                                        now=clock.now() if now else None)
        if not dry_run:
            ok(check_providers_task(settings))
        inputs = ok(load_sources_task(spec, world))
        segments = ok(segment_task(inputs, as_of_ts, spec.segments_model))
        plan = ok(plan_task(spec, inputs, segments, as_of_ts, settings))
        publish_plan(spec.id, plan, budget=spec.budget, currency=spec.brand.currency, name=spec.name,
                     as_of=str(as_of_ts.tz_convert(zone).date()), dry_run=dry_run)
        summary = {"campaign_id": spec.id, "as_of": str(as_of_ts), "dry_run": dry_run,
                   "audience": len(plan), "arms": plan["arm"].value_counts().to_dict()}
        if dry_run:
            return summary
        counts = ok(persist_plan_task(plan, settings.model_copy(update={"now": clock.now() if now else None})))
        summary["persisted"] = counts["new"]
        summary["already_planned"] = counts["already_planned"]
        summary["dispatch"] = dispatch_flow(
            campaign=str(spec.source_file or campaign), now=str(clock.now()) if now else None, world=world,
            ledger_url=ledger_url, emulator_url=emulator_url, provider_config=provider_config, batch_size=batch_size,
        )
        return summary
