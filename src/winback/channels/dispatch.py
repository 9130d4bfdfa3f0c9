"""The exactly-once send engine: plan → reconcile → claim → render → send → record.

Protocol (the ledger's module docstring states the same from its side):
1. The whole plan is persisted before the first send (`ledger.plan`; new keys only).
2. Rows left in `sending` by a crashed run are reconciled first, through the provider's lookup by our
   key: found → `sent`; not found → `planned` again; the provider cannot tell → `uncertain`, and the
   policy decides (`resend`: back to planned; `skip`: stays uncertain and is reported).
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
5. A provider outage (N consecutive failed requests with no success) opens a circuit breaker: the run
   stops cleanly, rows not yet handed over go back to `planned` (not `failed`), and the summary says so.

`dispatch()` runs all of it; `reconcile_in_flight()` and `dispatch_batch()` are callable on their own
(the Prefect dispatch flow calls them per batch).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from winback.channels.base import (
    Channel,
    LookupResult,
    OutboundMessage,
    SendResult,
    message_key,
    unsubscribe_headers,
)
from winback.errors import ConfigError, WinbackError
from winback.policy.gate import SendRules, throttle_deadline

UncertainPolicy = Literal["resend", "skip"]
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
    outage: str | None = None
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
        self.outage = self.outage or other.outage

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DispatchSummary:
        """The summary `to_dict` wrote (e.g. by a sender process)."""
        fields = {k: v for k, v in data.items() if k not in ("failed_total", "msgs_per_s")}
        for name in ("failed", "uncertain", "reconciled", "gated"):
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
            "gated": dict(self.gated), "throttled": self.throttled, "outage": self.outage, "seconds": round(self.seconds, 3), "msgs_per_s": round(self.msgs_per_s, 1),
        }


def reason_code(reason: str | None) -> str:
    """The summary bucket of a reason: its text before the first ':' (`twilio_21610`, `http_400`)."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


class ProviderOutage(WinbackError):
    """Raised inside a send when the provider's circuit breaker is open."""


class CircuitBreaker:
    """Opens after `threshold` consecutive failed requests to one provider with no success between."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.consecutive: Counter = Counter()
        self.open_reason: dict[str, str] = {}

    def success(self, provider: str) -> None:
        """A request went through: the provider is up."""
        self.consecutive[provider] = 0

    def failure(self, provider: str, reason: str | None) -> None:
        """A request failed retryably; open the breaker at the threshold."""
        self.consecutive[provider] += 1
        if self.consecutive[provider] >= self.threshold and provider not in self.open_reason:
            self.open_reason[provider] = (f"{provider}: {self.consecutive[provider]} consecutive failed requests "
                                          f"(last: {reason})")

    def is_open(self, provider: str) -> bool:
        """True once the provider is considered down for this run."""
        return provider in self.open_reason


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
    uncertain_policy: UncertainPolicy = "resend"
    outage_after: int = 25
    lookup_settle_s: float = 2.0  # wait after a timeout before asking the provider whether it got it
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
        if self.uncertain_policy not in ("resend", "skip"):
            raise ConfigError(f"uncertain policy must be 'resend' or 'skip', got {self.uncertain_policy!r}")
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ConfigError("concurrency and max_attempts must be at least 1")
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
    to = _value(row, "to_address")
    if channel == "call_task":
        to = _value(row, "account_manager", to) or "unassigned"
    if not to:
        raise WinbackError(f"missing_address: no {channel} address for customer {customer_id}")
    customer = context.get("customer", {}) if isinstance(context, dict) else {}
    metadata: dict[str, Any] = {"campaign_id": campaign_id, "customer_id": customer_id, "step": step}
    if channel == "call_task":
        name = " ".join(str(x) for x in (customer.get("last_name"), customer.get("first_name")) if x)
        metadata.update({
            "customer_name": name, "phone": customer.get("phone") or "", "email": customer.get("email") or "",
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
    state: str  # sent | failed | uncertain | released | in_doubt | deferred (throttled past its deadline)
    result: SendResult | None = None
    reason: str | None = None
    attempts: int = 0
    lookups: int = 0
    resent_uncertain: bool = False


async def _call(channel: Channel, message: OutboundMessage, settings: SendSettings) -> SendResult:
    limiter = settings.limiter(channel.name)
    if limiter is not None:
        await limiter.acquire()
    async with settings.semaphore:
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
    """Send one message until it is accepted, refused, given up on, or the provider is down.

    A throttled message (429 / Retry-After) is not failed after `max_attempts`: it keeps waiting as
    the provider asks until `deadline` (the campaign's, by default the end of that day's send window,
    on the run's clock), and is then deferred — back to `planned` for a later run.
    """
    provider = channel.name
    attempts = lookups = 0
    resent_uncertain = False
    last: SendResult | None = None
    while True:
        if settings.breaker.is_open(provider):
            # Never handed over (or the last try surely did not arrive): back to planned.
            if last is not None and last.ambiguous:
                return _Delivery("in_doubt", last, last.reason, attempts, lookups)
            return _Delivery("released", last, settings.breaker.open_reason[provider], attempts, lookups)
        attempts += 1
        result = await _call(channel, message, settings)
        last = result
        if result.status == "accepted":
            settings.breaker.success(provider)
            return _Delivery("sent", result, None, attempts, lookups, resent_uncertain)
        if result.status == "permanent":
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
                if settings.uncertain_policy == "skip":
                    return _Delivery("uncertain", result, f"uncertain: {result.reason}; lookup {found.reason}",
                                     attempts, lookups)
                resent_uncertain = True
            else:
                last = SendResult(message.key, "retryable", provider, reason=result.reason,
                                  retry_after=result.retry_after)  # proven not received
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
            return _Delivery("failed", last, f"gave_up: {attempts} attempts, last {last.reason}", attempts, lookups,
                             resent_uncertain)
        if settings.breaker.is_open(provider):
            continue
        await asyncio.sleep(delay)


# The ledger columns `build_message` and the suppression check read (a claimed batch carries ~25).
_MESSAGE_COLUMNS = ("id", "campaign_id", "customer_id", "step", "channel", "to_address", "template", "locale",
                    "context", "account_manager", "value_tier", "likely_reason", "offer", "coupon_code", "send_at_local",
                    "send_rules", "timezone", "claimed_at")


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


THROTTLE_RETRY_MINUTES = 15  # a message throttled past its deadline is due again this much later


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
    deferred: list[tuple[str, str, int]] = []
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

    async def run(row, channel, message):
        rules = SendRules.parse(_value(row, "send_rules"))
        deadline = throttle_deadline(rules, _value(row, "timezone"), now)
        return row, message, await deliver(channel, message, settings, deadline)

    tasks = [asyncio.ensure_future(run(*job)) for job in jobs]
    try:
        for next_done in asyncio.as_completed(tasks):
            row, message, d = await next_done
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
            elif d.state == "released":
                release.append((campaign_id, customer_id, step))
                summary.released += 1
            elif d.state == "deferred":
                deferred.append((campaign_id, customer_id, step))
                summary.throttled += 1
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
            await asyncio.to_thread(ledger.release, release, now=settings.clock.now())
        if deferred:
            # Not due again at once (the provider asked us to wait); the gate moves it into a window.
            later = settings.clock.now() + pd.Timedelta(minutes=THROTTLE_RETRY_MINUTES)
            await asyncio.to_thread(ledger.defer, deferred, until=later, reason="throttled",
                                    now=settings.clock.now())
    if settings.breaker.open_reason:
        summary.outage = "; ".join(settings.breaker.open_reason.values())
    return summary


async def _settle(seconds: float) -> None:
    """Wait before a lookup (a seam for tests: they check the wait is asked for, not the clock)."""
    await asyncio.sleep(seconds)


async def reconcile_in_flight(ledger, settings: SendSettings, *, campaign_id: str | None = None,
                              claimed_before: Any | None = None) -> DispatchSummary:
    """Settle rows left in `sending` by a crashed run, by looking each key up at its provider."""
    from winback.ledger import Outcome

    summary = DispatchSummary()
    rows = ledger.in_flight(campaign_id, claimed_before=claimed_before)
    if len(rows) == 0:
        return summary
    # Rows claimed moments ago (a sender killed just now): its last requests may still sit in the
    # provider's queue, so wait out `lookup_settle_s` from the newest claim (the run's clock) first.
    newest = pd.to_datetime(rows["claimed_at"], utc=True).max() if "claimed_at" in rows else pd.NaT
    if settings.lookup_settle_s > 0 and not pd.isna(newest):
        age = (settings.clock.now() - newest).total_seconds()
        if 0 <= age < settings.lookup_settle_s:
            await _settle(settings.lookup_settle_s - age)
    sent, release, uncertain = [], [], []

    async def look(row):
        try:
            message = build_message(row, settings)
            channel = settings.router.channel_for(str(row["channel"]))
        except ConfigError as exc:
            from winback.render import RenderError

            if not isinstance(exc, RenderError):
                raise
            return row, None, LookupResult(message_key(*_row_key(row)), "unknown", reason=f"render: {exc}")
        except Exception as exc:  # cannot even rebuild it: it cannot be looked up by body either
            return row, None, LookupResult(message_key(*_row_key(row)), "unknown", reason=f"render: {exc}")
        return row, channel, await _lookup(channel, message, settings)

    results = await asyncio.gather(*(look(r) for r in rows.to_dict("records")))
    for row, channel, found in results:
        key = _row_key(row)
        summary.lookups += 1
        summary.reconciled[found.status] += 1
        if found.status == "found":
            sent.append(Outcome(*key, "sent", channel.name if channel else None, found.provider_message_id))
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
        ledger.record(sent, now=when)
        summary.sent += len(sent)
    if release:
        ledger.release(release, now=when)
    if uncertain:
        ledger.mark_uncertain(uncertain, error="uncertain: provider cannot tell whether it was sent", now=when)
    return summary


async def dispatch(ledger, settings: SendSettings, *, now: Any | None = None, plan: pd.DataFrame | None = None,
                   campaign_id: str | None = None, batch_size: int = 500, stale_after_s: float = 0.0,
                   max_batches: int | None = None, reconcile: bool = True,
                   last_orders: Mapping[str, Any] | None = None) -> DispatchSummary:
    """The send engine: persist the plan, reconcile in-flight rows, then claim (through the send-time
    gate) and send every due row; return the summary. `winback send`, `winback dispatch` and the
    Prefect dispatch flow all run this.

    Time comes from `settings.clock`; `now` starts a clock at that instant instead (tests, `--now`).
    `last_orders` (each customer's latest order, from the campaign's sources) lets the gate skip
    if_not_returned steps of customers who ordered since the step was decided.
    `stale_after_s`: only rows claimed at least this long before now are treated as abandoned by a
    crashed run (0 = every row in `sending`; use a positive value when another sender may be running).
    `reconcile=False` skips step 2: for the sender processes of `dispatch_in_processes`, whose
    parent reconciled once before starting them (each other's `sending` rows are not abandoned).
    """
    from winback.clock import Clock

    if now is not None:
        settings.clock = Clock.starting_at(now)
    clock = settings.clock
    started = time.perf_counter()
    summary = DispatchSummary()
    if plan is not None:
        summary.planned_new = ledger.plan(plan, now=clock.now())
    if reconcile:
        claimed_before = clock.now() - pd.Timedelta(seconds=stale_after_s) if stale_after_s > 0 else None
        summary.merge(await reconcile_in_flight(ledger, settings, campaign_id=campaign_id,
                                                claimed_before=claimed_before))
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
                await asyncio.to_thread(ledger.release, rows, now=clock.now())
                raise

    try:
        while not summary.outage and not settings.breaker.open_reason and (
                max_batches is None or batches < max_batches):
            if len(running) >= 2:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                await settle(done)
                continue
            suppressions = await asyncio.to_thread(ledger.suppressions)
            rows = await asyncio.to_thread(ledger.claim, campaign_id, now=clock.now(), limit=batch_size,
                                           last_orders=last_orders)
            gated = rows.attrs.get("gate") or Counter()
            summary.gated.update(gated)
            if len(rows) == 0:
                if sum(gated.values()):
                    continue  # the gate deferred or skipped the whole batch: claim the next one
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
    summary.remaining_planned = ledger.status(campaign_id).get("planned", 0)
    summary.seconds = time.perf_counter() - started
    return summary


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
    for status, n in sorted(summary.reconciled.items()):
        out.append((f"reconciled in-flight: {status}", str(n)))
    for reason, n in sorted(summary.gated.items()):
        out.append((f"send-time gate, {reason}", str(n)))
    if summary.throttled:
        out.append(("throttled past the deadline: deferred", str(summary.throttled)))
    if summary.released:
        out.append(("released to planned (outage)", str(summary.released)))
    if summary.in_doubt:
        out.append(("in doubt (left sending; next run reconciles)", str(summary.in_doubt)))
    out.extend([
        ("remaining planned", str(summary.remaining_planned)),
        ("requests / retries / lookups", f"{summary.attempts} / {summary.retries} / {summary.lookups}"),
        ("seconds", f"{summary.seconds:.2f}"),
        ("messages/s", f"{summary.msgs_per_s:.0f}"),
    ])
    if summary.outage:
        out.append(("outage", summary.outage))
    return out
