"""Mailgun Messages API over httpx.

Request shape (documentation.mailgun.com, api-reference Messages): `POST /v3/{domain}/messages`,
HTTP basic auth `api:<key>`, form fields `from`, `to`, `subject`, `text`, `html`, `h:<Header>` for
extra MIME headers and `v:<name>` for custom variables (echoed in events and webhooks as
`user-variables`). Success is `200` with JSON `{"id": "<…@domain>", "message": "Queued. Thank you."}`.

Lookup: the Events API, `GET /v3/{domain}/events?user-variables={"winback_key": "…"}&event=accepted`
(documentation.mailgun.com, events: filter fields), answering `{"items": [{"event", "message":
{"headers": {"message-id"}}, "user-variables": {…}}], "paging": {…}}`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx
from pydantic import SecretStr

from winback.channels.base import (
    LookupResult,
    OutboundMessage,
    SendResult,
    error_text,
    format_address,
    result_from_http_error,
    result_from_transport_error,
)

DEFAULT_BASE_URL = "https://api.mailgun.net"


class MailgunChannel:
    """Email through Mailgun's Messages API."""

    name = "mailgun"

    def __init__(self, client: httpx.AsyncClient, api_key: SecretStr, domain: str, *,
                 base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0) -> None:
        self._client = client
        self._api_key = api_key
        self.domain = domain
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"MailgunChannel(base_url={self.base_url!r}, domain={self.domain!r})"

    def _auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth("api", self._api_key.get_secret_value())

    def form(self, message: OutboundMessage) -> dict[str, str]:
        """The form fields for one message."""
        data = {
            "from": format_address(message.from_, message.from_name),
            "to": message.to,
            "subject": message.subject or "",
            "v:winback_key": message.key,
        }
        if message.text:
            data["text"] = message.text
        if message.html:
            data["html"] = message.html
        for name, value in message.headers.items():
            data[f"h:{name}"] = value
        for name, value in message.metadata.items():
            data[f"v:{name}"] = str(value)
        return data

    async def _send_one(self, message: OutboundMessage) -> SendResult:
        try:
            response = await self._client.post(
                f"{self.base_url}/v3/{self.domain}/messages", data=self.form(message), auth=self._auth(),
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            return result_from_transport_error(message.key, self.name, exc)
        if response.status_code == 200:
            try:
                # Mailgun answers "<id@domain>"; events and webhooks carry it without the brackets.
                message_id = (response.json().get("id") or "").strip("<>") or None
            except (ValueError, AttributeError):
                message_id = None
            return SendResult(message.key, "accepted", self.name, provider_message_id=message_id)
        return result_from_http_error(message.key, self.name, response, error_text(response))

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send each message as its own Messages API request."""
        return [await self._send_one(m) for m in messages]

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """Find an `accepted` event whose user-variables carry our key."""
        params = {"user-variables": json.dumps({"winback_key": key}), "event": "accepted", "limit": 10}
        try:
            response = await self._client.get(
                f"{self.base_url}/v3/{self.domain}/events", params=params, auth=self._auth(), timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            return LookupResult(key, "unknown", reason=f"transport: {type(exc).__name__}")
        if response.status_code != 200:
            return LookupResult(key, "unknown", reason=f"http_{response.status_code}")
        try:
            items = response.json().get("items", [])
        except (ValueError, AttributeError):
            return LookupResult(key, "unknown", reason="unreadable events answer")
        for item in items:
            if (item.get("user-variables") or {}).get("winback_key") == key:
                message_id = ((item.get("message") or {}).get("headers") or {}).get("message-id")
                return LookupResult(key, "found", provider_message_id=message_id)
        return LookupResult(key, "not_found")
