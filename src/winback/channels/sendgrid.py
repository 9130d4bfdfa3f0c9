"""SendGrid v3 Mail Send over httpx.

Request shape (docs: twilio.com/docs/sendgrid/api-reference/mail-send): `POST /v3/mail/send`,
`Authorization: Bearer <key>`, JSON `{"personalizations": [{"to": [{"email"}], "custom_args": {...},
"headers": {...}}], "from": {"email", "name"}, "subject", "content": [{"type": "text/plain"},
{"type": "text/html"}], "headers": {...}}`; success is `202 Accepted` with an empty body and an
`X-Message-Id` header. Our ledger key travels in `custom_args.winback_key` so event webhooks and
the Email Activity API can find it again. SendGrid allows up to 1000 personalizations per request
(mail-send/errors), but personalizations share one `content`; our messages are rendered per
customer, so each message is its own request and keeps its own result.

Lookup: the Email Activity Feed API, `GET /v3/messages?query=unique_args['winback_key']="…"&limit=…`
(twilio.com/docs/sendgrid/api-reference/email-activity/filter-all-messages), which answers
`{"messages": [{"msg_id", "to_email", "status", …}]}`. Accounts without the Activity add-on get
403/404 there: the lookup is then `unknown` and the engine applies the uncertain policy.
"""

from __future__ import annotations

from collections.abc import Sequence

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

DEFAULT_BASE_URL = "https://api.sendgrid.com"


class SendGridChannel:
    """Email through SendGrid's v3 Mail Send API."""

    name = "sendgrid"

    def __init__(self, client: httpx.AsyncClient, api_key: SecretStr, *, base_url: str = DEFAULT_BASE_URL,
                 timeout: float = 10.0) -> None:
        self._client = client
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Parsed once: httpx re-parses a str URL on every request.
        self._send_url = httpx.URL(f"{self.base_url}/v3/mail/send")

    def __repr__(self) -> str:
        return f"SendGridChannel(base_url={self.base_url!r})"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}

    def payload(self, message: OutboundMessage) -> dict:
        """The v3 Mail Send JSON body for one message."""
        content = []
        # SendGrid requires text/plain before text/html when both are present.
        if message.text:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        sender = {"email": message.from_}
        if message.from_name:
            sender["name"] = message.from_name
        custom_args = {"winback_key": message.key}
        custom_args.update({k: str(v) for k, v in message.metadata.items()})
        body: dict = {
            "personalizations": [{"to": [{"email": message.to}], "custom_args": custom_args}],
            "from": sender,
            "subject": message.subject or "",
            "content": content,
        }
        if message.headers:
            body["headers"] = dict(message.headers)
        return body

    async def _send_one(self, message: OutboundMessage) -> SendResult:
        try:
            response = await self._client.post(
                self._send_url, json=self.payload(message), headers=self._auth(),
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            return result_from_transport_error(message.key, self.name, exc)
        if response.status_code == 202:
            return SendResult(message.key, "accepted", self.name,
                              provider_message_id=response.headers.get("x-message-id"))
        return result_from_http_error(message.key, self.name, response, error_text(response))

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send each message as its own Mail Send request; one result per message."""
        return [await self._send_one(m) for m in messages]

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """Find a message by `custom_args.winback_key` through the Email Activity API."""
        query = f"unique_args['winback_key']=\"{key}\""
        try:
            response = await self._client.get(
                f"{self.base_url}/v3/messages", params={"query": query, "limit": 10}, headers=self._auth(),
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            return LookupResult(key, "unknown", reason=f"transport: {type(exc).__name__}")
        if response.status_code != 200:
            return LookupResult(key, "unknown", reason=f"http_{response.status_code}")
        try:
            messages = response.json().get("messages", [])
            if messages:
                return LookupResult(key, "found", provider_message_id=messages[0].get("msg_id"))
        except (ValueError, AttributeError, TypeError, KeyError, IndexError):
            return LookupResult(key, "unknown", reason="unreadable activity answer")
        return LookupResult(key, "not_found")
