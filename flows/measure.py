"""The `winback-measure` flow: who came back because of the campaign, against its holdout."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.artifacts import artifact_key, by_offer_rows, png_data_uri, uplift_markdown
from flows.tasks import ok, user_errors
from winback.campaigns.loading import find_campaign
from winback.clock import Clock
from winback.config import parse_timestamp
from winback.errors import ConfigError
from winback.resources import Resources, RunSettings


def _run_name() -> str:
    params = flow_run.parameters
    return f"measure {params.get('campaign') or 'open campaigns'} · {params.get('window_days', 30)} days"


@task(name="campaigns to measure", cache_policy=NO_CACHE)
@user_errors
def campaigns_to_measure_task(settings: RunSettings, campaign: str | None, window_days: int) -> list[str]:
    """The named campaign (checked against the ledger), or every campaign whose window is open or just closed."""
    from winback.measure.run import campaigns_to_measure

    with Resources(settings) as resources:
        known = resources.ledger.campaigns()
        if campaign:
            if campaign not in known:
                raise ConfigError(f"no campaign {campaign!r} in the ledger; known: {', '.join(known) or '(none)'}",
                                  field="campaign")
            return [campaign]
        return campaigns_to_measure(resources.ledger, now=resources.clock.now(), window_days=window_days)


@task(name="measure campaign", cache_policy=NO_CACHE)
@user_errors
def measure_task(campaign_id: str, window_days: int, orders: str | None, world: str | None,
                 settings: RunSettings, as_of, out_dir: str | None):
    """Attribution, uplift with CIs, cost and ROI; writes the report, table and plots; stores offer results."""
    from winback.measure import measure_from_ledger

    with Resources(settings) as resources:
        return measure_from_ledger(
            campaign_id, ledger=resources.ledger, window_days=window_days, orders=orders, world=world,
            as_of=as_of, out_dir=Path(out_dir) if out_dir else None, learn=True, orders_option="orders",
        )


@flow(name="winback-measure", flow_run_name=_run_name)
@user_errors
def measure_flow(
    campaign: str | None = None,
    window_days: int = 30,
    orders: str | None = None,
    world: str | None = None,
    ledger_url: str | None = None,
    as_of: str | None = None,
    out_dir: str | None = None,
) -> dict:
    """Measure a campaign (by id; default: every campaign whose attribution window is open or just
    closed), orders from the campaign's own sources: return rate and revenue per arm, uplift with 95%
    CIs, offer cost, ROI."""
    if window_days <= 0:
        raise ConfigError("must be a positive number of days", field="window_days")
    clock = Clock.starting_at(parse_timestamp(as_of, option="as_of"))
    settings = RunSettings.from_env(ledger_url=ledger_url, now=clock.now() if as_of else None)
    results = {}
    for campaign_id in ok(campaigns_to_measure_task(settings, campaign, window_days)):
        spec = find_campaign(campaign_id)
        folder = out_dir or tempfile.mkdtemp(prefix=f"winback-measure-{campaign_id}-")
        result = ok(measure_task(campaign_id, window_days, orders, world, settings, clock.now(), folder))
        measured = result.to_json()
        currency = spec.brand.currency if spec is not None else ""
        title = f"{spec.name if spec is not None else campaign_id} — uplift against the holdout"
        images = {k: png_data_uri(p) for k, p in result.paths.items() if k.endswith("_png") and Path(p).exists()}
        create_markdown_artifact(uplift_markdown(measured, currency=currency, title=title, images=images),
                                 key=artifact_key(campaign_id, "uplift"), description=f"Uplift report of {campaign_id}")
        create_table_artifact(by_offer_rows(measured, currency=currency),
                              key=artifact_key(campaign_id, "uplift-by-offer"),
                              description=f"Uplift per offer of {campaign_id}")
        get_run_logger().info("Measured %s: %s", campaign_id, result.headline())
        results[campaign_id] = measured
    if not results:
        get_run_logger().info("No campaign with an open attribution window in the ledger")
    return results if campaign is None else results[campaign]
