"""Twilio Programmable Messaging (SMS) over httpx.

Request shape (twilio.com/docs/messaging/api/message-resource): `POST
/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP basic auth `AccountSid:AuthToken`, form
fields `To` (E.164), `From` or `MessagingServiceSid`, `Body`, optional `StatusCallback`. Success is
`201 Created` with JSON `{"sid": "SM…", "status": "queued", …}`. Errors are JSON `{"code", "message",
"more_info", "status"}`: 21610 = the recipient replied STOP (unsubscribed; suppress), 21211 / 21614 =
not a valid / not a mobile number (invalid address), 20429 or HTTP 429 = too many requests (retry).
Account errors (HTTP 401/403; 20003 authentication, 20005 account not active, 21212 / 21601 / 21659 /
21660: the From number is not this account's to send from) stop SMS for the run: every message would
get the same answer, so none of them is failed (twilio.com/docs/api/errors/<code>).

Accepted means: a 2xx answer whose JSON body carries a Message SID (`SM`/`MM` + 32 hex digits). Twilio
documents `201 Created` for this request; its official library accepts any 2xx and reads the JSON
(twilio-python `base/version.py`, `create`), so a 200 or 202 with a Message SID counts as well. A 2xx
without one (an HTML page from a captive portal or a proxy, an empty body) is not Twilio's answer:
not sent, and ambiguous (looked up before any retry), since a proxy might still have forwarded it.

Twilio has no idempotency key and no search by custom metadata, so lookup reads the Message list
(`GET …/Messages.json?To=…&DateSent>=YYYY-MM-DD&PageSize=…`, newest first, `next_page_uri` for the
next page) and matches the recipient and the exact body; without the re-rendered message the answer
is `unknown`. The `DateSent>=` bound is the GMT date of the attempt's claim minus one day (Twilio
filters by date only; the day before absorbs clock skew around midnight) — never the day of the
lookup, which may come days after a crash. Without a claim time the list is not filtered by date.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from winback.channels.base import (
    LookupResult,
    OutboundMessage,
    SendResult,
    account_refusal,
    claimed_since,
    parse_retry_after,
    result_from_http_error,
    result_from_transport_error,
    search_pages,
)

if TYPE_CHECKING:
    from winback.clock import Clock

DEFAULT_BASE_URL = "https://api.twilio.com"

# Error code → (suppression reason or None, short reason). twilio.com/docs/api/errors/<code>.
PERMANENT_CODES = {
    21610: ("unsubscribed", "recipient unsubscribed (STOP)"),
    21211: ("invalid_address", "invalid 'To' phone number"),
    21614: ("invalid_address", "'To' number is not a mobile number"),
    21612: (None, "'To' number is unroutable"),
    21408: (None, "permission to send to this region is not enabled"),
}

# Errors about the account or its sender number, not about the recipient: they stop the channel.
ACCOUNT_CODES = {
    20003: "authentication failed",
    20005: "the account is not active",
    21212: "the 'From' number is invalid",
    21601: "the 'From' number is not an SMS-capable number of this account",
    21659: "the 'From' number is not a Twilio number",
    21660: "the 'From' number does not belong to this account",
}
_MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")

LOOKUP_PAGE_SIZE = 100
LOOKUP_MAX_PAGES = 5  # 500 messages to one number since the claim: more than that, the answer is `unknown`


class TwilioChannel:
    """SMS through Twilio's Messages resource."""

    name = "twilio"

    def __init__(self, client: httpx.AsyncClient, account_sid: str, auth_token: SecretStr, *,
                 from_number: str | None = None, messaging_service_sid: str | None = None,
                 status_callback: str | None = None, base_url: str = DEFAULT_BASE_URL,
                 timeout: float = 10.0, clock: Clock | None = None) -> None:
        self._client = client
        self._clock = clock  # the real time, to tell a claim in business time from one in real time
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"TwilioChannel(base_url={self.base_url!r}, account_sid={self.account_sid!r})"

    def _auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.account_sid, self._auth_token.get_secret_value())

    @property
    def _messages_url(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def form(self, message: OutboundMessage) -> dict[str, str]:
        """The form fields for one SMS."""
        data = {"To": message.to, "Body": message.text or ""}
        if self.messaging_service_sid:
            data["MessagingServiceSid"] = self.messaging_service_sid
        else:
            data["From"] = message.from_ or (self.from_number or "")
        if self.status_callback:
            # Our key in the callback URL lets the events server tie status callbacks to the ledger row.
            sep = "&" if "?" in self.status_callback else "?"
            data["StatusCallback"] = f"{self.status_callback}{sep}{urllib.parse.urlencode({'winback_key': message.key})}"
        return data

    async def _send_one(self, message: OutboundMessage) -> SendResult:
        try:
            response = await self._client.post(self._messages_url, data=self.form(message), auth=self._auth(),
                                               timeout=self.timeout)
        except httpx.HTTPError as exc:
            return result_from_transport_error(message.key, self.name, exc)
        if 200 <= response.status_code < 300:
            sid = _message_sid(response)
            if sid is not None:
                return SendResult(message.key, "accepted", self.name, provider_message_id=sid)
            kind = (response.headers.get("content-type") or "no content type").split(";")[0].strip()
            return SendResult(message.key, "retryable", self.name, ambiguous=True,
                              reason=f"not_twilio: HTTP {response.status_code} ({kind}) without a Message SID "
                                     "(a captive portal or proxy answered?)")
        try:
            body = response.json()
            code = int(body.get("code")) if body.get("code") is not None else None
            text = str(body.get("message", ""))[:200]
        except (ValueError, AttributeError, TypeError):
            code, text = None, response.text[:200]
        if code in ACCOUNT_CODES or response.status_code in (401, 403):
            return account_refusal(message.key, self.name, response.status_code,
                                   ACCOUNT_CODES.get(code or 0, text), code=str(code) if code else None)
        if code in PERMANENT_CODES:
            suppress, short = PERMANENT_CODES[code]
            return SendResult(message.key, "permanent", self.name, reason=f"twilio_{code}: {short}",
                              suppress=suppress)
        if code == 20429 or response.status_code == 429:
            return SendResult(message.key, "retryable", self.name, reason=f"twilio_{code or 429}: too many requests",
                              retry_after=parse_retry_after(response.headers.get("retry-after")))
        return result_from_http_error(message.key, self.name, response, f"twilio_{code}: {text}" if code else text)

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send each SMS as its own request."""
        return [await self._send_one(m) for m in messages]

    lookup_needs_body = True  # matched by recipient and body: the message must be rendered again

    def lookup_params(self, message: OutboundMessage) -> dict[str, str | int]:
        """The Message-list filters for one lookup: `To`, `DateSent>` (sent as `DateSent%3E=<day>`, i.e.
        `DateSent>=<day>`, the key twilio-python uses for date_sent_after) and `PageSize`."""
        params: dict[str, str | int] = {"To": message.to, "PageSize": LOOKUP_PAGE_SIZE}
        claimed = claimed_since(message, self._clock)
        if claimed is not None:
            params["DateSent>"] = (claimed - timedelta(days=1)).date().isoformat()
        return params

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """Match a message to the same number with the same body, sent since the day before the attempt's claim."""
        if message is None:
            return LookupResult(key, "unknown", reason="twilio cannot search by our key without the message")
        def following(page):
            # Twilio's next_page_uri is a path on the same host carrying every filter and a PageToken.
            uri = page.get("next_page_uri")
            if not uri:
                return None
            return self._same_host(str(uri)) or False

        return await search_pages(
            self._client, key, self._messages_url, self.lookup_params(message), auth=self._auth(),
            timeout=self.timeout, items="messages", next_url=following,
            matches=lambda item: item.get("to") == message.to and item.get("body") == (message.text or ""),
            message_id=lambda item: item.get("sid"), max_pages=LOOKUP_MAX_PAGES, what="messages")

    def _same_host(self, uri: str) -> str | None:
        """`next_page_uri` as an absolute URL on our base URL; None if it names another host (our auth stays home)."""
        if uri.startswith("/") and not uri.startswith("//"):
            return self.base_url + uri
        return uri if uri.startswith(self.base_url + "/") else None


def _message_sid(response: httpx.Response) -> str | None:
    """The Message SID of a create answer, or None when the body is not Twilio's Message JSON."""
    try:
        body = response.json()
    except ValueError:
        return None
    sid = body.get("sid") if isinstance(body, dict) else None
    return sid if isinstance(sid, str) and _MESSAGE_SID.match(sid) else None
