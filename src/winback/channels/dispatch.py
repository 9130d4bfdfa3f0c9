"""The exactly-once send engine: plan → reconcile → claim → render → send → record.

Protocol (the ledger's module docstring states the same from its side):
1. The whole plan is persisted before the first send (`ledger.plan`; new keys only).
2. Rows left in `sending` by a crashed run are reconciled first, through the provider's lookup by our
   key: found → `sent`; not found → `planned` again; the provider cannot tell → `uncertain`, held for
   a person (`winback uncertain list|resend|drop`) unless the policy says `resend`. Only rows whose
   lease has lapsed by the run's clock (or whose owner process is gone from this machine) are taken:
   a claim carries an owner and a lease that a live sender renews in the background (every third of
   the lease), so a second sender — another CLI process, a cron job, another Prefect worker — never
   touches the first one's rows and works on other rows instead.
3. Due rows are claimed in batches (`planned` → `sending`, atomically, before any request); each is
   checked against the suppression list at send time, rendered, sent with per-provider rate limits,
   bounded concurrency, exponential backoff with full jitter and Retry-After, and its outcome recorded
   right after (flushed every `flush_every` answers: a crash in between leaves the row `sending`,
   which step 2 settles without resending).
4. An answer that may have reached the provider (timeout, dropped connection, HTTP 500) is looked up
   before it is retried, so a retry never duplicates a message the provider already took. After a
   timeout the lookup waits `lookup_settle_s` first: a request we stopped waiting for may still sit in
   the provider's queue, and a lookup made at once could miss it (seen under load: not found, resent,
   then the first copy accepted too).
5. A provider outage (N consecutive failed requests with no success), an account refusal (401/403, a
   suspended account: every message would get the same answer) or a Retry-After longer than a run
   waits (`MAX_RETRY_AFTER_S`) stops that channel for the run: its rows not yet handed over go back to
   `planned` (not `failed`), the other channels go on, and the summary says why in one line. Only a
   message's own permanent errors fail it; retries exhausted on provider trouble defer it to a later run.

`dispatch()` runs all of it; `reconcile_in_flight()` and `dispatch_batch()` are callable on their own
(the Prefect dispatch flow calls them per batch).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from winback.channels.base import (
    MAX_RETRY_AFTER_S,
    PROVIDER_NAMES,
    Channel,
    LookupResult,
    OutboundMessage,
    SendResult,
    message_key,
    unsubscribe_headers,
)
from winback.errors import ConfigError, WinbackError
from winback.ledger.ledger import DEFAULT_LEASE_S
from winback.policy.gate import SendRules, throttle_deadline
from winback.vocab import CHANNELS

# What to do with a message nobody can confirm (the provider has no lookup, or it failed): `hold` it
# as `uncertain` for a person (the default; `skip` is its old name), or `resend` it (a second copy if
# the first one did arrive — only for providers that deduplicate, or when a copy too many is harmless).
UncertainPolicy = Literal["hold", "resend", "skip"]
UNCERTAIN_POLICIES = ("hold", "resend", "skip")
Progress = Callable[[int], None]  # called with the number of rows just settled


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: sleep U(0, min(cap, base·2^(attempt−1))).

    Full jitter spreads retries of many clients best (AWS Architecture Blog, "Exponential Backoff And
    Jitter", 2015). A provider's Retry-After is a floor: we never retry earlier than it asks.
    """

    base_s: float = 0.2
    cap_s: float = 20.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        jittered = rng.uniform(0.0, min(self.cap_s, self.base_s * (2 ** max(attempt - 1, 0))))
        return max(jittered, retry_after or 0.0)


@dataclass
class DispatchSummary:
    """What a run did. `failed` and `uncertain` are counts by reason code."""

    sent: int = 0
    failed: Counter = field(default_factory=Counter)
    suppressed: int = 0
    uncertain: Counter = field(default_factory=Counter)
    uncertain_resent: int = 0
    released: int = 0
    in_doubt: int = 0
    reconciled: Counter = field(default_factory=Counter)
    attempts: int = 0
    retries: int = 0
    lookups: int = 0
    remaining_planned: int = 0
    planned_new: int = 0
    gated: Counter = field(default_factory=Counter)  # "deferred: quiet_hours", "skipped: frequency_cap", …
    throttled: int = 0  # throttled past their deadline: deferred, not failed
    deferred: Counter = field(default_factory=Counter)  # back to planned for a later run, by reason
    held_elsewhere: int = 0  # rows in `sending` under another sender's live lease (left alone)
    uncertain_held: int = 0  # rows the ledger holds as `uncertain` at the end, waiting for a person
    outage: str | None = None
    refused: bool = False  # a provider refused the account (the outage is not one a retry fixes)
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        """Messages settled by this run (sent + failed + suppressed + uncertain)."""
        return self.sent + sum(self.failed.values()) + self.suppressed + sum(self.uncertain.values())

    @property
    def msgs_per_s(self) -> float:
        """Settled messages per second of the run."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: DispatchSummary) -> None:
        """Add another (batch) summary into this one."""
        self.sent += other.sent
        self.failed.update(other.failed)
        self.suppressed += other.suppressed
        self.uncertain.update(other.uncertain)
        self.uncertain_resent += other.uncertain_resent
        self.released += other.released
        self.in_doubt += other.in_doubt
        self.reconciled.update(other.reconciled)
        self.attempts += other.attempts
        self.retries += other.retries
        self.lookups += other.lookups
        self.gated.update(other.gated)
        self.throttled += other.throttled
        self.deferred.update(other.deferred)
        self.held_elsewhere = max(self.held_elsewhere, other.held_elsewhere)
        self.uncertain_held = max(self.uncertain_held, other.uncertain_held)
        if other.outage and other.outage not in (self.outage or ""):
            self.outage = f"{self.outage}; {other.outage}" if self.outage else other.outage
        self.refused = self.refused or other.refused

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DispatchSummary:
        """The summary `to_dict` wrote (e.g. by a sender process)."""
        fields = {k: v for k, v in data.items() if k not in ("failed_total", "msgs_per_s")}
        for name in ("failed", "uncertain", "reconciled", "gated", "deferred"):
            fields[name] = Counter(fields.get(name) or {})
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the CLI's `--json`, Prefect artifacts and the benchmark)."""
        return {
            "sent": self.sent, "failed": dict(self.failed), "failed_total": sum(self.failed.values()),
            "suppressed": self.suppressed, "uncertain": dict(self.uncertain),
            "uncertain_resent": self.uncertain_resent, "released": self.released, "in_doubt": self.in_doubt,
            "reconciled": dict(self.reconciled), "attempts": self.attempts, "retries": self.retries,
            "lookups": self.lookups, "remaining_planned": self.remaining_planned, "planned_new": self.planned_new,
            "gated": dict(self.gated), "throttled": self.throttled, "deferred": dict(self.deferred),
            "held_elsewhere": self.held_elsewhere, "uncertain_held": self.uncertain_held, "outage": self.outage,
            "refused": self.refused,
            "seconds": round(self.seconds, 3), "msgs_per_s": round(self.msgs_per_s, 1),
        }


def reason_code(reason: str | None) -> str:
    """The summary bucket of a reason: its text before the first ':' (`twilio_21610`, `http_400`)."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


class ProviderOutage(WinbackError):
    """Raised inside a send when the provider's circuit breaker is open."""


class CircuitBreaker:
    """Stops a provider for the run: after `threshold` consecutive failed requests with no success
    between (an outage), or at once (`stop`) when the provider refuses the account or asks for a wait
    longer than a run waits. Remembers which plan channels each provider serves, so the engine can go
    on with the others."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.consecutive: Counter = Counter()
        self.open_reason: dict[str, str] = {}
        self.defer_reason: dict[str, str] = {}  # provider -> why its unsent messages wait (not due again at once)
        self.channels: dict[str, str] = {}  # plan channel -> provider serving it
        self.refused: set[str] = set()  # providers stopped because they refused the account (401/403, …)

    def success(self, provider: str) -> None:
        """A request went through: the provider is up."""
        self.consecutive[provider] = 0

    def failure(self, provider: str, reason: str | None) -> None:
        """A request failed retryably; open the breaker at the threshold."""
        self.consecutive[provider] += 1
        if self.consecutive[provider] >= self.threshold and provider not in self.open_reason:
            self.open_reason[provider] = (f"{PROVIDER_NAMES.get(provider, provider)} outage: "
                                          f"{self.consecutive[provider]} consecutive failed requests to {provider} "
                                          f"(last: {reason})")

    def stop(self, provider: str, reason: str, *, defer: str | None = None) -> None:
        """Stop the provider for the rest of the run (the first reason given is kept). With `defer`, its
        messages not handed over are deferred under that reason rather than due again at once."""
        if provider not in self.open_reason:
            self.open_reason[provider] = reason
            if defer:
                self.defer_reason[provider] = defer
            else:
                self.refused.add(provider)  # the account was refused: a retry of the run cannot help

    def is_open(self, provider: str) -> bool:
        """True once the provider is considered down for this run."""
        return provider in self.open_reason

    def stopped_channels(self) -> set[str]:
        """The plan channels whose provider is stopped."""
        return {channel for channel, provider in self.channels.items() if provider in self.open_reason}


@dataclass
class SendSettings:
    """Everything a batch needs besides the rows: the router, renderer and the run's policies."""

    router: Any
    renderer: Any
    unsubscribe_secret: Any = None
    public_url: str | None = None
    unsubscribe_mailto: str | None = None
    sender_email: str = "winback@example.com"
    sender_name: str | None = None
    sms_from: str | None = None
    concurrency: int = 32
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    uncertain_policy: UncertainPolicy = "hold"
    outage_after: int = 25
    lookup_settle_s: float = 2.0  # wait after a timeout before asking the provider whether it got it
    lease_s: float = DEFAULT_LEASE_S  # how long a claim holds its rows without a renewal
    give_up_after_runs: int = 3  # a message whose retries ran out in this many runs fails (`gave_up`)
    flush_every: int = 500
    seed: int | None = None
    progress: Progress | None = None
    clock: Any = None  # winback.clock.Clock; the system clock when None

    @classmethod
    def from_config(cls, config, *, router, renderer, concurrency: int = 32, share: int = 1,
                    sender_email: str | None = None, sender_name: str | None = None, **options) -> SendSettings:
        """Settings for a provider config (`winback.channels.providers.ProviderConfig`): its senders, SMS
        number, unsubscribe address and rate limits, the public URL from WINBACK_PUBLIC_URL first. A
        campaign's own sender overrides the config's; with `share` = N, this sender is one of N
        processes and gets 1/N of the concurrency and of every rate limit."""
        import os

        return cls(
            router=router, renderer=renderer,
            public_url=os.environ.get("WINBACK_PUBLIC_URL") or config.public_url,
            unsubscribe_mailto=config.unsubscribe_mailto, sender_email=sender_email or config.sender_email,
            sender_name=sender_name or config.sender_name, sms_from=config.sms_from,
            concurrency=max(1, -(-concurrency // share)),
            rate_limits={k: v / share for k, v in config.rate_limits.items()}, **options,
        )

    def __post_init__(self) -> None:
        if self.uncertain_policy not in UNCERTAIN_POLICIES:
            raise ConfigError(f"uncertain policy must be 'hold' or 'resend', got {self.uncertain_policy!r}")
        if self.uncertain_policy == "skip":
            self.uncertain_policy = "hold"
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ConfigError("concurrency and max_attempts must be at least 1")
        if not self.lease_s > 0:
            raise ConfigError("the lease must be longer than 0 seconds", field="lease_s")
        if self.clock is None:
            from winback.clock import SystemClock

            self.clock = SystemClock()
        self.rng = random.Random(self.seed)
        self.breaker = CircuitBreaker(self.outage_after)
        self._limiters: dict[str, Any] = {}
        self._semaphore: asyncio.Semaphore | None = None

    def _same_loop(self) -> None:
        # asyncio primitives belong to one event loop; a flow that runs each batch in its own
        # `asyncio.run` gets fresh ones instead of "bound to a different event loop" errors.
        loop = asyncio.get_running_loop()
        if getattr(self, "_loop", None) is not loop:
            self._loop = loop
            self._semaphore = None
            self._limiters = {}

    def limiter(self, provider: str):
        """The per-provider rate limiter (aiolimiter leaky bucket), or None when unlimited."""
        self._same_loop()
        rate = self.rate_limits.get(provider)
        if not rate:
            return None
        if provider not in self._limiters:
            from aiolimiter import AsyncLimiter

            # A one-second bucket of `rate` tokens: bursts up to the rate, sustained `rate` per second.
            self._limiters[provider] = AsyncLimiter(max(rate, 1e-3), 1.0)
        return self._limiters[provider]

    @property
    def semaphore(self) -> asyncio.Semaphore:
        """Caps requests in flight across every provider (created inside the running loop)."""
        self._same_loop()
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._semaphore


def _value(row: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = row.get(name, default)
    if value is None:
        return default
    try:
        if pd.isna(value):
            return default
    except (TypeError, ValueError):
        pass
    return value


def _address(row: Mapping[str, Any]) -> Any:
    """Where a row's message goes: its address, or for a call task the account manager's list."""
    if str(row["channel"]) == "call_task":
        return _value(row, "account_manager", _value(row, "to_address")) or "unassigned"
    return _value(row, "to_address")


def build_message(row: Mapping[str, Any], settings: SendSettings) -> OutboundMessage:
    """Render one ledger/plan row into the message its channel's provider receives."""
    from winback.render import make_unsubscribe_token, unsubscribe_url

    campaign_id, customer_id, step = str(row["campaign_id"]), str(row["customer_id"]), int(row["step"])
    channel = str(row["channel"])
    key = message_key(campaign_id, customer_id, step)
    context = _value(row, "context", "{}")
    if isinstance(context, str):
        try:
            context = json.loads(context)
        except ValueError as exc:
            raise WinbackError(f"render: context is not valid JSON ({exc})") from None
    url = None
    if channel in ("email", "sms", "webhook") and settings.unsubscribe_secret is not None and settings.public_url:
        token = make_unsubscribe_token(campaign_id, customer_id, channel, settings.unsubscribe_secret)
        url = unsubscribe_url(settings.public_url, token)
    if channel == "email" and url is None:
        raise ConfigError("email needs an unsubscribe link: set WINBACK_UNSUBSCRIBE_SECRET and WINBACK_PUBLIC_URL")
    rendered = settings.renderer.render(str(row["template"]), channel, _value(row, "locale"), context,
                                        unsubscribe_url=url, unsubscribe_mailto=settings.unsubscribe_mailto)
    headers = dict(rendered.headers or {})
    if channel == "email" and "List-Unsubscribe" not in headers:
        headers.update(unsubscribe_headers(url, settings.unsubscribe_mailto))
    to = _address(row)
    if not to:
        raise WinbackError(f"missing_address: no {channel} address for customer {customer_id}")
    customer = context.get("customer", {}) if isinstance(context, dict) else {}
    metadata: dict[str, Any] = {"campaign_id": campaign_id, "customer_id": customer_id, "step": step}
    if channel == "call_task":
        # The plan puts how to reach the customer in the context's `call` (their name in their locale's
        # order, phone, e-mail); older plans only had the customer record.
        call = context.get("call") or {} if isinstance(context, dict) else {}
        name = call.get("name") or " ".join(
            str(x) for x in (customer.get("first_name"), customer.get("last_name")) if x)
        metadata.update({
            "customer_name": name, "phone": call.get("phone") or customer.get("phone") or "",
            "email": call.get("email") or customer.get("email") or "",
            "value_tier": _value(row, "value_tier", ""), "likely_reason": _value(row, "likely_reason", ""),
            "offer": _value(row, "offer", ""), "coupon_code": _value(row, "coupon_code", ""),
            "send_at_local": _value(row, "send_at_local", ""),
        })
    brand = context.get("brand", {}) if isinstance(context, dict) else {}
    from_ = settings.sms_from if channel == "sms" else settings.sender_email
    claimed = _value(row, "claimed_at")  # bounds the provider's recovery lookup to this attempt's time
    return OutboundMessage(key=key, channel=channel, to=str(to), from_=from_ or "", subject=rendered.subject,
                           html=rendered.html, text=rendered.text, headers=headers, metadata=metadata,
                           from_name=settings.sender_name or brand.get("name"),
                           claimed_at=pd.Timestamp(claimed).to_pydatetime() if claimed is not None else None)


@dataclass
class _Delivery:
    state: str  # sent | failed | uncertain | released | in_doubt | deferred | exhausted (retries ran out)
    result: SendResult | None = None
    reason: str | None = None
    attempts: int = 0
    lookups: int = 0
    resent_uncertain: bool = False


async def _call(channel: Channel, message: OutboundMessage, settings: SendSettings) -> SendResult | None:
    """Send one message; None when its provider was stopped while it waited for its turn (never sent)."""
    limiter = settings.limiter(channel.name)
    if limiter is not None:
        await limiter.acquire()
    async with settings.semaphore:
        if settings.breaker.is_open(channel.name):
            return None
        results = await channel.send([message])
    return results[0]


async def _lookup(channel: Channel, message: OutboundMessage, settings: SendSettings) -> LookupResult:
    async with settings.semaphore:
        return await channel.lookup(message.key, message)


def _throttled(result: SendResult) -> bool:
    """The provider asked us to slow down (429, or a Retry-After on a request it surely did not process)."""
    return result.status == "retryable" and not result.ambiguous and (
        (result.reason or "").startswith("http_429") or result.retry_after is not None)


async def deliver(channel: Channel, message: OutboundMessage, settings: SendSettings,
                  deadline: pd.Timestamp | None = None) -> _Delivery:
    """Send one message until it is accepted, refused, given up on, or its provider is stopped.

    A throttled message (429 / Retry-After) is not failed after `max_attempts`: it keeps waiting as
    the provider asks until `deadline` (the campaign's, by default the end of that day's send window,
    on the run's clock), and is then deferred — back to `planned` for a later run. A Retry-After longer
    than `MAX_RETRY_AFTER_S` stops the channel for the run (deferred, never slept on); so does a
    refusal of the account (`scope="account"`: the message is released, never failed).
    """
    provider = channel.name
    settings.breaker.channels[message.channel] = provider
    attempts = lookups = 0
    resent_uncertain = False
    last: SendResult | None = None
    while True:
        if settings.breaker.is_open(provider):
            # Never handed over (or the last try surely did not arrive): back to planned.
            if last is not None and last.ambiguous:
                return _Delivery("in_doubt", last, last.reason, attempts, lookups)
            return _Delivery("released", last, settings.breaker.open_reason[provider], attempts, lookups)
        result = await _call(channel, message, settings)
        if result is None:
            continue  # stopped meanwhile: released (or in doubt) above
        attempts += 1
        last = result
        if result.status == "accepted":
            settings.breaker.success(provider)
            return _Delivery("sent", result, None, attempts, lookups, resent_uncertain)
        if result.status == "permanent":
            if result.scope == "account":
                # Not this message's fault: every message of the channel would get the same answer.
                settings.breaker.stop(provider, (result.reason or "").split(": ", 1)[-1] or provider)
                return _Delivery("released", result, result.reason, attempts, lookups)
            settings.breaker.success(provider)  # the provider answered: it is up
            return _Delivery("failed", result, result.reason, attempts, lookups, resent_uncertain)
        if not _throttled(result):  # a 429 says the provider is up and busy, not down
            settings.breaker.failure(provider, result.reason)
        if result.ambiguous:
            lookups += 1
            if "Timeout" in (result.reason or "") and settings.lookup_settle_s > 0:
                await _settle(settings.lookup_settle_s)
            found = await _lookup(channel, message, settings)
            if found.status == "found":
                accepted = SendResult(message.key, "accepted", provider,
                                      provider_message_id=found.provider_message_id or result.provider_message_id)
                return _Delivery("sent", accepted, None, attempts, lookups, resent_uncertain)
            if found.status == "unknown":
                if settings.uncertain_policy != "resend":
                    return _Delivery("uncertain", result, f"uncertain: {result.reason}; lookup {found.reason}",
                                     attempts, lookups)
                resent_uncertain = True
            else:
                last = SendResult(message.key, "retryable", provider, reason=result.reason,
                                  retry_after=result.retry_after)  # proven not received
        if result.retry_after is not None and result.retry_after > MAX_RETRY_AFTER_S:
            wait = f"{result.retry_after:,.0f} s" if result.retry_after < 1e12 else "for ever"
            settings.breaker.stop(provider, f"{PROVIDER_NAMES.get(provider, provider)} asked to wait {wait} "
                                            f"(Retry-After), longer than a run waits ({MAX_RETRY_AFTER_S:g} s): "
                                            f"{message.channel} deferred for this run", defer="retry_after_over_cap")
            return _Delivery("deferred", last, "retry_after_over_cap", attempts, lookups)
        delay = settings.backoff.delay(attempts, result.retry_after, settings.rng)
        if _throttled(result) and deadline is not None:
            if settings.clock.now() + pd.Timedelta(seconds=delay) >= deadline:
                return _Delivery("deferred", result, f"throttled: {result.reason}", attempts, lookups)
            if not settings.breaker.is_open(provider):
                await asyncio.sleep(delay)
            continue
        if attempts >= settings.max_attempts:
            if last.ambiguous:
                return _Delivery("uncertain", last, f"uncertain: gave up after {attempts} attempts ({last.reason})",
                                 attempts, lookups)
            # Provider trouble, not this message's: tried again in a later run (`retries_exhausted`),
            # and failed only once that has happened `give_up_after_runs` times.
            return _Delivery("exhausted", last, f"gave_up: {attempts} attempts, last {last.reason}", attempts,
                             lookups, resent_uncertain)
        if settings.breaker.is_open(provider):
            continue
        await asyncio.sleep(delay)


# The ledger columns `build_message` and the suppression check read (a claimed batch carries ~25).
_MESSAGE_COLUMNS = ("id", "campaign_id", "customer_id", "step", "channel", "to_address", "template", "locale",
                    "context", "account_manager", "value_tier", "likely_reason", "offer", "coupon_code", "send_at_local",
                    "send_rules", "timezone", "claimed_at", "attempts")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The message columns of a claimed batch as one dict per row (column lists zipped: ~5x `to_dict`)."""
    columns = [c for c in _MESSAGE_COLUMNS if c in frame.columns]
    return [dict(zip(columns, values, strict=True))
            for values in zip(*(frame[c].tolist() for c in columns), strict=True)]


def _row_key(row: Mapping[str, Any]) -> tuple[str, str, int]:
    return str(row["campaign_id"]), str(row["customer_id"]), int(row["step"])


def _outcome(row: Mapping[str, Any], state: str, provider: str | None = None, message_id: str | None = None,
             error: str | None = None):
    """A claimed row's `Outcome`, carrying its ledger row id (recorded by id, no key lookup)."""
    from winback.ledger import Outcome

    return Outcome(*_row_key(row), state, provider, message_id, error[:500] if error is not None else None,
                   row_id=row.get("id"))


def _suppression_index(frame: pd.DataFrame | None) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    if frame is None or len(frame) == 0:
        return set(), set()
    by_customer = set(zip(frame["customer_id"].astype(str), frame["channel"].astype(str), strict=True))
    addresses = frame.dropna(subset=["address"])
    by_address = set(zip(addresses["channel"].astype(str), addresses["address"].astype(str).str.lower(), strict=True))
    return by_customer, by_address


THROTTLE_RETRY_MINUTES = 15  # a message deferred by its provider (throttled, stopped) is due again this much later


async def dispatch_batch(rows: pd.DataFrame, ledger, settings: SendSettings, *,
                         suppressions: pd.DataFrame | None = None, claim_token: str | None = None) -> DispatchSummary:
    """Send one claimed batch (rows in `sending`) and record every outcome; returns the batch summary."""
    from winback.ledger import Outcome
    from winback.render import RenderError

    summary = DispatchSummary()
    if rows is None or len(rows) == 0:
        return summary
    claim_token = claim_token or rows.attrs.get("claim_token")
    if suppressions is None:
        suppressions = ledger.suppressions()
    by_customer, by_address = _suppression_index(suppressions)
    pending: list[Outcome] = []
    release: list[tuple[str, str, int]] = []
    deferred: dict[str, list[tuple[str, str, int]]] = {}  # reason -> keys back to planned a little later
    done = 0

    async def flush() -> None:
        # Off the event loop: a SQLite commit is an fsync (synchronous=FULL), and sends go on meanwhile.
        if pending:
            chunk = list(pending)
            pending.clear()
            await asyncio.to_thread(ledger.record, chunk, claim_token=claim_token, now=settings.clock.now())

    def finished(n: int = 1) -> None:
        nonlocal done
        done += n
        if settings.progress is not None:
            settings.progress(n)

    jobs = []
    for row in _records(rows):
        customer_id = str(row["customer_id"])
        channel_name = str(row["channel"])
        address = _value(row, "to_address")
        if (customer_id, channel_name) in by_customer or (
                address and (channel_name, str(address).lower()) in by_address):
            pending.append(_outcome(row, "suppressed", error="suppressed at send time"))
            summary.suppressed += 1
            finished()
            continue
        try:
            message = build_message(row, settings)
            channel = settings.router.channel_for(channel_name)
        except RenderError as exc:  # this row's template or context is wrong: it fails alone
            reason = f"render: {exc}"
            pending.append(_outcome(row, "failed", error=reason))
            summary.failed["render"] += 1
            finished()
            continue
        except ConfigError:
            raise  # a configuration problem stops the run; the claimed rows are released by the caller
        except Exception as exc:  # a bad row (template, context, address) fails alone, with its reason
            text = str(exc) if isinstance(exc, WinbackError) else f"{type(exc).__name__}: {exc}"
            reason = text if ":" in text.split(" ", 1)[0] else f"render: {text}"
            pending.append(_outcome(row, "failed", error=reason))
            summary.failed[reason_code(reason)] += 1
            finished()
            continue
        jobs.append((row, channel, message))

    now = settings.clock.now()
    deadlines: dict[tuple[Any, Any], pd.Timestamp] = {}  # one per (rules, zone) in the batch, not per message

    async def run(row, channel, message):
        key = (_value(row, "send_rules"), _value(row, "timezone"))
        if key not in deadlines:
            deadlines[key] = throttle_deadline(SendRules.parse(key[0]), key[1], now)
        return row, message, channel, await deliver(channel, message, settings, deadlines[key])

    tasks = [asyncio.ensure_future(run(*job)) for job in jobs]
    try:
        for next_done in asyncio.as_completed(tasks):
            row, message, channel, d = await next_done
            campaign_id, customer_id, step = _row_key(row)
            summary.attempts += d.attempts
            summary.retries += max(d.attempts - 1, 0)
            summary.lookups += d.lookups
            provider = d.result.provider if d.result else None
            if d.resent_uncertain:
                summary.uncertain_resent += 1
            if d.state == "sent":
                pending.append(_outcome(row, "sent", provider, d.result.provider_message_id if d.result else None))
                summary.sent += 1
            elif d.state == "failed":
                pending.append(_outcome(row, "failed", provider, error=d.reason or ""))
                summary.failed[reason_code(d.reason)] += 1
                if d.result is not None and d.result.suppress:
                    await asyncio.to_thread(ledger.add_suppression, customer_id, str(row["channel"]), message.to,
                                            d.result.suppress, source=provider, now=settings.clock.now())
            elif d.state == "uncertain":
                pending.append(_outcome(row, "uncertain", provider, error=d.reason or ""))
                summary.uncertain[reason_code((d.reason or "").removeprefix("uncertain: "))] += 1
            elif d.state == "released" and channel.name in settings.breaker.defer_reason:
                reason = settings.breaker.defer_reason[channel.name]
                deferred.setdefault(reason, []).append((campaign_id, customer_id, step))
                summary.deferred[reason] += 1
            elif d.state == "released":
                release.append((campaign_id, customer_id, step))
                summary.released += 1
            elif d.state == "deferred" and (d.reason or "").startswith("throttled"):
                deferred.setdefault("throttled", []).append((campaign_id, customer_id, step))
                summary.throttled += 1
            elif d.state == "deferred":
                deferred.setdefault(d.reason or "deferred", []).append((campaign_id, customer_id, step))
                summary.deferred[d.reason or "deferred"] += 1
            elif d.state == "exhausted" and int(_value(row, "attempts", 1)) < settings.give_up_after_runs:
                deferred.setdefault("retries_exhausted", []).append((campaign_id, customer_id, step))
                summary.deferred["retries_exhausted"] += 1
            elif d.state == "exhausted":  # its retries ran out in run after run: this message fails
                pending.append(_outcome(row, "failed", provider, error=d.reason or ""))
                summary.failed[reason_code(d.reason)] += 1
            else:  # in_doubt: stays `sending`; the next run's reconciliation settles it by lookup
                summary.in_doubt += 1
            finished()
            if len(pending) >= settings.flush_every:
                await flush()
    finally:
        for t in tasks:
            t.cancel()
        await flush()
        if release:
            await asyncio.to_thread(ledger.release, release, now=settings.clock.now(), claim_token=claim_token)
        for reason, keys in deferred.items():
            # Not due again at once (the provider asked us to wait); the gate moves it into a window.
            later = settings.clock.now() + pd.Timedelta(minutes=THROTTLE_RETRY_MINUTES)
            await asyncio.to_thread(ledger.defer, keys, until=later, reason=reason, now=settings.clock.now())
    if settings.breaker.open_reason:
        summary.outage = "; ".join(settings.breaker.open_reason.values())
        summary.refused = bool(settings.breaker.refused)
    return summary


async def _settle(seconds: float) -> None:
    """Wait before a lookup (a seam for tests: they check the wait is asked for, not the clock)."""
    await asyncio.sleep(seconds)


# -- who holds a claim, and for how long ------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process from /proc, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # stat fields 3 (state) and 22 (starttime)


def _machine_tag() -> str:
    """This kernel boot and PID namespace, hashed ("-" where /proc does not tell): PIDs mean something only there."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "-"
    return hashlib.sha1(f"{boot}|{namespace}".encode()).hexdigest()[:8]


def new_owner() -> str:
    """A claim owner naming this sender: `host/machine/pid/start/nonce` (≤ 64 characters).

    The process part lets a later run on the same machine see that the owner died (a kill -9, a
    crash) and take its rows over without waiting for the lease to lapse — which, under `--now`, may
    be far ahead of the next run's business clock.
    """
    pid = os.getpid()
    stat = _proc_stat(pid)
    host = "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch in "-.")[:16] or "host"
    return f"{host}/{_machine_tag()}/{pid}/{stat[1] if stat else '-'}/{uuid.uuid4().hex[:6]}"


def owner_is_dead(owner: str | None) -> bool:
    """True only when `owner` (from `new_owner`) is a process of this machine that no longer runs.

    Anything we cannot be sure of — another machine, another PID namespace, an owner written by
    other code — is not dead: its rows wait for the lease to lapse.
    """
    parts = str(owner or "").split("/")
    if len(parts) != 5 or parts[1] == "-" or parts[1] != _machine_tag() or not parts[2].isdigit():
        return False
    stat = _proc_stat(int(parts[2]))
    if stat is None:
        return True  # no such process
    state, started = stat
    return state in ("Z", "X") or (parts[3] != "-" and started != parts[3])  # a zombie, or the PID reused


class LeaseKeeper:
    """Renews the lease of every row an owner holds, every third of the lease, from a thread.

    A thread, not a task on the event loop: rendering a batch or a slow ledger commit must not let a
    live sender's lease lapse (another sender would then reconcile and resend its rows).
    """

    def __init__(self, ledger, owner: str, lease_s: float, clock) -> None:
        self.ledger, self.owner, self.lease_s, self.clock = ledger, owner, lease_s, clock
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="winback-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def renew(self) -> int:
        """Extend the lease of this owner's rows from now."""
        now = self.clock.now()
        n = self.ledger.renew(self.owner, until=now + pd.Timedelta(seconds=self.lease_s), now=now)
        self.renewals += 1
        return n

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except WinbackError:
                pass  # a busy or unreachable ledger: the next renewal tries again (the lease outlasts two misses)


def _newest(values: pd.Series) -> pd.Timestamp | None:
    newest = pd.to_datetime(values, utc=True).max() if len(values) else pd.NaT
    return None if pd.isna(newest) else newest


def _lookup_message(row: Mapping[str, Any], channel: Channel, settings: SendSettings) -> OutboundMessage:
    """The message to look up: rendered again only for providers that match by body (Twilio); the
    others search by our key, and rendering 2,000 messages would only slow a reconciliation down."""
    if getattr(channel, "lookup_needs_body", False):
        return build_message(row, settings)
    campaign_id, customer_id, step = _row_key(row)
    claimed = _value(row, "claimed_at")
    return OutboundMessage(key=message_key(campaign_id, customer_id, step), channel=str(row["channel"]),
                           to=str(_address(row) or ""), from_="",
                           claimed_at=pd.Timestamp(claimed).to_pydatetime() if claimed is not None else None)


async def reconcile_in_flight(ledger, settings: SendSettings, *, campaign_id: str | None = None,
                              owner: str | None = None) -> DispatchSummary:
    """Settle rows another sender left in `sending`, by looking each key up at its provider.

    Only rows whose lease has lapsed by the run's clock (no lease: lapsed) or whose owner process is
    gone from this machine are taken (`Ledger.reclaim`, under `owner` and a fresh lease); rows under a
    live lease belong to a sender still at work and are counted in `held_elsewhere`. Before the
    lookups, the settle time passes since the rows could last have been sent. Lookups run
    concurrently (bounded by the semaphore); the outcomes are written in three batched updates.
    """
    from winback.ledger import Outcome

    summary = DispatchSummary()
    owner = owner or new_owner()
    rows = await asyncio.to_thread(ledger.in_flight, campaign_id)
    rows = rows[rows["claim_owner"].astype("object") != owner] if len(rows) else rows
    if len(rows) == 0:
        return summary
    now = settings.clock.now()
    lease = pd.to_datetime(rows["lease_until"], utc=True)
    lapsed = (lease.isna() | (lease <= now)).to_numpy()
    owners = rows["claim_owner"].dropna().astype(str).unique()
    dead = [o for o in owners if owner_is_dead(o)]
    gone = rows["claim_owner"].isin(dead).to_numpy()
    summary.held_elsewhere = int((~lapsed & ~gone).sum())
    if not (lapsed | gone).any():
        return summary
    taken = await asyncio.to_thread(ledger.reclaim, campaign_id, owner=owner, now=now, lease_s=settings.lease_s,
                                    lapsed_at=now, dead_owners=dead, ids=rows.loc[lapsed | gone, "id"].tolist())
    if len(taken) == 0:
        return summary
    token = taken.attrs["claim_token"]
    # A request of the former owner may still sit in the provider's queue: wait out `lookup_settle_s`
    # from the last moment it could have been sent — its lease's end, now for an owner that died under
    # a live lease (we cannot tell when), or its claim for rows from before leases.
    was = rows.set_index("id").loc[taken["id"]]
    last_sent = pd.to_datetime(was["lease_until"], utc=True).clip(upper=now)
    newest = _newest(last_sent.fillna(pd.to_datetime(was["claimed_at"], utc=True)))
    if settings.lookup_settle_s > 0 and newest is not None:
        age = (settings.clock.now() - newest).total_seconds()
        if age < settings.lookup_settle_s:
            await _settle(min(settings.lookup_settle_s - max(age, 0.0), settings.lookup_settle_s))
    sent, release, uncertain = [], [], []

    async def look(row):
        try:
            channel = settings.router.channel_for(str(row["channel"]))
            message = _lookup_message(row, channel, settings)
        except ConfigError as exc:
            from winback.render import RenderError

            if not isinstance(exc, RenderError):
                raise
            return row, None, LookupResult(message_key(*_row_key(row)), "unknown", reason=f"render: {exc}")
        except Exception as exc:  # cannot even rebuild it: it cannot be looked up by body either
            return row, None, LookupResult(message_key(*_row_key(row)), "unknown", reason=f"render: {exc}")
        return row, channel, await _lookup(channel, message, settings)

    results = await asyncio.gather(*(look(r) for r in _records(taken)))
    for row, channel, found in results:
        key = _row_key(row)
        summary.lookups += 1
        summary.reconciled[found.status] += 1
        if found.status == "found":
            sent.append(Outcome(*key, "sent", channel.name if channel else None, found.provider_message_id,
                                row_id=row.get("id")))
        elif found.status == "not_found":
            release.append(key)
        elif settings.uncertain_policy == "resend":
            release.append(key)
            summary.uncertain_resent += 1
        else:
            uncertain.append(key)
            summary.uncertain[reason_code(found.reason)] += 1
    when = settings.clock.now()
    if sent:
        summary.sent += await asyncio.to_thread(ledger.record, sent, claim_token=token, now=when)
    if release:
        await asyncio.to_thread(ledger.release, release, now=when, claim_token=token)
    if uncertain:
        await asyncio.to_thread(ledger.mark_uncertain, uncertain, now=when, claim_token=token,
                                error="uncertain: the provider cannot tell whether it was sent; held for a person "
                                      "(winback uncertain list)")
    return summary


async def dispatch(ledger, settings: SendSettings, *, now: Any | None = None, plan: pd.DataFrame | None = None,
                   campaign_id: str | None = None, batch_size: int = 500, max_batches: int | None = None,
                   reconcile: bool = True, last_orders: Mapping[str, Any] | None = None) -> DispatchSummary:
    """The send engine: persist the plan, reconcile in-flight rows, then claim (through the send-time
    gate) and send every due row; return the summary. `winback send`, `winback dispatch` and the
    Prefect dispatch flow all run this.

    Time comes from `settings.clock`; `now` starts a clock at that instant instead (tests, `--now`).
    `last_orders` (each customer's latest order, from the campaign's sources) lets the gate skip
    if_not_returned steps of customers who ordered since the step was decided.
    Every claim is held by this run (a fresh owner) under a lease of `settings.lease_s`, renewed in
    the background while the run works; at the end, rows still `sending` (in doubt) give their lease
    up, so the next run reconciles them at once. A stopped channel (outage, refused account, a
    Retry-After too long) is not claimed from again; the other channels go on.
    `reconcile=False` skips step 2 (the sender processes of `dispatch_in_processes`, whose parent
    reconciled once before starting them).
    """
    from winback.clock import Clock

    if now is not None:
        settings.clock = Clock.starting_at(now)
    clock = settings.clock
    started = time.perf_counter()
    summary = DispatchSummary()
    owner = new_owner()
    if plan is not None:
        summary.planned_new = ledger.plan(plan, now=clock.now())
    with LeaseKeeper(ledger, owner, settings.lease_s, clock):
        try:
            if reconcile:
                summary.merge(await reconcile_in_flight(ledger, settings, campaign_id=campaign_id, owner=owner))
            await _send_due(ledger, settings, summary, owner=owner, campaign_id=campaign_id, batch_size=batch_size,
                            max_batches=max_batches, last_orders=last_orders)
        finally:
            # Rows still ours are in doubt (or were interrupted): lapse their lease now, for the next run.
            await asyncio.to_thread(ledger.renew, owner, until=clock.now(), now=clock.now())
    status = ledger.status(campaign_id)
    summary.remaining_planned = status.get("planned", 0)
    summary.uncertain_held = status.get("uncertain", 0)
    if status.get("sending", 0):
        in_flight = ledger.in_flight(campaign_id)
        lease = pd.to_datetime(in_flight["lease_until"], utc=True)
        summary.held_elsewhere = int(((in_flight["claim_owner"].astype("object") != owner)
                                      & lease.notna() & (lease > clock.now())).sum())
    else:
        summary.held_elsewhere = 0
    if settings.breaker.open_reason:
        summary.outage = "; ".join(settings.breaker.open_reason.values())
        summary.refused = bool(settings.breaker.refused)
    summary.seconds = time.perf_counter() - started
    return summary


async def _send_due(ledger, settings: SendSettings, summary: DispatchSummary, *, owner: str,
                    campaign_id: str | None, batch_size: int, max_batches: int | None,
                    last_orders: Mapping[str, Any] | None) -> None:
    """Claim and send due rows batch by batch until none is left (or every channel is stopped)."""
    clock = settings.clock
    # Two batches overlap: the next is claimed (and queues on the shared semaphore) while the tail
    # of the previous one is still in flight, so the connection pool never idles between batches.
    # At most 2 × batch_size rows are in `sending` at any moment.
    batches = 0
    running: set[asyncio.Task] = set()
    claimed: dict[asyncio.Task, pd.DataFrame] = {}

    async def settle(done: set[asyncio.Task]) -> None:
        for task in done:
            running.discard(task)
            rows = claimed.pop(task)
            try:
                summary.merge(task.result())
            except ConfigError:
                await asyncio.to_thread(ledger.release, rows, now=clock.now(),
                                        claim_token=rows.attrs.get("claim_token"))
                raise

    try:
        while max_batches is None or batches < max_batches:
            if len(running) >= 2:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                await settle(done)
                continue
            stopped = settings.breaker.stopped_channels()
            channels = [c for c in CHANNELS if c not in stopped] if stopped else None
            if channels == []:
                break  # every channel is stopped for this run
            suppressions = await asyncio.to_thread(ledger.suppressions)
            rows = await asyncio.to_thread(ledger.claim, campaign_id, now=clock.now(), limit=batch_size,
                                           channel=channels, last_orders=last_orders, owner=owner,
                                           lease_s=settings.lease_s)
            gated = rows.attrs.get("gate") or Counter()
            summary.gated.update(gated)
            if len(rows) == 0:
                if sum(gated.values()):
                    continue  # the gate deferred or skipped the whole batch: claim the next one
                if running:  # a channel may stop meanwhile: claim again once a batch is done
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    await settle(done)
                    continue
                break
            batches += 1
            task = asyncio.create_task(dispatch_batch(rows, ledger, settings, suppressions=suppressions))
            running.add(task)
            claimed[task] = rows
        if running:
            done, _ = await asyncio.wait(running)
            await settle(done)
    finally:
        for task in running:
            task.cancel()


def dispatch_in_processes(send: Callable[[int, Progress], DispatchSummary], workers: int, *,
                          progress: Progress | None = None) -> DispatchSummary:
    """Run `send(index, progress)` in `workers` forked sender processes and merge their summaries.

    One Python process tops out at about 1,000 messages/s here: rendering and httpx's request layer
    are CPU-bound (bench/RESULTS.md). The ledger's claims are atomic across processes (SQLite's
    BEGIN IMMEDIATE, PostgreSQL's SKIP LOCKED), so several senders can share one plan; the caller
    reconciles in-flight rows once before (each `send` must run `dispatch(reconcile=False)`) and
    splits the concurrency and rate limits between them. Fork (Linux, macOS): the children share
    the parent's loaded modules and frozen heap instead of importing again; they die with the
    parent (Linux), and a killed sender leaves its rows `sending` for the next run's reconciliation,
    as a killed single sender does.
    """
    import multiprocessing as mp
    import os

    if workers < 1:
        raise ConfigError("must be at least 1", field="--workers")
    ctx = mp.get_context("fork")
    results = ctx.SimpleQueue()
    settled = ctx.Value("q", 0)

    def bump(n: int) -> None:
        with settled.get_lock():
            settled.value += n

    def child(index: int) -> None:
        _die_with_parent()
        try:
            summary = send(index, bump)
            results.put(("ok", index, summary.to_dict()))
        except BaseException as exc:  # reported by the parent, which raises it
            results.put(("error", index, f"{type(exc).__name__}: {exc}", isinstance(exc, ConfigError)))
        finally:
            os._exit(0)

    started = time.perf_counter()
    procs = [ctx.Process(target=child, args=(i,), name=f"winback-sender-{i}", daemon=True) for i in range(workers)]
    for proc in procs:
        proc.start()
    shown = 0
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(0.2)
            if progress is not None and settled.value > shown:
                progress(settled.value - shown)
                shown = settled.value
    except BaseException:
        for p in procs:
            p.kill()
        raise
    if progress is not None and settled.value > shown:
        progress(settled.value - shown)
    summary = DispatchSummary()
    errors = []
    reported = set()
    while not results.empty():
        item = results.get()
        reported.add(item[1])
        if item[0] == "ok":
            summary.merge(DispatchSummary.from_dict(item[2]))
        else:
            errors.append(item)
    lost = [p for i, p in enumerate(procs) if i not in reported]
    if errors:
        _, index, text, config = errors[0]
        cls = ConfigError if config else WinbackError
        raise cls(f"sender process {index} failed: {text}")
    if lost:
        raise WinbackError(f"sender process {procs.index(lost[0])} died (exit code {lost[0].exitcode}); its rows in "
                           "`sending` are reconciled by the next run")
    summary.seconds = time.perf_counter() - started
    return summary


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass


def run_async(coro):
    """Run a coroutine on asyncio, or on uvloop with `WINBACK_EVENT_LOOP=uvloop`.

    asyncio is the default: uvloop sped the bare aiohttp loop up by half here but not `winback send`,
    whose time goes to rendering and httpx's client layer, not to the loop (bench/RESULTS.md).
    """
    import os

    if os.environ.get("WINBACK_EVENT_LOOP", "asyncio") == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def count_due(ledger, *, now: Any, campaign_id: str | None = None) -> int:
    """Rows in `planned` whose send time has come (for a progress bar's total): the ledger's due rule."""
    return int(ledger.count_due(campaign_id, now=now))


def summary_rows(summary: DispatchSummary) -> Sequence[tuple[str, str]]:
    """The summary as (label, value) rows for a table."""
    out = [("sent", str(summary.sent))]
    for reason, n in sorted(summary.failed.items()):
        out.append((f"failed: {reason}", str(n)))
    out.append(("suppressed", str(summary.suppressed)))
    for reason, n in sorted(summary.uncertain.items()):
        out.append((f"uncertain: {reason}", str(n)))
    if summary.uncertain_resent:
        out.append(("uncertain, resent (policy resend)", str(summary.uncertain_resent)))
    if summary.uncertain_held:
        out.append(("uncertain, held for a person (winback uncertain list)", str(summary.uncertain_held)))
    for status, n in sorted(summary.reconciled.items()):
        out.append((f"reconciled in-flight: {status}", str(n)))
    for reason, n in sorted(summary.gated.items()):
        out.append((f"send-time gate, {reason}", str(n)))
    if summary.throttled:
        out.append(("throttled past the deadline: deferred", str(summary.throttled)))
    for reason, n in sorted(summary.deferred.items()):
        out.append((f"deferred to a later run: {reason}", str(n)))
    if summary.released:
        out.append(("released to planned (channel stopped)", str(summary.released)))
    if summary.in_doubt:
        out.append(("in doubt (left sending; next run reconciles)", str(summary.in_doubt)))
    if summary.held_elsewhere:
        out.append(("in flight at another sender (live lease; left alone)", str(summary.held_elsewhere)))
    out.extend([
        ("remaining planned", str(summary.remaining_planned)),
        ("requests / retries / lookups", f"{summary.attempts} / {summary.retries} / {summary.lookups}"),
        ("seconds", f"{summary.seconds:.2f}"),
        ("messages/s", f"{summary.msgs_per_s:.0f}"),
    ])
    if summary.outage:
        out.append(("outage", summary.outage))
    return out
