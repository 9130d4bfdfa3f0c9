"""The events server: provider webhooks (signed) and the unsubscribe link, writing to the ledger.

An ASGI app (Starlette, served by uvicorn through `winback events-server`). Every webhook is
verified before anything is read from it: a missing, forged or stale signature answers 403 and
records nothing. A provider whose key is not configured answers 503 (the provider retries later;
unsigned events are never accepted). Ledger writes run in the thread pool (SQLAlchemy is sync);
a ledger failure answers 503 so the provider retries — events are de-duplicated, so a retry is safe.

A validly signed request seen before is a replay (`winback.events.replay`): Mailgun's token and
SendGrid's signed timestamp + body are remembered for the signature's window, and a second delivery
answers 406 for Mailgun (its documented "rejected, do not retry" answer) and 409 for SendGrid (which
retries any non-2xx for a day; its own retries come signed anew) and changes nothing. Time — the
signature's age and the tokens' expiry — comes from the injected `clock`.

Unsubscribe: `GET /unsubscribe/{token}` only shows a confirmation page (mail scanners prefetch
links, so GET never changes anything); `POST` with `List-Unsubscribe=One-Click` (RFC 8058, sent by
mail clients and by the page's own button) suppresses the customer on that channel at once.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

import pandas as pd
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from winback.clock import Clock, SystemClock
from winback.errors import ConfigError, DataError, LedgerError
from winback.events.normalize import DeliveryEvent, mailgun_event, sendgrid_events, twilio_event
from winback.events.replay import forget_token, remember_token
from winback.events.signatures import (
    DEFAULT_MAX_AGE_S,
    SignatureError,
    load_sendgrid_public_key,
    verify_mailgun,
    verify_sendgrid,
    verify_twilio,
)

log = logging.getLogger("winback.events")

# What a replayed (already seen) signed request answers, per provider: Mailgun does not retry a 406
# (documentation.mailgun.com, webhooks: automatic retries); SendGrid retries every non-2xx for up to
# 24 hours whatever the code, so 409 simply says what happened.
REPLAY_STATUS = {"mailgun": 406, "sendgrid": 409}

MAX_BODY_BYTES = 5 * 1024 * 1024  # SendGrid batches events; 5 MB is far above a real batch
_NO_STORE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}


def _reveal(value: str | SecretStr | None) -> str | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value or None


def create_app(
    ledger,
    *,
    sendgrid_public_key: str | SecretStr | None = None,
    mailgun_signing_key: str | SecretStr | None = None,
    twilio_auth_token: str | SecretStr | None = None,
    unsubscribe_secret: str | SecretStr | None = None,
    public_url: str | None = None,
    clock: Clock | None = None,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> Starlette:
    """Build the events ASGI app over a `Ledger`; keys left None disable that endpoint (503).

    `clock` (default: the system clock) dates the signature-age check and the replay tokens' expiry.
    """
    clock = clock or SystemClock()
    sg_text = _reveal(sendgrid_public_key)
    sg_key = load_sendgrid_public_key(sg_text) if sg_text else None
    mg_key = _reveal(mailgun_signing_key)
    tw_token = _reveal(twilio_auth_token)
    unsub_secret = _reveal(unsubscribe_secret)
    if public_url and not public_url.startswith(("https://", "http://")):
        raise ConfigError(f"public URL must start with https:// or http:// (got {public_url!r})",
                          field="WINBACK_PUBLIC_URL")
    base_url = public_url.rstrip("/") if public_url else None

    async def record(events: list[DeliveryEvent]) -> int:
        def write() -> int:
            return sum(bool(ledger.record_event(**e.as_kwargs())) for e in events)

        return await run_in_threadpool(write)

    async def first_time(provider: str, token: str, signed_at: str, now: pd.Timestamp) -> None:
        """Refuse a signed token seen before; remember it until its signature would be stale."""
        expires_at = pd.Timestamp(float(signed_at) + max_age_s, unit="s", tz="UTC")
        if not await run_in_threadpool(remember_token, ledger, provider, token, expires_at, now):
            log.warning("rejected %s webhook: replay of a request already received", provider)
            raise _Reject(REPLAY_STATUS[provider], "replayed webhook: this signed request was already received")

    async def record_once(provider: str, token: str, events: list[DeliveryEvent]) -> int:
        try:
            return await record(events)
        except LedgerError:
            # Not processed: the provider retries (503), and that retry must not be taken for a replay.
            try:
                await run_in_threadpool(forget_token, ledger, provider, token)
            except LedgerError:
                log.error("could not forget the %s webhook token of a request that failed", provider)
            raise

    async def read_body(request: Request) -> bytes:
        """The body, counted as it arrives: past `MAX_BODY_BYTES` the request is refused (413) at once,
        without reading the rest — a chunked upload declares no length, so the declared one is not enough."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _Reject(413, "request body too large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _Reject(413, "request body too large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def sendgrid(request: Request) -> Response:
        if sg_key is None:
            return _error(503, "SendGrid webhook verification key is not configured")
        body = await read_body(request)
        timestamp = request.headers.get("x-twilio-email-event-webhook-timestamp") or ""
        now = clock.now()
        verify_sendgrid(sg_key, body, request.headers.get("x-twilio-email-event-webhook-signature"), timestamp,
                        now=now.timestamp(), max_age_s=max_age_s)
        # The token names what was signed — timestamp and body — rather than the signature itself: an
        # ECDSA signature (r, s) has a twin (r, n − s) that verifies as well, so a replay could carry it.
        token = f"{timestamp}:{hashlib.sha256(timestamp.encode() + b'.' + body).hexdigest()}"
        await first_time("sendgrid", token, timestamp, now)
        events = sendgrid_events(_json(body))
        new = await record_once("sendgrid", token, events)
        log.info("sendgrid webhook: %d events, %d new", len(events), new)
        return JSONResponse({"received": len(events), "new": new})

    async def twilio(request: Request) -> Response:
        if tw_token is None:
            return _error(503, "Twilio auth token is not configured")
        body = await read_body(request)
        try:
            params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise _Reject(400, "form body is not UTF-8") from None
        urls = [str(request.url)]
        if base_url:
            query = f"?{request.url.query}" if request.url.query else ""
            urls.insert(0, f"{base_url}{request.url.path}{query}")
        verify_twilio(tw_token, urls, params, request.headers.get("x-twilio-signature"))
        event = twilio_event(dict(params), dict(request.query_params))
        new = await record([event])
        log.info("twilio status callback: %s, new=%s", event.event, bool(new))
        return PlainTextResponse("ok")

    async def mailgun(request: Request) -> Response:
        if mg_key is None:
            return _error(503, "Mailgun webhook signing key is not configured")
        payload = _json(await read_body(request))
        signature = payload.get("signature") if isinstance(payload, dict) else None
        now = clock.now()
        verify_mailgun(mg_key, signature, now=now.timestamp(), max_age_s=max_age_s)
        # Mailgun signs only timestamp + token, not the event data: the token is what makes a request unique.
        token = str(signature["token"])
        await first_time("mailgun", token, str(signature["timestamp"]), now)
        event = mailgun_event(payload)
        new = await record_once("mailgun", token, [event])
        log.info("mailgun webhook: %s, new=%s", event.event, bool(new))
        return JSONResponse({"received": 1, "new": new})

    def check_token(token: str) -> tuple[str, str, str]:
        from winback.render.tokens import verify_unsubscribe_token

        try:
            return verify_unsubscribe_token(token, unsub_secret)
        except DataError:
            raise _Reject(400, "invalid unsubscribe link") from None

    async def unsubscribe_page(request: Request) -> Response:
        if unsub_secret is None:
            return _error(503, "unsubscribe secret is not configured")
        lang = _language(request, None)
        try:
            campaign_id, customer_id, channel = check_token(request.path_params["token"])
        except _Reject:
            return _page(lang, "invalid", status=400)
        row = await run_in_threadpool(ledger.find_row, campaign_id, customer_id, channel=channel)
        lang = _language(request, row)
        return _page(lang, "confirm", channel=channel)

    async def unsubscribe(request: Request) -> Response:
        if unsub_secret is None:
            return _error(503, "unsubscribe secret is not configured")
        lang = _language(request, None)
        try:
            campaign_id, customer_id, channel = check_token(request.path_params["token"])
        except _Reject:
            return _page(lang, "invalid", status=400)
        form = dict(parse_qsl((await read_body(request)).decode("utf-8", "replace"), keep_blank_values=True))
        if form.get("List-Unsubscribe") != "One-Click":
            return _page(lang, "invalid", status=400)

        def write() -> dict[str, Any] | None:
            row = ledger.find_row(campaign_id, customer_id, channel=channel)
            address = row["to_address"] if row else None
            ledger.record_event("winback", f"unsubscribe:{campaign_id}:{customer_id}:{channel}", "unsubscribed",
                                campaign_id=campaign_id, customer_id=customer_id, channel=channel,
                                address=address, payload={"via": "List-Unsubscribe=One-Click"})
            # Also when the event is a replay: a suppression lifted since must come back.
            ledger.add_suppression(customer_id, channel, address, "unsubscribed", "unsubscribe-link")
            return row

        row = await run_in_threadpool(write)
        log.info("unsubscribe: one customer on %s", channel)
        return _page(_language(request, row), "done", channel=channel)

    async def healthz(request: Request) -> Response:
        try:
            await run_in_threadpool(ledger.ping)
        except LedgerError as exc:
            return JSONResponse({"status": "error", "ledger": str(exc)}, status_code=503)
        enabled = {"sendgrid": sg_key is not None, "twilio": tw_token is not None, "mailgun": mg_key is not None,
                   "unsubscribe": unsub_secret is not None}
        return JSONResponse({"status": "ok", "enabled": enabled})

    async def on_reject(request: Request, exc: Exception) -> Response:
        if isinstance(exc, SignatureError):
            log.warning("rejected %s: %s", request.url.path.split("/unsubscribe/")[0], exc)
            return _error(403, str(exc))
        if isinstance(exc, _Reject):
            response = _error(exc.status, exc.message)
            if exc.status == 413:
                # The rest of the upload is not wanted: the server closes the connection after this answer
                # instead of reading (and discarding) hundreds of megabytes to keep it alive.
                response.headers["Connection"] = "close"
            return response
        if isinstance(exc, DataError):
            return _error(400, str(exc))
        if isinstance(exc, LedgerError):
            log.error("ledger error: %s", exc)
            return _error(503, "ledger unavailable, retry later")
        raise exc

    routes = [
        Route("/webhooks/sendgrid", sendgrid, methods=["POST"]),
        Route("/webhooks/twilio", twilio, methods=["POST"]),
        Route("/webhooks/mailgun", mailgun, methods=["POST"]),
        Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    handlers = {cls: on_reject for cls in (SignatureError, _Reject, DataError, LedgerError)}
    return Starlette(routes=routes, exception_handlers=handlers)


class _Reject(Exception):
    """An HTTP error answer from inside a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Reject(400, "body is not JSON") from None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# -- the unsubscribe page -----------------------------------------------------------------------------

_TEXT = {
    "zh-CN": {
        "title": "退订",
        "confirm": "确认后，您将不再收到我们通过{channel}发送的营销信息。",
        "button": "确认退订",
        "done": "您已成功退订，今后不会再通过{channel}收到我们的营销信息。",
        "invalid": "此退订链接无效或已被修改。请使用邮件或短信中的原始链接。",
        "channels": {"email": "邮件", "sms": "短信", "webhook": "消息推送", "call_task": "电话"},
    },
    "en": {
        "title": "Unsubscribe",
        "confirm": "After you confirm, you will no longer receive marketing messages from us by {channel}.",
        "button": "Unsubscribe",
        "done": "You are unsubscribed: you will no longer receive marketing messages from us by {channel}.",
        "invalid": "This unsubscribe link is not valid or has been altered. Please use the original link "
                   "from your message.",
        "channels": {"email": "email", "sms": "text message", "webhook": "app notification",
                     "call_task": "phone"},
    },
}


def _language(request: Request, row: dict[str, Any] | None) -> str:
    """zh-CN or en: `?lang=`, else the customer's locale in the ledger, else Accept-Language."""
    asked = request.query_params.get("lang") or ""
    if asked:
        return "zh-CN" if asked.lower().startswith("zh") else "en"
    if row and row.get("locale"):
        return "zh-CN" if str(row["locale"]).lower().startswith("zh") else "en"
    accept = request.headers.get("accept-language", "").lower()
    return "zh-CN" if accept.startswith("zh") else "en"


def _page(lang: str, kind: str, *, channel: str | None = None, status: int = 200) -> HTMLResponse:
    text = _TEXT[lang]
    channel_name = text["channels"].get(channel or "", channel or "")
    message = html.escape(text[kind].format(channel=channel_name))
    form = ""
    if kind == "confirm":
        # The form posts the RFC 8058 body itself, so the page and mail clients share one code path.
        form = (
            '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            f'<button type="submit">{html.escape(text["button"])}</button></form>'
        )
    body = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(text['title'])}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}"
        "button{font-size:1rem;padding:.6rem 1.2rem}</style></head>"
        f"<body><h1>{html.escape(text['title'])}</h1><p>{message}</p>{form}</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_NO_STORE)
