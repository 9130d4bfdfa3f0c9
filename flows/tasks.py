"""Prefect tasks of winback: each wraps one step of the library over a whole batch.

No business logic lives here: the functions called are the library's own (`winback.sources`,
`winback.segments`, `winback.campaigns`, `winback.ledger`, `winback.channels`, `winback.measure`),
the same ones `bench/orchestration.py` calls directly. Tasks do not cache (their inputs are large
frames) and only the send task retries, and only on retryable errors.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from winback.errors import ConfigError, RetryableChannelError

CAMPAIGNS_DIR = Path("campaigns")


def campaign_path(ref: str, search_dir: Path = CAMPAIGNS_DIR) -> Path:
    """A campaign given as a YAML path or as its id (looked up in `campaigns/*.yaml`)."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError("campaign file not found", path=str(path))
        return path
    from winback.campaigns import load_campaign

    for candidate in sorted(search_dir.glob("*.y*ml")):
        try:
            if load_campaign(candidate).id == ref:
                return candidate
        except ConfigError:
            continue
    raise ConfigError(f"no campaign with id {ref!r} in {search_dir}/", field="campaign")


@task(name="load campaign", cache_policy=NO_CACHE)
def load_campaign_task(ref: str):
    """Load and validate the campaign definition."""
    from winback.campaigns import load_campaign

    return load_campaign(campaign_path(ref))


@task(name="load and validate sources", cache_policy=NO_CACHE)
def load_sources_task(campaign, world: str | None):
    """Read customers, orders and complaints (the campaign's sources or a demo world) and validate them."""
    from winback.campaigns.sources import resolve_sources
    from winback.sources import load_inputs

    src = resolve_sources(campaign, world=world)
    inputs = load_inputs(**src)
    logger = get_run_logger()
    logger.info(
        "Loaded %s customers, %s orders; quarantined %s rows %s",
        f"{len(inputs.customers):,}", f"{len(inputs.orders):,}", f"{len(inputs.quarantine):,}",
        dict(inputs.counts) or "",
    )
    return inputs


@task(name="segment customers", cache_policy=NO_CACHE)
def segment_task(inputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """RFM, own rhythm, BG/NBD P(alive), value tier, lapse stage and likely reason for every customer."""
    from winback.segments import segment_customers

    return segment_customers(
        inputs.customers, inputs.orders, inputs.complaints, as_of=as_of,
        departed_managers=tuple(getattr(inputs, "departed_managers", ()) or ()),
    )


@task(name="build plan", cache_policy=NO_CACHE)
def plan_task(campaign, inputs, segments: pd.DataFrame, as_of: pd.Timestamp, ledger_url: str) -> pd.DataFrame:
    """Contact policy, holdout, offers, budget, coupon codes and send times: the decision table."""
    from winback.campaigns import build_plan
    from winback.ledger import Ledger
    from winback.measure.learning import ThompsonLearner

    ledger = Ledger(ledger_url)
    since = as_of - pd.Timedelta(days=90)
    return build_plan(
        campaign, inputs.customers, segments, as_of=as_of,
        suppressions=ledger.suppressions(), contact_history=ledger.contact_history(since),
        learner=ThompsonLearner.from_ledger(ledger),
    )


@task(name="persist plan to the ledger", cache_policy=NO_CACHE)
def persist_plan_task(plan: pd.DataFrame, ledger_url: str) -> int:
    """Insert the plan's treatment and holdout rows; keys already in the ledger are left alone."""
    from winback.ledger import Ledger

    inserted = Ledger(ledger_url).plan(plan)
    get_run_logger().info("Persisted %s new ledger rows (%s already planned)", inserted, len(plan) - inserted)
    return inserted


def _retry_only_retryable(task, task_run, state) -> bool:
    """Prefect retry condition: retry a send batch only when it failed with a retryable error."""
    try:
        state.result()
    except RetryableChannelError:
        return True
    except Exception:
        return False
    return False


@task(name="send batch", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[5, 30, 120],
      retry_condition_fn=_retry_only_retryable)
def send_batch_task(sender, rows: pd.DataFrame):
    """Send one claimed batch and record every outcome in the ledger right after."""
    return sender.send_rows(rows)
