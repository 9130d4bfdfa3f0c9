"""A local provider emulator: SendGrid, Mailgun, Twilio, a generic webhook gateway and SMTP, with faults.

It speaks the providers' own paths, auth schemes and answer shapes (see the channel modules for the
documentation each follows), so the channels run unchanged against it. Like the real providers it does
NOT deduplicate: every accepted message is recorded, and `GET /_emulator/stats` counts duplicates by
ledger key — the figure the exactly-once tests assert on. Faults are drawn from a seeded RNG at the
configured rate: 429 with Retry-After, 500, 503, a slow answer past the client's timeout (the message
IS recorded first, like a provider that accepted it and then stalled), and a dropped connection (the
transport is closed without an answer; half of the time after recording the message).
`POST /_emulator/hold {"hold": true}` holds every send request in the provider's queue, unanswered and
not recorded, until `{"hold": false}`: a request the client gave up on that still lands later.
`POST /_emulator/faults {"lookups": false}` turns every lookup API off (403, as SendGrid answers an
account without the Email Activity add-on): a provider that cannot tell whether it got a message.

It is a bare ASGI app (no framework routing on the hot path) under uvicorn with httptools, so it is
not the bottleneck of the send benchmark. Dropping a connection needs the transport, which ASGI hides:
`_DropCapableProtocol` puts it into the request scope's extensions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.policy
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.utils import format_datetime, parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from winback.channels import webhook as webhook_signing

if TYPE_CHECKING:
    from winback.clock import Clock

# Credentials the emulator accepts; `provider_config_for_emulator` hands the same ones to the channels.
SENDGRID_KEY = "SG.emulator-key"
MAILGUN_KEY = "key-emulator"
MAILGUN_DOMAIN = "mg.emulator.test"
TWILIO_SID = "AC" + "e" * 32
TWILIO_TOKEN = "emulator-auth-token"
WEBHOOK_SECRET = "emulator-webhook-secret"

FAULT_KINDS = ("429", "500", "503", "slow", "drop")

# Twilio's documented magic test numbers (twilio.com/docs/iam/test-credentials): the same errors here.
TWILIO_MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number is not currently reachable via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
_UNIQUE_ARG = re.compile(r"unique_args\['winback_key'\]\s*=\s*\"(?P<key>[^\"]*)\"")

# Mailgun Events API (documentation.mailgun.com, api-reference send/mailgun/events): the query options,
# and the filter fields this emulator answers. Anything else — `user-variables` included, which is not
# a documented filter field — is refused with a 400, so a client relying on an undocumented filter
# fails here rather than silently matching everything in production.
MAILGUN_EVENT_OPTIONS = {"begin", "end", "ascending", "limit", "pretty"}
MAILGUN_EVENT_FILTERS = {"event", "recipient", "to", "from", "message-id", "subject"}
MAILGUN_EVENTS_MAX_LIMIT = 300
MAILGUN_EVENTS_DEFAULT_LIMIT = 100
# Twilio's Message list (twilio.com/docs/messaging/api/message-resource#read-multiple-message-resources).
TWILIO_LIST_FILTERS = {"To", "From", "DateSent", "DateSent>", "DateSent<"}
TWILIO_MAX_PAGE_SIZE = 1000


@dataclass
class FaultPlan:
    """How often and how the emulator misbehaves; `rate` in [0, 1], drawn from a seeded RNG."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 5.0
    retry_after: str = "1"
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    def draw(self) -> str | None:
        """None (answer normally) or the fault to inject for this request."""
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        return self.rng.choice(self.kinds)


class MessageStore:
    """Every accepted message, by ledger key; thread-safe (the SMTP listener runs in its own thread)."""

    def __init__(self, clock: Clock | None = None) -> None:
        if clock is None:
            from winback.clock import SystemClock

            clock = SystemClock()
        self.clock = clock
        self._lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        self.by_key: dict[str, list[dict[str, Any]]] = {}

    def now(self) -> datetime:
        """The emulator's current time (aware UTC `datetime`)."""
        return self.clock.now_datetime().astimezone(UTC)

    def add(self, provider: str, key: str | None, **fields: Any) -> dict[str, Any]:
        """Record one accepted message and return it (`received_at`: ISO UTC; `received_ts`: epoch seconds)."""
        now = fields.pop("received", None) or self.now()
        record = {"id": fields.pop("id", None) or uuid.uuid4().hex, "provider": provider, "key": key,
                  "received_at": now.isoformat(), "received_ts": now.timestamp(), **fields}
        with self._lock:
            self.messages.append(record)
            if key is not None:
                self.by_key.setdefault(key, []).append(record)
        return record

    def find(self, key: str) -> list[dict[str, Any]]:
        """Messages recorded under `key`."""
        with self._lock:
            return list(self.by_key.get(key, []))

    def stats(self) -> dict[str, Any]:
        """`{"accepted", "unique_keys", "duplicates", "by_provider"}`."""
        with self._lock:
            accepted = len(self.messages)
            unique = len(self.by_key)
            keyed = sum(len(v) for v in self.by_key.values())
            by_provider = Counter(m["provider"] for m in self.messages)
        return {"accepted": accepted, "unique_keys": unique, "duplicates": keyed - unique,
                "by_provider": dict(by_provider)}

    def reset(self) -> None:
        """Forget everything."""
        with self._lock:
            self.messages.clear()
            self.by_key.clear()


class _DropCapableProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, exposing the transport so the app can drop a connection."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"winback.transport": self.transport}


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(doc).encode()


def _basic_auth(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def _form(body: bytes) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class EmulatorApp:
    """The ASGI application."""

    def __init__(self, *, faults: FaultPlan | None = None, latency_ms: float = 0.0,
                 store: MessageStore | None = None, clock: Clock | None = None) -> None:
        self.faults = faults or FaultPlan()
        self.latency_s = latency_ms / 1000.0
        self.store = store or MessageStore(clock)
        self.requests = Counter()
        self.lookups = True  # False: every lookup API answers 403 (no activity add-on, no message list)
        self._open: asyncio.Event | None = None  # made on the server's loop; set = not holding

    def _gate(self) -> asyncio.Event:
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(urllib.parse.parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        method, path = scope["method"], scope["path"]
        try:
            status, out_headers, out = await self.route(scope, method, path, headers, query, bytes(body))
        except _Dropped:
            return
        raw_headers = [(k.encode(), v.encode()) for k, v in out_headers.items()]
        raw_headers.append((b"content-length", str(len(out)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": out})

    async def route(self, scope, method, path, headers, query, body):
        """Dispatch one request to its handler."""
        parts = path.strip("/").split("/")
        if parts[0] == "_emulator":
            return self.admin(method, parts[1:], query, body)
        if method == "POST" and path == "/v3/mail/send":
            return await self.faulty(scope, "sendgrid", lambda: self.sendgrid_send(headers, body))
        if method == "GET" and path == "/v3/messages":
            return self.sendgrid_activity(headers, query)
        if len(parts) == 4 and parts[:2] == ["2010-04-01", "Accounts"] and parts[3] == "Messages.json":
            if method == "POST":
                return await self.faulty(scope, "twilio", lambda: self.twilio_send(parts[2], headers, body))
            if method == "GET":
                return self.twilio_list(parts[2], headers, query, path)
        if len(parts) == 3 and parts[0] == "v3" and parts[2] == "messages" and method == "POST":
            return await self.faulty(scope, "mailgun", lambda: self.mailgun_send(parts[1], headers, body))
        if len(parts) in (3, 4) and parts[0] == "v3" and parts[2] == "events" and method == "GET":
            # `/v3/{domain}/events/{page}`: the paging URLs Mailgun hands out (`paging.next`, …).
            return self.mailgun_events(parts[1], headers, query, page=parts[3] if len(parts) == 4 else None)
        if parts[0] == "hooks" and len(parts) == 2 and method == "POST":
            return await self.faulty(scope, "webhook", lambda: self.webhook_receive(parts[1], headers, body))
        if parts[0] == "hooks" and len(parts) == 4 and parts[2] == "deliveries" and method == "GET":
            return self.webhook_lookup(parts[1], urllib.parse.unquote(parts[3]))
        return _json(404, {"errors": [{"message": f"no route {method} {path}"}]})

    async def faulty(self, scope, provider: str, handler):
        """Apply latency and maybe a fault around a send handler."""
        self.requests[provider] += 1
        await self._gate().wait()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        fault = self.faults.draw()
        if fault is None:
            return handler()
        if fault == "429":
            return _json(429, {"errors": [{"message": "too many requests"}], "code": 20429},
                         {"retry-after": self.faults.retry_after})
        if fault in ("500", "503"):
            return _json(int(fault), {"errors": [{"message": "emulated server error"}]})
        if fault == "slow":
            answer = handler()  # accepted, then stalls past the client's timeout
            await asyncio.sleep(self.faults.slow_seconds)
            return answer
        # drop: half of the time after the message was accepted
        if self.faults.rng.random() < 0.5:
            handler()
        transport = scope.get("extensions", {}).get("winback.transport")
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            raise _Dropped
        return _json(500, {"errors": [{"message": "emulated drop (transport unavailable)"}]})

    # -- SendGrid ------------------------------------------------------------------------------------
    def sendgrid_send(self, headers, body):
        if headers.get("authorization") != f"Bearer {SENDGRID_KEY}":
            return _json(401, {"errors": [{"field": None, "message": "The provided authorization grant is "
                                                                        "invalid, expired, or revoked"}]})
        try:
            doc = json.loads(body)
        except ValueError:
            return _json(400, {"errors": [{"field": None, "message": "Bad Request"}]})
        personalizations = doc.get("personalizations") or []
        errors = []
        if not 1 <= len(personalizations) <= 1000:
            errors.append({"field": "personalizations", "message": "The personalizations field is required "
                           "and must have at least 1 and at most 1000 personalizations."})
        if not (doc.get("from") or {}).get("email"):
            errors.append({"field": "from.email", "message": "The from email does not contain a valid address."})
        if not doc.get("content") and not doc.get("template_id"):
            errors.append({"field": "content", "message": "Unless a valid template_id is provided, the content "
                           "parameter is required."})
        for i, p in enumerate(personalizations):
            for to in p.get("to") or [{}]:
                if "@" not in (to.get("email") or ""):
                    errors.append({"field": f"personalizations.{i}.to", "message": "Does not contain a valid "
                                   "address."})
        if errors:
            return _json(400, {"errors": errors})
        x_message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        content = {c.get("type"): c.get("value") for c in doc.get("content") or []}
        for i, p in enumerate(personalizations):
            args = p.get("custom_args") or {}
            for to in p["to"]:
                self.store.add("sendgrid", args.get("winback_key"), id=f"{x_message_id}.{i}", to=to["email"],
                               subject=p.get("subject", doc.get("subject")), text=content.get("text/plain"),
                               html=content.get("text/html"), headers={**doc.get("headers", {}),
                                                                      **p.get("headers", {})},
                               custom_args=args)
        return 202, {"x-message-id": x_message_id}, b""

    def sendgrid_activity(self, headers, query):
        if not self.lookups:
            return _NO_LOOKUP
        if headers.get("authorization") != f"Bearer {SENDGRID_KEY}":
            return _json(401, {"errors": [{"message": "unauthorized"}]})
        match = _UNIQUE_ARG.search(query.get("query", ""))
        if not match:
            return _json(400, {"errors": [{"message": "unsupported query"}]})
        found = [m for m in self.store.find(match["key"]) if m["provider"] == "sendgrid"]
        limit = int(query.get("limit", 10) or 10)
        return _json(200, {"messages": [{"msg_id": m["id"], "to_email": m["to"], "subject": m["subject"],
                                         "status": "delivered"} for m in found[:limit]]})

    # -- Mailgun -------------------------------------------------------------------------------------
    def mailgun_send(self, domain, headers, body):
        if _basic_auth(headers) != ("api", MAILGUN_KEY) or domain != MAILGUN_DOMAIN:
            return 401, {"content-type": "text/plain"}, b"Forbidden"
        form = _form(body)
        missing = [f for f in ("from", "to", "subject") if not form.get(f)]
        if missing or not (form.get("text") or form.get("html")):
            return _json(400, {"message": f"'{(missing or ['text'])[0]}' parameter is missing"})
        now = self.store.now()
        message_id = f"{now:%Y%m%d%H%M%S}.{uuid.uuid4().hex[:16]}@{domain}"
        variables = {k[2:]: v for k, v in form.items() if k.startswith("v:")}
        self.store.add("mailgun", variables.get("winback_key"), id=message_id, received=now, to=form["to"],
                       from_=form.get("from"), subject=form.get("subject"), text=form.get("text"),
                       html=form.get("html"),
                       headers={k[2:]: v for k, v in form.items() if k.startswith("h:")},
                       user_variables=variables)
        return _json(200, {"id": f"<{message_id}>", "message": "Queued. Thank you."})

    def mailgun_events(self, domain, headers, query, page=None):
        if not self.lookups:
            return _NO_LOOKUP
        """The Events API: a time range (`begin`, `end` / `ascending`), filter fields, `limit`, and paging URLs."""
        if _basic_auth(headers) != ("api", MAILGUN_KEY) or domain != MAILGUN_DOMAIN:
            return 401, {"content-type": "text/plain"}, b"Forbidden"
        if page is not None:  # a paging URL: the query it was made from, with the range already resolved
            try:
                state = json.loads(base64.urlsafe_b64decode(page + "=" * (-len(page) % 4)))
                query, offset = dict(state["q"]), int(state["o"])
            except (ValueError, KeyError, TypeError):
                return _json(400, {"message": "invalid page token"})
        else:
            offset = 0
            unknown = sorted(set(query) - MAILGUN_EVENT_OPTIONS - MAILGUN_EVENT_FILTERS)
            if unknown:
                return _json(400, {"message": f"'{unknown[0]}' is not a valid filter or query option"})
            try:
                query = self._mailgun_range(query)
            except ValueError as exc:
                return _json(400, {"message": str(exc)})
        ascending = query["ascending"] == "yes"
        low, high = (query["begin"], query.get("end")) if ascending else (query.get("end"), query["begin"])
        with self.store._lock:
            found = [m for m in self.store.messages if m["provider"] == "mailgun"]
        events = [e for e in map(_mailgun_accepted_event, found)
                  if (low is None or e["timestamp"] >= low) and (high is None or e["timestamp"] <= high)
                  and _mailgun_matches(e, query)]
        events.sort(key=lambda e: e["timestamp"], reverse=not ascending)
        limit = int(query["limit"])
        items = events[offset:offset + limit]
        base = f"http://{headers.get('host', '127.0.0.1')}/v3/{domain}/events"

        def url(at: int) -> str:
            token = base64.urlsafe_b64encode(json.dumps({"q": query, "o": max(at, 0)}).encode()).decode()
            return f"{base}/{token.rstrip('=')}"

        # Like Mailgun, every paging URL is always there; past the end, `next` answers an empty page.
        paging = {"next": url(offset + len(items) if items else offset), "previous": url(offset - limit),
                  "first": url(0), "last": url(max(len(events) - limit, 0))}
        return _json(200, {"items": items, "paging": paging})

    def _mailgun_range(self, query: dict[str, str]) -> dict[str, Any]:
        """Resolve `begin`/`end`/`ascending`/`limit` to numbers and a direction, as the Events API reads them."""
        resolved: dict[str, Any] = {k: v for k, v in query.items() if k in MAILGUN_EVENT_FILTERS}
        begin = _mailgun_time(query["begin"], "begin") if query.get("begin") else None
        end = _mailgun_time(query["end"], "end") if query.get("end") else None
        ascending = query.get("ascending", "").lower()
        if ascending not in ("", "yes", "no"):
            raise ValueError("'ascending' must be 'yes' or 'no'")
        if end is not None and begin is not None:
            # With both ends, their order gives the direction.
            ascending = "yes" if begin <= end else "no"
        elif not ascending:
            ascending = "no"  # no end and no direction: newest first (the range then ends at the retention limit)
        if begin is None:
            # A descending range starts now; an ascending one with no begin runs from the oldest event kept.
            begin = self.store.now().timestamp() if ascending == "no" else 0.0
        try:
            limit = int(query.get("limit") or MAILGUN_EVENTS_DEFAULT_LIMIT)
        except ValueError:
            raise ValueError("'limit' must be an integer") from None
        if not 1 <= limit <= MAILGUN_EVENTS_MAX_LIMIT:
            raise ValueError(f"'limit' must be between 1 and {MAILGUN_EVENTS_MAX_LIMIT}")
        resolved.update(begin=begin, ascending=ascending, limit=limit)
        if end is not None:
            resolved["end"] = end
        return resolved

    # -- Twilio --------------------------------------------------------------------------------------
    def _twilio_auth_ok(self, sid, headers):
        return sid == TWILIO_SID and _basic_auth(headers) == (TWILIO_SID, TWILIO_TOKEN)

    def twilio_send(self, sid, headers, body):
        if not self._twilio_auth_ok(sid, headers):
            return _json(401, {"code": 20003, "message": "Authenticate", "more_info":
                               "https://www.twilio.com/docs/errors/20003", "status": 401})
        form = _form(body)
        to = form.get("To", "")
        if to in TWILIO_MAGIC_TO:
            code, text = TWILIO_MAGIC_TO[to]
            return _json(400, {"code": code, "message": text, "more_info":
                               f"https://www.twilio.com/docs/errors/{code}", "status": 400})
        if not re.fullmatch(r"\+[1-9]\d{6,14}", to):
            return _json(400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                               "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
        if not form.get("Body") or not (form.get("From") or form.get("MessagingServiceSid")):
            return _json(400, {"code": 21602, "message": "Message body is required.", "status": 400})
        msid = "SM" + uuid.uuid4().hex
        received = self.store.now()
        now = format_datetime(received, usegmt=True)
        # Twilio has no key field; our key rides in the StatusCallback URL's query (see channels.twilio).
        callback = form.get("StatusCallback", "")
        callback_query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
        # Sent at once: the emulator has no queue, so date_sent is the time it was accepted.
        record = self.store.add("twilio", callback_query.get("winback_key"), id=msid, received=received, to=to,
                                text=form["Body"], subject=None, from_=form.get("From"), date_created=now,
                                date_sent=now)
        return _json(201, {"sid": msid, "account_sid": sid, "to": to, "from": form.get("From"),
                           "body": record["text"], "status": "queued", "date_created": now,
                           "num_segments": "1", "direction": "outbound-api"})

    def twilio_list(self, sid, headers, query, path):
        if not self.lookups:
            return _NO_LOOKUP
        """Read multiple Messages: `To`, `From`, `DateSent` / `DateSent>` / `DateSent<` (GMT dates, inclusive),
        newest first, `PageSize` per page and `next_page_uri` to the next one (null on the last)."""
        if not self._twilio_auth_ok(sid, headers):
            return _json(401, {"code": 20003, "message": "Authenticate", "status": 401})
        try:
            days = {k: _twilio_day(query[k]) for k in ("DateSent", "DateSent>", "DateSent<") if query.get(k)}
            size = int(query.get("PageSize") or 50)
            page = int(query.get("Page") or 0)
        except ValueError as exc:
            return _json(400, {"code": 20001, "message": f"Invalid parameter: {exc}", "status": 400})
        if not 1 <= size <= TWILIO_MAX_PAGE_SIZE or page < 0:
            return _json(400, {"code": 20001, "message": "PageSize must be between 1 and 1000", "status": 400})
        with self.store._lock:
            found = [m for m in self.store.messages if m["provider"] == "twilio"]

        def keep(m: dict[str, Any]) -> bool:
            day = datetime.fromisoformat(m["received_at"]).astimezone(UTC).date()
            return ((query.get("To") is None or m["to"] == query["To"])
                    and (query.get("From") is None or m.get("from_") == query["From"])
                    and ("DateSent" not in days or day == days["DateSent"])
                    and ("DateSent>" not in days or day >= days["DateSent>"])
                    and ("DateSent<" not in days or day <= days["DateSent<"]))

        found = sorted(filter(keep, found), key=lambda m: m["received_ts"], reverse=True)
        chunk = found[page * size:(page + 1) * size]
        filters = {k: v for k, v in query.items() if k in TWILIO_LIST_FILTERS}

        def uri(n: int) -> str:
            token = {"PageToken": f"PA{chunk[-1]['id']}"} if n > page and chunk else {}
            return f"{path}?{urllib.parse.urlencode({**filters, 'PageSize': size, 'Page': n, **token})}"

        more = (page + 1) * size < len(found)
        return _json(200, {"messages": [{"sid": m["id"], "to": m["to"], "from": m.get("from_"), "body": m["text"],
                                         "status": "sent", "direction": "outbound-api",
                                         "date_created": m["date_created"], "date_sent": m.get("date_sent")}
                                        for m in chunk],
                           "page": page, "page_size": size, "start": page * size,
                           "end": page * size + max(len(chunk) - 1, 0), "uri": uri(page), "first_page_uri": uri(0),
                           "next_page_uri": uri(page + 1) if more else None,
                           "previous_page_uri": uri(page - 1) if page > 0 else None})

    # -- webhook gateway -----------------------------------------------------------------------------
    def webhook_receive(self, name, headers, body):
        timestamp = headers.get(webhook_signing.TIMESTAMP_HEADER.lower(), "")
        signature = headers.get(webhook_signing.SIGNATURE_HEADER.lower(), "")
        if not webhook_signing.verify(WEBHOOK_SECRET, timestamp, body, signature):
            return _json(401, {"error": "bad signature"})
        try:
            doc = json.loads(body)
        except ValueError:
            return _json(400, {"error": "body is not JSON"})
        key = headers.get("idempotency-key") or doc.get("key")
        record = self.store.add(f"webhook:{name}", key, to=doc.get("to"), subject=doc.get("subject"),
                                text=doc.get("text"), html=doc.get("html"))
        return _json(200, {"id": record["id"]})

    def webhook_lookup(self, name, key):
        if not self.lookups:
            return _NO_LOOKUP
        found = [m for m in self.store.find(key) if m["provider"] == f"webhook:{name}"]
        if not found:
            return _json(404, {"error": "not found"})
        return _json(200, {"id": found[0]["id"], "key": key})

    # -- admin ---------------------------------------------------------------------------------------
    def admin(self, method, parts, query, body):
        what = parts[0] if parts else ""
        if what == "stats" and method == "GET":
            return _json(200, {**self.store.stats(), "requests": dict(self.requests)})
        if what == "messages" and method == "GET":
            with self.store._lock:
                messages = list(self.store.messages)
            provider = query.get("provider")
            if provider:
                messages = [m for m in messages if m["provider"] == provider]
            return _json(200, {"messages": messages})
        if what == "lookup" and method == "GET":
            if not self.lookups:
                return _NO_LOOKUP
            key = query.get("key", "")
            return _json(200, {"key": key, "messages": self.store.find(key)})
        if what == "reset" and method == "POST":
            self.store.reset()
            self.requests.clear()
            return _json(200, {"reset": True})
        if what == "hold" and method == "POST":
            try:
                hold = bool(json.loads(body or b"{}").get("hold", True))
            except (ValueError, AttributeError) as exc:
                return _json(400, {"error": str(exc)})
            (self._gate().clear if hold else self._gate().set)()
            return _json(200, {"hold": hold})
        if what == "faults" and method == "POST":
            try:
                doc = json.loads(body or b"{}")
                self.faults.rate = float(doc.get("rate", self.faults.rate))
                if "kinds" in doc:
                    kinds = tuple(doc["kinds"])
                    if not kinds or any(k not in FAULT_KINDS for k in kinds):
                        raise ValueError(f"kinds must be among {FAULT_KINDS}")
                    self.faults.kinds = kinds
                if "slow_seconds" in doc:
                    self.faults.slow_seconds = float(doc["slow_seconds"])
                if "retry_after" in doc:
                    self.faults.retry_after = str(doc["retry_after"])
                if "lookups" in doc:
                    self.lookups = bool(doc["lookups"])
            except (ValueError, TypeError) as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, {"rate": self.faults.rate, "kinds": list(self.faults.kinds)})
        return _json(404, {"error": "unknown emulator endpoint"})


class _Dropped(Exception):
    pass


# What a lookup answers when lookups are off: SendGrid's answer to an account without Email Activity.
_NO_LOOKUP = (403, {"content-type": "application/json"},
              json.dumps({"errors": [{"field": None, "message": "access forbidden"}]}).encode())


def _mailgun_time(value: str, name: str) -> float:
    """A Mailgun time: epoch seconds or an RFC 2822 date (`Fri, 3 May 2013 09:00:00 -0000`)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"'{name}' must be epoch seconds or an RFC 2822 date") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _mailgun_accepted_event(m: dict[str, Any]) -> dict[str, Any]:
    """The `accepted` event Mailgun logs for a message it queued."""
    return {"id": uuid.uuid5(uuid.NAMESPACE_URL, f"accepted:{m['id']}").hex, "event": "accepted",
            "timestamp": m["received_ts"], "log-level": "info", "recipient": m["to"],
            "message": {"headers": {"message-id": m["id"], "to": m["to"], "from": m.get("from_"),
                                    "subject": m["subject"]}},
            "user-variables": m.get("user_variables") or {}}


def _mailgun_matches(event: dict[str, Any], query: dict[str, Any]) -> bool:
    """Exact (case-insensitive) match on each filter field present in the query."""
    headers = event["message"]["headers"]
    fields = {"event": event["event"], "recipient": event["recipient"], "to": headers.get("to"),
              "from": headers.get("from"), "message-id": headers.get("message-id"), "subject": headers.get("subject")}
    for name in MAILGUN_EVENT_FILTERS & set(query):
        actual = str(fields.get(name) or "")
        if name in ("to", "from"):  # address headers: the address mentioned in them
            if query[name].lower() not in actual.lower():
                return False
        elif actual.lower() != str(query[name]).lower():
            return False
    return True


def _twilio_day(value: str) -> date:
    """A `DateSent` value: `YYYY-MM-DD` (a longer ISO timestamp counts by its date)."""
    return date.fromisoformat(value.strip()[:10])


class _SmtpHandler:
    """aiosmtpd handler recording each message by its X-Winback-Key header; faults as 421/451."""

    def __init__(self, store: MessageStore, faults: FaultPlan) -> None:
        self.store = store
        self.faults = faults

    async def handle_DATA(self, server, session, envelope):
        fault = self.faults.draw()
        if fault in ("429", "503"):
            return "451 4.3.0 Emulated temporary failure, try again later"
        if fault in ("500", "drop"):
            return "421 4.3.2 Emulated service shutting down"
        mail = message_from_bytes(envelope.content, policy=email.policy.default)  # decodes RFC 2047 headers
        key = mail.get("X-Winback-Key")
        text = html = None
        for part in mail.walk():
            if part.get_content_type() == "text/plain" and text is None:
                text = part.get_content()
            elif part.get_content_type() == "text/html" and html is None:
                html = part.get_content()
        self.store.add("smtp", key, id=mail.get("Message-ID"), to=", ".join(envelope.rcpt_tos),
                       subject=str(mail.get("Subject", "")), text=text, html=html,
                       headers={k: str(v) for k, v in mail.items()}, mail_from=envelope.mail_from)
        return "250 2.0.0 Message accepted for delivery"


def build_app(*, fault_rate: float = 0.0, latency_ms: float = 0.0, seed: int = 0,
              slow_seconds: float = 5.0, kinds: tuple[str, ...] = FAULT_KINDS,
              clock: Clock | None = None) -> EmulatorApp:
    """A fresh emulator app (`clock`: the providers' time; the system clock by default)."""
    return EmulatorApp(faults=FaultPlan(rate=fault_rate, kinds=kinds, slow_seconds=slow_seconds, seed=seed),
                       latency_ms=latency_ms, clock=clock)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _uvicorn_config(app, host: str, port: int):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http=_DropCapableProtocol, loop="auto",
                          log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30,
                          backlog=4096)


def serve(*, host: str = "127.0.0.1", port: int = 8025, smtp_port: int | None = None, fault_rate: float = 0.0,
          latency_ms: float = 0.0, seed: int = 0, slow_seconds: float = 5.0, ready=None) -> None:
    """Run the emulator in the foreground until interrupted (the `winback emulator` command)."""
    import uvicorn
    from aiosmtpd.controller import Controller

    app = build_app(fault_rate=fault_rate, latency_ms=latency_ms, seed=seed, slow_seconds=slow_seconds)
    controller = None
    if smtp_port is not None:
        controller = Controller(_SmtpHandler(app.store, app.faults), hostname=host, port=smtp_port)
        controller.start()
    try:
        if ready is not None:
            ready(app)
        uvicorn.Server(_uvicorn_config(app, host, port)).run()
    finally:
        if controller is not None:
            controller.stop()


class EmulatorServer:
    """Run the emulator for tests and the demo: in a thread (default) or a subprocess, on free ports.

    `with EmulatorServer(fault_rate=0.2, seed=1) as emu: emu.url, emu.smtp_port, emu.stats()`.
    A subprocess keeps the emulator off the caller's event loop and GIL (benchmarks).
    """

    def __init__(self, *, host: str = "127.0.0.1", fault_rate: float = 0.0, latency_ms: float = 0.0,
                 seed: int = 0, slow_seconds: float = 5.0, smtp: bool = True, subprocess: bool = False) -> None:
        self.host = host
        self.fault_rate = fault_rate
        self.latency_ms = latency_ms
        self.seed = seed
        self.slow_seconds = slow_seconds
        self.smtp = smtp
        self.use_subprocess = subprocess
        self.port = _free_port(host)
        self.smtp_port = _free_port(host) if smtp else None
        self.url = f"http://{host}:{self.port}"
        self.app: EmulatorApp | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._controller = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> EmulatorServer:
        if self.use_subprocess:
            # A free port picked here can be taken by another process before the child binds it:
            # on "address already in use", pick new ports and start again.
            for attempt in range(5):
                self._start_subprocess()
                try:
                    self._wait_ready()
                    return self
                except RuntimeError as exc:
                    if "already in use" not in str(exc) or attempt == 4:
                        raise
                    self.port = _free_port(self.host)
                    self.smtp_port = _free_port(self.host) if self.smtp else None
                    self.url = f"http://{self.host}:{self.port}"
        import uvicorn
        from aiosmtpd.controller import Controller

        self.app = build_app(fault_rate=self.fault_rate, latency_ms=self.latency_ms, seed=self.seed,
                             slow_seconds=self.slow_seconds)
        if self.smtp_port:
            self._controller = Controller(_SmtpHandler(self.app.store, self.app.faults), hostname=self.host,
                                          port=self.smtp_port)
            self._controller.start()
        self._server = uvicorn.Server(_uvicorn_config(self.app, self.host, self.port))
        self._thread = threading.Thread(target=self._server.run, name="winback-emulator", daemon=True)
        self._thread.start()
        self._wait_ready()
        return self

    def _start_subprocess(self) -> None:
        """Start `winback emulator` as a child process on this server's ports."""
        cmd = [sys.executable, "-m", "winback.cli", "emulator", "--host", self.host, "--port", str(self.port),
               "--fault-rate", str(self.fault_rate), "--latency-ms", str(self.latency_ms),
               "--seed", str(self.seed), "--slow-seconds", str(self.slow_seconds)]
        if self.smtp_port:
            cmd += ["--smtp-port", str(self.smtp_port)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"emulator exited with {self._proc.returncode}: {err[-2000:]}")
            with contextlib.suppress(OSError):
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"emulator did not start on {self.url}")

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=10)
        if self._controller is not None:
            self._controller.stop()

    def _admin(self, method: str, what: str, doc: dict | None = None) -> dict:
        import httpx

        with httpx.Client(timeout=10) as client:
            response = client.request(method, f"{self.url}/_emulator/{what}", json=doc)
            response.raise_for_status()
            return response.json()

    def stats(self) -> dict:
        """`GET /_emulator/stats`."""
        return self._admin("GET", "stats")

    def messages(self) -> list[dict]:
        """`GET /_emulator/messages`."""
        return self._admin("GET", "messages")["messages"]

    def reset(self) -> None:
        """`POST /_emulator/reset`."""
        self._admin("POST", "reset")

    def hold(self, on: bool = True) -> None:
        """Hold send requests unanswered and unrecorded (`on`), or let them through."""
        self._admin("POST", "hold", {"hold": on})

    def set_faults(self, rate: float, kinds: tuple[str, ...] | None = None, **extra) -> dict:
        """Change the fault rate (and kinds) of the running emulator."""
        doc: dict[str, Any] = {"rate": rate, **extra}
        if kinds is not None:
            doc["kinds"] = list(kinds)
        return self._admin("POST", "faults", doc)

