"""The one port every provider adapter implements, and the normalised message and result types.

Each provider module only builds its payload, posts it and maps the provider's answer into one
`SendResult` per message (accepted / retryable / permanent, with a reason), in the manner of
django-anymail's `backends/base.py`. Library exceptions (httpx, aiosmtplib) are translated here,
at the boundary, so the send engine never sees them.
"""

from __future__ import annotations

import email.utils
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import httpx

if TYPE_CHECKING:
    from winback.clock import Clock

SendStatus = Literal["accepted", "retryable", "permanent"]
# Whom a refusal is about: this message, or the account/configuration (every message would fail alike).
ResultScope = Literal["message", "account"]
LookupStatus = Literal["found", "not_found", "unknown"]

# Longest Retry-After we wait out inside a run. A provider asking for more (`Retry-After: 999999`) is
# treated by the engine as an outage of that channel for this run: its messages are deferred, not slept on.
MAX_RETRY_AFTER_S = 300.0

# How providers are named in the one line a person reads when a channel stops.
PROVIDER_NAMES = {"sendgrid": "SendGrid", "mailgun": "Mailgun", "twilio": "Twilio", "smtp": "The SMTP server",
                  "webhook": "The webhook endpoint", "call_task": "The CRM webhook"}
_CREDENTIALS = {"sendgrid": "the API key", "mailgun": "the API key", "twilio": "the account SID or auth token",
                "smtp": "the SMTP login", "webhook": "the request", "call_task": "the request"}


def message_key(campaign_id: str, customer_id: str, step: int | str) -> str:
    """The ledger key as sent to providers: `campaign:customer:step` (also the idempotency key)."""
    return f"{campaign_id}:{customer_id}:{int(step)}"


def split_key(key: str) -> tuple[str, str, int]:
    """Invert `message_key` (campaign ids may contain ':'; the customer id and step are the last two)."""
    campaign_id, customer_id, step = key.rsplit(":", 2)
    return campaign_id, customer_id, int(step)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One rendered message ready for a provider; `key` is the ledger key and idempotency key.

    `claimed_at` is when the ledger claimed this attempt (aware UTC): lookups bound their search by it
    rather than by the time of the lookup, which may come days after a crash.
    """

    key: str
    channel: str
    to: str
    from_: str
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    from_name: str | None = None
    claimed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """The normalised answer for one message.

    `ambiguous` is True when the request may have reached the provider although no answer came back
    (read timeout, connection dropped after the request was written, HTTP 500): the engine must look
    the key up before sending again. `suppress` names a suppression reason (`unsubscribed`,
    `invalid_address`, …) the provider's answer implies. `scope="account"` marks a refusal of the
    account or configuration (a rejected API key, a suspended account, a wrong endpoint): the engine
    stops the channel for the run and the message stays planned, instead of failing it.
    """

    key: str
    status: SendStatus
    provider: str
    provider_message_id: str | None = None
    reason: str | None = None
    retry_after: float | None = None
    suppress: str | None = None
    ambiguous: bool = False
    scope: ResultScope = "message"


@dataclass(frozen=True, slots=True)
class LookupResult:
    """Whether the provider has a message for our key: found (with its id), not_found, or unknown."""

    key: str
    status: LookupStatus
    provider_message_id: str | None = None
    reason: str | None = None


@runtime_checkable
class Channel(Protocol):
    """A provider adapter: send a batch of rendered messages, and find a message by our key."""

    name: str

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send the messages; one `SendResult` per message, in order. Never raises for provider errors."""
        ...

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """Whether the provider already accepted a message carrying `key` (reconciliation on resume).

        `message` is the same message rendered again, for providers that cannot search by our key
        (Twilio: matched by recipient and body).
        """
        ...


def parse_retry_after(value: str | None, *, now: datetime | None = None,
                      clock: Clock | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Returns None when absent or unreadable and 0 for a date in the past; it is not capped (`inf` for an
    absurd value): the engine compares it with `MAX_RETRY_AFTER_S`, above which it stops waiting. An HTTP-date is compared with `now`, else with `clock` (default: the system clock — the provider's
    date is a real instant, so a run's business clock would be the wrong reference).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        if now is None:
            now = (clock or _system_clock()).now_datetime()
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)


def claimed_since(message: OutboundMessage | None, clock: Clock | None = None) -> datetime | None:
    """The attempt's claim time (aware UTC) to bound a provider-side search by; None when there is none to trust.

    A claim stamped later than the real time (`clock`, the system clock by default) was stamped by a run
    in business time ahead of the date (`--now` in the future, as the demo's simulated days are): it is
    no instant the provider's records can be compared with, so the search is left unbounded rather than
    miss the message and send it twice.
    """
    claimed = message.claimed_at if message is not None else None
    if claimed is None or claimed != claimed:  # absent, or pandas' NaT (never equal to itself)
        return None
    claimed = claimed.replace(tzinfo=UTC) if claimed.tzinfo is None else claimed.astimezone(UTC)
    if claimed > (clock or _system_clock()).now_datetime():
        return None
    return claimed


def _system_clock() -> Clock:
    # Imported here: winback.clock loads pandas, which `winback --help` should not pay for.
    from winback.clock import SystemClock

    return SystemClock()


# Statuses after which the provider certainly did not act on the request (the gateway or the rate
# limiter answered), so a retry cannot duplicate; a 500 may come after the work was done.
_NOT_PROCESSED = {408, 425, 429, 502, 503, 504}


def result_from_http_error(key: str, provider: str, response: httpx.Response, reason: str, *,
                           clock: Clock | None = None) -> SendResult:
    """Map a non-success HTTP answer: retryable (429/5xx/408), an account refusal (401/403, or 404/405 on
    our fixed send endpoint: a wrong base URL, account or domain) that stops the channel, else a
    permanent refusal of this message (other 4xx)."""
    status = response.status_code
    if status < 400:
        # A success or redirect that is not the provider's documented answer (an HTML page from a captive
        # portal or a proxy, say): not sent as far as we know, but a proxy might have forwarded it.
        kind = (response.headers.get("content-type") or "no content type").split(";")[0].strip()
        return SendResult(key, "retryable", provider, ambiguous=True,
                          reason=f"unexpected_answer: HTTP {status} ({one_line(kind, 60)}) is not the provider's answer")
    if status == 429 or status >= 500 or status in (408, 425):
        return SendResult(
            key,
            "retryable",
            provider,
            reason=f"http_{status}: {reason}" if reason else f"http_{status}",
            retry_after=parse_retry_after(response.headers.get("retry-after"), clock=clock),
            ambiguous=status not in _NOT_PROCESSED,
        )
    if status in _ACCOUNT_STATUSES:
        return account_refusal(key, provider, status, reason)
    return SendResult(key, "permanent", provider, reason=f"http_{status}: {reason}" if reason else f"http_{status}")


# Answers about the account or the endpoint, never about one message: every message would get the same.
_ACCOUNT_STATUSES = (401, 402, 403, 404, 405, 407)


def account_refusal(key: str, provider: str, status: int, detail: str | None = None, *,
                    code: str | None = None) -> SendResult:
    """A refusal of the account or configuration, with the one line a person reads:
    `SendGrid rejected the API key (HTTP 401): …`."""
    name = PROVIDER_NAMES.get(provider, provider)
    what = {401: f"rejected {_CREDENTIALS.get(provider, 'the credentials')}",
            402: "refused the request: the account needs payment",
            403: "refused this account or sender",
            404: "has no such endpoint (check its base_url, account or domain)",
            405: "has no such endpoint (check its base_url)",
            407: "was not reached: the proxy wants credentials"}.get(status, "refused the account")
    kind = "auth_rejected" if status in (401, 407) else "account_rejected"
    label = f"HTTP {status}" + (f", error {code}" if code else "")
    line = f"{name} {what} ({label})"
    detail = one_line(detail or "")
    if detail:
        line += f": {detail}"
    return SendResult(key, "permanent", provider, reason=f"{kind}: {line}", scope="account")


def one_line(text: str, limit: int = 200) -> str:
    """Provider text made safe to show on one line: control characters and runs of space collapsed."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())[:limit]


def result_from_transport_error(key: str, provider: str, exc: Exception) -> SendResult:
    """Map an httpx transport exception: retryable, ambiguous unless the request surely was not sent."""
    name = type(exc).__name__
    # ConnectError / PoolTimeout: no byte of the request left this process. Everything else (read
    # timeouts, a connection closed before the answer, httpx-aiohttp's mapping of a server disconnect
    # to ConnectTimeout) may have reached the provider.
    surely_unsent = isinstance(exc, httpx.ConnectError | httpx.PoolTimeout)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return SendResult(key, "permanent", provider, reason=f"bad_url: {name}")
    return SendResult(key, "retryable", provider, reason=f"transport: {name}", ambiguous=not surely_unsent)


def error_text(response: httpx.Response, limit: int = 200) -> str:
    """A short reason from a provider's error body (JSON `message`/`errors[0].message`, else text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:limit].strip()
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            if isinstance(first, dict):
                return str(first.get("message", first))[:limit]
        for k in ("message", "error", "detail"):
            if k in body:
                return str(body[k])[:limit]
    return str(body)[:limit]


def unsubscribe_headers(https_url: str | None, mailto: str | None) -> dict[str, str]:
    """RFC 2369 List-Unsubscribe (https and mailto) plus RFC 8058 one-click List-Unsubscribe-Post."""
    parts = []
    if https_url:
        parts.append(f"<{https_url}>")
    if mailto:
        parts.append(f"<{mailto if mailto.startswith('mailto:') else 'mailto:' + mailto}>")
    if not parts:
        return {}
    headers = {"List-Unsubscribe": ", ".join(parts)}
    if https_url:  # RFC 8058 requires an https URI in List-Unsubscribe for one-click
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def mailto_unsubscribe(address: str, token: str) -> str:
    """A mailto: unsubscribe URI whose subject carries the signed token."""
    return f"mailto:{address}?subject={urllib.parse.quote('unsubscribe ' + token)}"


def format_address(address: str, name: str | None) -> str:
    """`Name <address>` with RFC 5322 quoting (non-ASCII names encoded by the mail library downstream)."""
    return email.utils.formataddr((name, address)) if name else address


async def search_pages(client: httpx.AsyncClient, key: str, url: str, params: Mapping[str, Any] | None, *, auth: Any,
                       timeout: float, items: str, next_url: Any, matches: Any, message_id: Any,
                       max_pages: int, what: str) -> LookupResult:
    """Page through a provider's list API for one message: found (with its id), not_found, or unknown.

    `items` names the page's list; `next_url(page)` gives the absolute URL of the next page on our own
    base URL (None: the last page; `False`: it points elsewhere, and our credentials stay home);
    `matches(item)` says whether an item is our message and `message_id(item)` gives its id.
    """
    for _ in range(max_pages):
        try:
            response = await client.get(url, params=params, auth=auth, timeout=timeout)
        except httpx.HTTPError as exc:
            return LookupResult(key, "unknown", reason=f"transport: {type(exc).__name__}")
        if response.status_code != 200:
            return LookupResult(key, "unknown", reason=f"http_{response.status_code}")
        try:
            page = response.json()
            found = page.get(items) or []
            following = next_url(page)
        except (ValueError, AttributeError):
            return LookupResult(key, "unknown", reason=f"unreadable {what} answer")
        for item in found:
            if matches(item):
                return LookupResult(key, "found", provider_message_id=message_id(item))
        if not found or following is None:  # an empty page, or the last one, ends the range
            return LookupResult(key, "not_found")
        if following is False:
            return LookupResult(key, "unknown", reason=f"the next page of {what} points elsewhere")
        url, params = str(following), None  # None, not {}: httpx would drop the URL's own query
    return LookupResult(key, "unknown", reason=f"no match in the first {max_pages} pages of {what}")
