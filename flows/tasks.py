"""Prefect tasks of winback: each wraps one step of the library over a whole batch.

No business logic lives here: the functions called are the library's own (`winback.sources`,
`winback.segments`, `winback.campaigns`, `winback.ledger`, `winback.channels`, `winback.measure`),
the same ones `bench/orchestration.py` calls directly. Tasks do not cache (their inputs are large
frames) and only the send task retries, and only on retryable errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from winback.errors import ConfigError, RetryableChannelError

CAMPAIGNS_DIR = Path("campaigns")


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The run logger inside a flow or task run; a plain logger when a task's `.fn` is called directly."""
    try:
        return get_run_logger()
    except Exception:  # MissingContextError: called outside Prefect (benchmarks, scripts)
        return logging.getLogger("winback")


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
    from winback.campaigns import resolve_sources
    from winback.sources import load_inputs

    inputs = load_inputs(**resolve_sources(campaign, world=world))
    logger = _log()
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
    _log().info("Persisted %s new ledger rows (%s already planned)", inserted, len(plan) - inserted)
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
def send_batch_task(campaign, *, channel: str, batch_size: int, emulator_url, provider_config, ledger_url,
                    now, concurrency, uncertain_policy) -> dict:
    """Claim one batch of due rows of `channel`, send it and record every outcome right after.

    A provider outage releases the unsent rows back to `planned` and raises a retryable error, so
    Prefect retries the batch later; permanent failures are recorded per message and never retried.
    """
    import asyncio

    from winback.channels.dispatch import dispatch_batch
    from winback.ledger import Ledger

    ledger = Ledger(ledger_url)
    rows = ledger.claim(campaign.id, now=now, limit=batch_size, channel=channel)
    if rows.empty:
        return {"messages": 0, "sent": 0, "suppressed": 0, "uncertain": {}, "failed": {}}

    async def body(settings):
        return await dispatch_batch(rows, ledger, settings)

    try:
        summary = asyncio.run(_with_settings(campaign, emulator_url, provider_config, concurrency,
                                             uncertain_policy, body))
    except ConfigError:  # raised before anything was sent (no router, no secret): nothing went out
        ledger.release(rows)
        raise
    result = {**summary.to_dict(), "messages": summary.messages}
    _log().info("Batch of %s %s messages: %s sent, failed %s", len(rows), channel, summary.sent,
                          dict(summary.failed) or 0)
    if summary.outage:
        raise RetryableChannelError(f"provider outage, unsent rows left planned: {summary.outage}")
    return result


@task(name="list campaigns in the ledger", cache_policy=NO_CACHE)
def campaigns_in_ledger_task(ledger_url: str) -> list[str]:
    """Ids of every campaign with rows in the ledger (the dispatch flow serves them all)."""
    from winback.ledger import Ledger

    return list(Ledger(ledger_url).campaigns())


# A killed run's slot is freed when its lease lapses; a live holder renews it in the background.
LOCK_LEASE_SECONDS = 60  # the server accepts leases of 60 s or more


@contextmanager
def campaign_lock(name: str, *, wait_seconds: float) -> Iterator[bool]:
    """Hold Prefect global concurrency limit `name` (limit 1); yields False when not acquired in time."""
    from prefect.concurrency.sync import concurrency

    ensure_concurrency_limit(name)
    slot = concurrency(name, occupy=1, strict=True, timeout_seconds=wait_seconds,
                       lease_duration=LOCK_LEASE_SECONDS)
    try:
        slot.__enter__()
    except TimeoutError:
        yield False
        return
    try:
        yield True
    finally:
        slot.__exit__(None, None, None)


def ensure_concurrency_limit(name: str, limit: int = 1) -> str:
    """Create the global concurrency limit `name` if missing (without one, `concurrency()` is a no-op)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except Exception:  # ObjectNotFound: create it
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
    return name


@task(name="plan due cadence steps", cache_policy=NO_CACHE)
def advance_cadence_task(campaign, world: str | None, ledger_url: str, now: pd.Timestamp) -> int:
    """Plan step n+1 for customers of step n whose delay has passed and who have not come back."""
    from winback.campaigns import plan_followup
    from winback.ledger import Ledger

    if len(campaign.cadence) < 2:
        return 0
    ledger = Ledger(ledger_url)
    prior = ledger.rows(campaign.id)
    if prior.empty or not _cadence_due(campaign, prior, now):
        return 0
    inputs = load_sources_task.fn(campaign, world)
    since = now - pd.Timedelta(days=90)
    planned = 0
    for step in range(2, len(campaign.cadence) + 1):
        rows = plan_followup(
            campaign, step, prior, inputs.customers, inputs.orders, now=now,
            suppressions=ledger.suppressions(), contact_history=ledger.contact_history(since),
        )
        if len(rows):
            planned += ledger.plan(rows)
            prior = ledger.rows(campaign.id)
    _log().info("Planned %s rows of later cadence steps", planned)
    return planned


def _cadence_due(campaign, prior: pd.DataFrame, now: pd.Timestamp) -> bool:
    """Cheap check before loading any data: is some later step due for someone not yet planned for it?"""
    steps = prior["step"].astype(int)
    sent = pd.to_datetime(prior.get("sent_at"), utc=True).fillna(pd.to_datetime(prior["send_at_utc"], utc=True))
    for i in range(1, len(campaign.cadence)):
        delay = pd.Timedelta(days=campaign.cadence[i].day - campaign.cadence[i - 1].day)
        prev = (steps == i) & (sent + delay <= now)
        done = set(prior.loc[steps == i + 1, "customer_id"])
        if (prev & ~prior["customer_id"].isin(done)).any():
            return True
    return False


def _provider_config(emulator_url: str | None, provider_config: str | None, call_list_dir: str = "call-lists"):
    from winback.channels.providers import load_provider_config, provider_config_for_emulator

    if (emulator_url is None) == (provider_config is None):
        raise ConfigError("give exactly one of emulator_url and provider_config", field="provider_config")
    if emulator_url:
        return provider_config_for_emulator(emulator_url, out_dir=call_list_dir)
    return load_provider_config(provider_config)


async def _with_settings(campaign, emulator_url, provider_config, concurrency, uncertain_policy, body):
    """Open the provider router and build the send settings for one batch, then run `body(settings)`."""
    import os

    from winback.channels.dispatch import SendSettings
    from winback.channels.providers import Router
    from winback.config import secret
    from winback.render import Renderer

    # With the emulator, call lists (定期回访) are written as CSV files here, one per account manager.
    config = _provider_config(emulator_url, provider_config, os.environ.get("WINBACK_CALL_LIST_DIR", "call-lists"))
    renderer = Renderer(campaign.templates_path(), locale_fallback=campaign.locale_fallback,
                        unsubscribe_mailto=config.unsubscribe_mailto)
    async with Router(config) as router:
        settings = SendSettings.from_config(
            config, router=router, renderer=renderer, concurrency=concurrency,
            sender_email=campaign.brand.sender_email, sender_name=campaign.brand.sender_name,
            unsubscribe_secret=secret("WINBACK_UNSUBSCRIBE_SECRET"), uncertain_policy=uncertain_policy,
        )
        return await body(settings)


@task(name="reconcile interrupted sends", cache_policy=NO_CACHE)
def reconcile_task(campaign, *, emulator_url, provider_config, ledger_url, now, concurrency,
                   uncertain_policy) -> dict[str, int]:
    """Rows a crashed run left in `sending`: look each up at its provider before anything is resent."""
    import asyncio

    from winback.channels.dispatch import reconcile_in_flight
    from winback.ledger import Ledger

    ledger = Ledger(ledger_url)
    if ledger.in_flight(campaign.id).empty:
        return {}

    async def body(settings):
        return await reconcile_in_flight(ledger, settings, campaign_id=campaign.id)

    summary = asyncio.run(_with_settings(campaign, emulator_url, provider_config, concurrency,
                                         uncertain_policy, body))
    _log().info("Reconciled interrupted sends: %s", summary.to_dict())
    return dict(summary.reconciled)


@task(name="count due messages", cache_policy=NO_CACHE)
def due_by_channel_task(ledger_url: str, campaign_id: str, now: pd.Timestamp) -> dict[str, int]:
    """Planned rows whose send time has come, per channel (sizes the batches and the progress bar)."""
    from winback.ledger import Ledger

    rows = Ledger(ledger_url).rows(campaign_id)
    if rows.empty:
        return {}
    due = rows[(rows["state"] == "planned") & (pd.to_datetime(rows["send_at_utc"], utc=True) <= now)]
    return {str(k): int(v) for k, v in due["channel"].value_counts().sort_index().items()}
