"""The `winback-measure` flow: who came back because of the campaign, against its holdout."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.artifacts import artifact_key
from winback.config import ledger_url as default_ledger_url
from winback.config import parse_timestamp


def _run_name() -> str:
    params = flow_run.parameters
    return f"measure {params.get('campaign')} · {params.get('window_days', 30)} days"


@task(name="measure campaign", cache_policy=NO_CACHE)
def measure_task(campaign_id: str, window_days: int, orders: str | None, world: str | None,
                 ledger_url: str, as_of: str | None, out_dir: str | None):
    """Attribution, uplift with CIs, cost and ROI; writes the report, table and plots; stores offer results."""
    from winback.measure import measure_from_ledger

    return measure_from_ledger(
        campaign_id, ledger_url=ledger_url, window_days=window_days, orders=orders, world=world,
        as_of=parse_timestamp(as_of), out_dir=Path(out_dir) if out_dir else None, learn=True,
    )


@flow(name="winback-measure", flow_run_name=_run_name)
def measure_flow(
    campaign: str,
    window_days: int = 30,
    orders: str | None = None,
    world: str | None = None,
    ledger_url: str | None = None,
    as_of: str | None = None,
    out_dir: str | None = None,
) -> dict:
    """Measure a campaign: return rate and revenue per arm, uplift with 95% CIs, offer cost, ROI."""
    url = default_ledger_url(ledger_url)
    result = measure_task(campaign, window_days, orders, world, url, as_of, out_dir)
    create_markdown_artifact(result.markdown, key=artifact_key(campaign, "uplift"),
                             description=f"Uplift report of {campaign}")
    create_table_artifact(result.by_offer_records(), key=artifact_key(campaign, "uplift-by-offer"),
                          description=f"Uplift per offer of {campaign}")
    get_run_logger().info("Measured %s: %s", campaign, result.headline())
    return result.to_json()
