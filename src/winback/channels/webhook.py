"""A generic outbound webhook (WeChat / app-push gateways a company already runs).

`POST {base_url}{path}` with a JSON body, `Idempotency-Key: <ledger key>` (the IETF
httpapi-idempotency-key-header draft: a gateway that honours it will not act twice on a retry), and
`X-Winback-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
`X-Winback-Timestamp: <unix seconds>` — the same construction Stripe and Slack use, so the receiver
can reject replays by timestamp. The secret is `WINBACK_WEBHOOK_SECRET`.

2xx = accepted (message id from the JSON `id` field if any); 409 = the gateway already has this
idempotency key, i.e. accepted earlier. Lookup: `GET {base_url}{lookup_path}` with `{key}`
substituted when the gateway offers one (200 = found, 404 = not found), otherwise `unknown`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from winback.channels.base import (
    LookupResult,
    OutboundMessage,
    SendResult,
    error_text,
    result_from_http_error,
    result_from_transport_error,
)

if TYPE_CHECKING:
    from winback.clock import Clock

SIGNATURE_HEADER = "X-Winback-Signature"
TIMESTAMP_HEADER = "X-Winback-Timestamp"


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` HMAC-SHA256 over `timestamp.body`."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str | bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Constant-time check of a signature made by `sign`."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    """JSON POSTs to a company's own gateway, signed and carrying an idempotency key."""

    def __init__(self, client: httpx.AsyncClient, url: str, secret: SecretStr, *, name: str = "webhook",
                 lookup_url: str | None = None, timeout: float = 10.0, clock: Clock | None = None) -> None:
        if clock is None:
            from winback.clock import SystemClock

            clock = SystemClock()
        self._client = client
        # The receiver checks the signed timestamp against its own clock: keep this one the real time
        # (the system clock), not a run's business clock.
        self._clock = clock
        self.url = url
        self._secret = secret
        self.name = name
        self.lookup_url = lookup_url
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r}, url={self.url!r})"

    def body(self, message: OutboundMessage) -> bytes:
        """The JSON document posted for one message."""
        doc = {
            "key": message.key,
            "channel": message.channel,
            "to": message.to,
            "from": message.from_,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "metadata": dict(message.metadata),
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    async def _send_one(self, message: OutboundMessage) -> SendResult:
        body = self.body(message)
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.key,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret.get_secret_value(), timestamp, body),
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            return result_from_transport_error(message.key, self.name, exc)
        if 200 <= response.status_code < 300 or response.status_code == 409:
            try:
                doc = response.json()
                message_id = str(doc.get("id")) if isinstance(doc, dict) and doc.get("id") else None
            except ValueError:
                message_id = None
            return SendResult(message.key, "accepted", self.name, provider_message_id=message_id)
        return result_from_http_error(message.key, self.name, response, error_text(response))

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Post each message; one result per message."""
        return [await self._send_one(m) for m in messages]

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """Ask the gateway's lookup URL (if configured) whether it has the key."""
        if not self.lookup_url:
            return LookupResult(key, "unknown", reason="gateway offers no lookup")
        url = self.lookup_url.replace("{key}", urllib.parse.quote(key, safe=""))
        try:
            response = await self._client.get(url, timeout=self.timeout)
        except httpx.HTTPError as exc:
            return LookupResult(key, "unknown", reason=f"transport: {type(exc).__name__}")
        if response.status_code == 200:
            try:
                doc = response.json()
                message_id = str(doc.get("id")) if isinstance(doc, dict) and doc.get("id") else None
            except ValueError:
                message_id = None
            return LookupResult(key, "found", provider_message_id=message_id)
        if response.status_code == 404:
            return LookupResult(key, "not_found")
        return LookupResult(key, "unknown", reason=f"http_{response.status_code}")
