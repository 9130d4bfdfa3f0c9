"""Prefect tasks of winback: each wraps one step of the library over a whole batch.

No business logic lives here: the functions called are the library's own (`winback.sources`,
`winback.segments`, `winback.campaigns`, `winback.channels`, `winback.measure`), and every part a
task needs (ledger, providers, renderer, clock) comes from the composition root
`winback.resources.Resources`, built from the `RunSettings` the flow passes and closed when the task
ends. Tasks do not cache (their inputs are large frames) and only the send task retries, and only on
retryable errors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from winback.errors import RetryableChannelError
from winback.resources import Resources, RunSettings


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The run logger inside a flow or task run; a plain logger when a task's `.fn` is called directly."""
    try:
        return get_run_logger()
    except Exception:  # MissingContextError: called outside Prefect (benchmarks, scripts)
        return logging.getLogger("winback")


def one_line(error: BaseException) -> str:
    """What is wrong and what to do, on one line (the CLI prints the same as `Error: …` / `Hint: …`)."""
    from winback.errors import WinbackError

    text = " ".join(str(error).split())
    hint = getattr(error, "hint", None) if isinstance(error, WinbackError) else None
    return f"{text} — {' '.join(hint.split())}" if hint else text


def user_errors(fn: Callable) -> Callable:
    """A flow or task body whose user-facing errors (`WinbackError`) end the run Failed with one line.

    The Prefect UI then shows "no provider configured: set WINBACK_PROVIDER_CONFIG …", not a 60-line
    traceback; the traceback stays in the debug log. A task's failure reaches the flow as `FailedRun`
    carrying the same line, which the flow's wrapper passes on.
    """
    from prefect.exceptions import FailedRun
    from prefect.states import Failed

    from winback.errors import WinbackError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RetryableChannelError:
            raise  # the send task's retry condition needs the exception itself
        except (WinbackError, FailedRun) as exc:
            line = one_line(exc)
            _log().error("%s", line)
            _log().debug("traceback of: %s", line, exc_info=True)
            return Failed(message=line)

    return wrapper


def ok(value):
    """A task's value in a flow; the Failed state a task returned for a user error raises `FailedRun`
    with its one line (the flow's `user_errors` ends the flow run with it)."""
    from prefect.client.schemas.objects import State
    from prefect.exceptions import FailedRun

    if isinstance(value, State) and value.is_failed():
        raise FailedRun(value.message)
    return value


@task(name="load campaign", cache_policy=NO_CACHE)
@user_errors
def load_campaign_task(ref: str):
    """Load and validate the campaign definition (a YAML path, or an id looked up in campaigns/)."""
    from winback.campaigns.loading import campaign_path, load_campaign

    return load_campaign(campaign_path(ref))


@task(name="load and validate sources", cache_policy=NO_CACHE)
@user_errors
def load_sources_task(campaign, world: str | None):
    """Read customers, orders and complaints (the campaign's sources or a demo world) and validate them."""
    from winback.resources import campaign_inputs

    inputs = campaign_inputs(campaign, world=world)
    _log().info(
        "Loaded %s customers, %s orders; quarantined %s rows %s",
        f"{len(inputs.customers):,}", f"{len(inputs.orders):,}", f"{len(inputs.quarantine):,}",
        dict(inputs.counts) or "",
    )
    return inputs


@task(name="segment customers", cache_policy=NO_CACHE)
@user_errors
def segment_task(inputs, as_of: pd.Timestamp, purchase_model: str = "auto") -> pd.DataFrame:
    """RFM, own rhythm, P(alive) from the purchase model the holdout check picks (or the campaign names),
    value tier, lapse stage and likely reason for every customer."""
    from winback.segments import segment_customers
    from winback.segments.core import SegmentParams

    return segment_customers(
        inputs.customers, inputs.orders, inputs.complaints, as_of=as_of,
        departed_managers=tuple(getattr(inputs, "departed_managers", ()) or ()),
        params=SegmentParams(purchase_model=purchase_model),
    )


@task(name="build plan", cache_policy=NO_CACHE)
@user_errors
def plan_task(campaign, inputs, segments: pd.DataFrame, as_of: pd.Timestamp, settings: RunSettings) -> pd.DataFrame:
    """Contact policy, holdout, offers, budget, coupon codes and send times: the decision table."""
    from winback.campaigns import build_plan
    from winback.campaigns.cadence import CONTACT_LOOKBACK_DAYS
    from winback.measure.learning import ThompsonLearner

    with Resources(settings) as resources:
        ledger = resources.ledger
        return build_plan(
            campaign, inputs.customers, segments, as_of=as_of, suppressions=ledger.suppressions(),
            contact_history=ledger.contact_history(as_of - pd.Timedelta(days=CONTACT_LOOKBACK_DAYS)),
            learner=ThompsonLearner.from_ledger(ledger),
        )


@task(name="persist plan to the ledger", cache_policy=NO_CACHE)
@user_errors
def persist_plan_task(plan: pd.DataFrame, settings: RunSettings) -> dict[str, int]:
    """Insert the plan's treatment and holdout rows; keys already in the ledger are left alone."""
    from winback.campaigns.decisions import plan_decisions
    from winback.ledger.decisions import record_decisions

    with Resources(settings) as resources:
        inserted = resources.ledger.plan(plan)
        # The decision trail of everyone the plan evaluated (also those left out), for `winback explain`.
        record_decisions(resources.ledger, plan_decisions(plan))
    arms = plan["arm"].value_counts()
    kept = int(arms.get("treatment", 0) + arms.get("holdout", 0))
    counts = {"new": inserted, "already_planned": kept - inserted, "excluded": int(arms.get("excluded", 0))}
    _log().info("Persisted %s new ledger rows (%s already planned; %s excluded, not stored)", counts["new"],
                counts["already_planned"], counts["excluded"])
    return counts


@task(name="check providers", cache_policy=NO_CACHE)
@user_errors
def check_providers_task(settings: RunSettings) -> str:
    """Fail at once, with one line, when no provider is configured (before any data is read)."""
    config = Resources(settings).provider_config()
    return f"email via {config.email}"


@task(name="plan due cadence steps", cache_policy=NO_CACHE)
@user_errors
def prepare_dispatch_task(campaign, world: str | None, settings: RunSettings):
    """Plan step n+1 for customers whose delay has passed and who have not come back; read last orders."""
    from winback.campaigns.cadence import prepare_dispatch

    with Resources(settings) as resources:
        followups, last_orders = prepare_dispatch(resources, campaign, world=world)
    _log().info("Planned %s rows of later cadence steps", followups)
    return followups, last_orders


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
@user_errors
def send_batch_task(campaign, campaign_id: str, settings: RunSettings, *, last_orders, batch_size: int,
                    reconcile: bool) -> dict:
    """One batch of the send engine: (reconcile interrupted sends,) claim through the gate, send, record.

    A provider outage leaves the unsent rows `planned` and raises a retryable error, so Prefect
    retries the batch later; permanent failures are recorded per message and never retried.
    """
    from winback.campaigns.cadence import send_campaign
    from winback.channels.dispatch import run_async

    with Resources(settings) as resources:
        summary = run_async(send_campaign(resources, campaign, campaign_id, last_orders=last_orders,
                                          batch_size=batch_size, max_batches=1, reconcile=reconcile))
    _log().info("Batch of %s: %s sent, failed %s, gate %s", campaign_id, summary.sent,
                dict(summary.failed) or 0, dict(summary.gated) or 0)
    if summary.refused:  # a refused API key: retrying the batch cannot help; one line says what to fix
        from winback.errors import ChannelError

        raise ChannelError(f"{summary.outage}; unsent rows left planned",
                           hint="fix the provider's credentials, then the next dispatch sends them")
    if summary.outage:
        raise RetryableChannelError(f"provider outage, unsent rows left planned: {summary.outage}")
    return summary.to_dict()


@task(name="list campaigns in the ledger", cache_policy=NO_CACHE)
@user_errors
def campaigns_in_ledger_task(settings: RunSettings) -> list[str]:
    """Ids of every campaign with rows in the ledger (the dispatch flow serves them all)."""
    with Resources(settings) as resources:
        return list(resources.ledger.campaigns())


@task(name="count due messages", cache_policy=NO_CACHE)
@user_errors
def count_due_task(settings: RunSettings, campaign_id: str) -> int:
    """Planned rows whose send time has come (sizes the progress bar): the ledger's due rule."""
    with Resources(settings) as resources:
        return int(resources.ledger.count_due(campaign_id))


@task(name="ledger state", cache_policy=NO_CACHE)
@user_errors
def ledger_status_task(settings: RunSettings, campaign_id: str) -> dict[str, int]:
    """Row counts per ledger state of one campaign."""
    with Resources(settings) as resources:
        return resources.ledger.status(campaign_id)


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
