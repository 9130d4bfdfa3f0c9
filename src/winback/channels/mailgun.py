"""Mailgun Messages API over httpx.

Request shape (documentation.mailgun.com, api-reference Messages): `POST /v3/{domain}/messages`,
HTTP basic auth `api:<key>`, form fields `from`, `to`, `subject`, `text`, `html`, `h:<Header>` for
extra MIME headers and `v:<name>` for custom variables (echoed in events and webhooks as
`user-variables`). Success is `200` with JSON `{"id": "<…@domain>", "message": "Queued. Thank you."}`.

Lookup: the Events API as documented (documentation.mailgun.com, api-reference send/mailgun/events,
"Retrieves a paginated list of events"): `GET /v3/{domain}/events` with a time range — `begin` (epoch
seconds or an RFC 2822 date) and `ascending=yes` — and the documented filter fields `event=accepted` and
`recipient=<address>`. Custom variables are not a filter field, so our key (sent as `v:winback_key`,
echoed in each event's `user-variables`) is matched on our side. The answer is `{"items": [{"event",
"timestamp", "recipient", "message": {"headers": {"message-id"}}, "user-variables": {…}}], "paging":
{"next", "previous", "first", "last"}}`; the whole range is read by following `paging.next` until an
empty page (Mailgun always returns a next URL), for a bounded number of pages.

`begin` is the attempt's claim time less `LOOKUP_BEGIN_MARGIN` (clock skew between us and Mailgun).
Without a claim time the search runs from now back through the retention period (`ascending=no`, no
`begin` — the documented default range for a descending search).
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from winback.channels.base import (
    LookupResult,
    OutboundMessage,
    SendResult,
    claimed_since,
    error_text,
    format_address,
    result_from_http_error,
    result_from_transport_error,
    search_pages,
)

if TYPE_CHECKING:
    from winback.clock import Clock

DEFAULT_BASE_URL = "https://api.mailgun.net"
LOOKUP_BEGIN_MARGIN = timedelta(minutes=15)
LOOKUP_PAGE_LIMIT = 300  # the API's maximum
LOOKUP_MAX_PAGES = 5


class MailgunChannel:
    """Email through Mailgun's Messages API."""

    name = "mailgun"

    def __init__(self, client: httpx.AsyncClient, api_key: SecretStr, domain: str, *,
                 base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0, clock: Clock | None = None) -> None:
        self._client = client
        self._clock = clock  # the real time, to tell a claim in business time from one in real time
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

    @property
    def _events_url(self) -> str:
        return f"{self.base_url}/v3/{self.domain}/events"

    def lookup_params(self, message: OutboundMessage | None) -> dict[str, str | int]:
        """The Events API query for one lookup: time range, `event=accepted`, and the recipient when known."""
        params: dict[str, str | int] = {"event": "accepted", "limit": LOOKUP_PAGE_LIMIT}
        if message is not None and message.to:
            params["recipient"] = email.utils.parseaddr(message.to)[1] or message.to
        claimed = claimed_since(message, self._clock)
        if claimed is not None:
            params["begin"] = int((claimed - LOOKUP_BEGIN_MARGIN).timestamp())
            params["ascending"] = "yes"
        else:
            params["ascending"] = "no"
        return params

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """Find an `accepted` event for the recipient since the claim whose user-variables carry our key."""
        def following(page):
            # The next URL carries the query; it must stay on our base URL (it gets our API key).
            nxt = (page.get("paging") or {}).get("next")
            if not nxt:
                return None
            return str(nxt) if str(nxt).startswith(self._events_url + "/") else False

        return await search_pages(
            self._client, key, self._events_url, self.lookup_params(message), auth=self._auth(),
            timeout=self.timeout, items="items", next_url=following,
            matches=lambda item: (item.get("user-variables") or {}).get("winback_key") == key,
            message_id=lambda item: ((item.get("message") or {}).get("headers") or {}).get("message-id"),
            max_pages=LOOKUP_MAX_PAGES, what="events")
