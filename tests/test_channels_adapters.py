"""Provider adapters: request shapes and answer mapping through httpx.MockTransport, SMTP against a real
aiosmtpd server, Retry-After parsing, unsubscribe headers, call lists, provider config, secrets hygiene."""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import logging
import urllib.parse
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from winback.channels.base import (
    OutboundMessage,
    parse_retry_after,
    result_from_transport_error,
    split_key,
    unsubscribe_headers,
)
from winback.channels.call_task import CallTaskChannel
from winback.channels.mailgun import MailgunChannel
from winback.channels.providers import Router, load_provider_config, provider_config_for_emulator
from winback.channels.sendgrid import SendGridChannel
from winback.channels.smtp import SmtpChannel
from winback.channels.twilio import TwilioChannel
from winback.channels.webhook import WebhookChannel, verify
from winback.clock import FrozenClock
from winback.errors import ConfigError

API_KEY = "SG.super-secret-value-123"
UNSUB = unsubscribe_headers("https://ev.example.com/unsubscribe/tok", "mailto:u@example.com?subject=unsubscribe")


def email(key: str = "spring:C1:1", **kw) -> OutboundMessage:
    base = dict(key=key, channel="email", to="ann@example.com", from_="club@example.com", subject="We miss you",
                html="<p>Hi</p>", text="Hi", headers=UNSUB, metadata={"campaign_id": "spring"}, from_name="Club")
    base.update(kw)
    return OutboundMessage(**base)


def run(coro):
    return asyncio.run(coro)


def client_for(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


# -- Retry-After ----------------------------------------------------------------------------------------

def test_retry_after_seconds_date_and_garbage():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 0.5 ", now=now) == 0.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now=now) == 0.0  # in the past
    assert parse_retry_after("-5", now=now) == 0.0
    assert parse_retry_after("99999999", now=now) == 99999999.0  # not capped: the engine stops waiting above its cap
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None, now=now) is None
    assert parse_retry_after("nan", now=now) is None


def test_unsubscribe_headers_follow_rfc_8058():
    assert UNSUB["List-Unsubscribe"] == ("<https://ev.example.com/unsubscribe/tok>, "
                                         "<mailto:u@example.com?subject=unsubscribe>")
    assert UNSUB["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # one-click needs an https target; a mailto alone gets no Post header
    assert "List-Unsubscribe-Post" not in unsubscribe_headers(None, "u@example.com")
    assert split_key("camp:aign:C1:2") == ("camp:aign", "C1", 2)


# -- SendGrid -------------------------------------------------------------------------------------------

def test_sendgrid_request_shape_and_accept():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["method"], seen["url"] = request.method, str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(202, headers={"X-Message-Id": "abc123"})

    async def go():
        async with client_for(handler) as client:
            ch = SendGridChannel(client, SecretStr(API_KEY), base_url="https://sg.test/")
            return await ch.send([email()])

    [result] = run(go())
    assert result.status == "accepted" and result.provider_message_id == "abc123" and result.provider == "sendgrid"
    assert seen["method"] == "POST" and seen["url"] == "https://sg.test/v3/mail/send"
    assert seen["auth"] == f"Bearer {API_KEY}"
    body = seen["body"]
    assert body["personalizations"] == [{"to": [{"email": "ann@example.com"}],
                                         "custom_args": {"winback_key": "spring:C1:1", "campaign_id": "spring"}}]
    assert body["from"] == {"email": "club@example.com", "name": "Club"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]  # plain first, as SendGrid requires
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(
    ("status", "headers", "expect", "ambiguous", "retry_after"),
    [
        (429, {"Retry-After": "3"}, "retryable", False, 3.0),
        (503, {}, "retryable", False, None),
        (500, {}, "retryable", True, None),
        (400, {}, "permanent", False, None),
        (401, {}, "permanent", False, None),
    ],
)
def test_sendgrid_error_mapping(status, headers, expect, ambiguous, retry_after):
    def handler(request):
        return httpx.Response(status, headers=headers, json={"errors": [{"message": "nope", "field": "x"}]})

    async def go():
        async with client_for(handler) as client:
            return await SendGridChannel(client, SecretStr(API_KEY)).send([email()])

    [r] = run(go())
    assert (r.status, r.ambiguous, r.retry_after) == (expect, ambiguous, retry_after)
    assert r.reason.startswith(("http_", "auth_rejected"))


def test_transport_errors_are_retryable_and_ambiguity_is_kept():
    request = httpx.Request("POST", "https://x.test")
    assert not result_from_transport_error("k", "p", httpx.ConnectError("refused", request=request)).ambiguous
    for exc in (httpx.ReadTimeout("t", request=request), httpx.RemoteProtocolError("closed", request=request),
                httpx.ConnectTimeout("t", request=request)):
        r = result_from_transport_error("k", "p", exc)
        assert r.status == "retryable" and r.ambiguous


def test_sendgrid_lookup_by_unique_args():
    def handler(request):
        query = request.url.params["query"]
        assert query == "unique_args['winback_key']=\"spring:C1:1\""
        if "C1" in query:
            return httpx.Response(200, json={"messages": [{"msg_id": "m1.filter", "to_email": "a@x"}]})
        return httpx.Response(200, json={"messages": []})

    async def go():
        async with client_for(handler) as client:
            return await SendGridChannel(client, SecretStr(API_KEY)).lookup("spring:C1:1")

    found = run(go())
    assert found.status == "found" and found.provider_message_id == "m1.filter"

    async def no_activity():
        async with client_for(lambda r: httpx.Response(403, json={"errors": []})) as client:
            return await SendGridChannel(client, SecretStr(API_KEY)).lookup("k:1:1")

    assert run(no_activity()).status == "unknown"


# -- Mailgun --------------------------------------------------------------------------------------------

def test_mailgun_request_shape():
    seen = {}

    def handler(request):
        seen["url"] = str(request.url)
        seen["auth"] = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        seen["ctype"] = request.headers["content-type"]
        seen["form"] = dict(urllib.parse.parse_qsl(request.content.decode()))
        return httpx.Response(200, json={"id": "<20261123.abc@mg.test>", "message": "Queued. Thank you."})

    async def go():
        async with client_for(handler) as client:
            return await MailgunChannel(client, SecretStr("key-xyz"), "mg.test", base_url="https://mg.api").send(
                [email(from_name="示例俱乐部")])

    [r] = run(go())
    assert r.status == "accepted" and r.provider_message_id == "20261123.abc@mg.test"
    assert seen["url"] == "https://mg.api/v3/mg.test/messages"
    assert seen["auth"] == "api:key-xyz"
    assert seen["ctype"] == "application/x-www-form-urlencoded"
    form = seen["form"]
    assert form["v:winback_key"] == "spring:C1:1" and form["to"] == "ann@example.com"
    assert form["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert form["h:List-Unsubscribe"].startswith("<https://")
    assert form["from"].endswith("<club@example.com>") and form["text"] == "Hi" and form["html"] == "<p>Hi</p>"


def test_mailgun_lookup_uses_documented_filters_and_matches_the_key_client_side():
    claimed = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    seen = []

    def handler(request):
        params = dict(request.url.params)
        seen.append(params)
        assert request.url.path == "/v3/mg.test/events"
        # As the Events API documents it: a time range and documented filter fields only.
        assert params == {"event": "accepted", "recipient": "ann@example.com", "limit": "300", "ascending": "yes",
                          "begin": str(int(claimed.timestamp()) - 15 * 60)}
        items = [{"event": "accepted", "recipient": "ann@example.com", "user-variables": {"winback_key": k},
                  "message": {"headers": {"message-id": f"{k}@mg.test"}}} for k in ("spring:C0:1", "spring:C9:1")]
        return httpx.Response(200, json={"items": items, "paging": {}})

    async def go(key):
        async with client_for(handler) as client:
            channel = MailgunChannel(client, SecretStr("k"), "mg.test", clock=FrozenClock("2026-11-25T00:00Z"))
            return await channel.lookup(key, email(key, claimed_at=claimed))

    assert run(go("spring:C9:1")).provider_message_id == "spring:C9:1@mg.test"
    assert run(go("spring:C8:1")).status == "not_found"
    assert "user-variables" not in seen[0]


def test_mailgun_lookup_without_a_claim_time_searches_back_from_now():
    def handler(request):
        assert dict(request.url.params) == {"event": "accepted", "limit": "300", "ascending": "no"}
        return httpx.Response(200, json={"items": [], "paging": {"next": f"{request.url}/WzEsMl0"}})

    async def go():
        async with client_for(handler) as client:
            return await MailgunChannel(client, SecretStr("k"), "mg.test").lookup("spring:C1:1")

    assert run(go()).status == "not_found"  # an empty page ends the range


def test_mailgun_lookup_follows_paging_next_a_bounded_number_of_pages():
    asked = []

    def handler(request):
        asked.append(str(request.url))
        page = int(request.url.path.rsplit("/", 1)[-1]) if request.url.path.count("/") == 4 else 0
        item = {"event": "accepted", "user-variables": {"winback_key": f"spring:P{page}:1"},
                "message": {"headers": {"message-id": f"p{page}@mg.test"}}}
        return httpx.Response(200, json={"items": [item],
                                         "paging": {"next": f"https://api.mailgun.net/v3/mg.test/events/{page + 1}"}})

    async def go(key, base="https://api.mailgun.net"):
        async with client_for(handler) as client:
            return await MailgunChannel(client, SecretStr("k"), "mg.test", base_url=base).lookup(key)

    found = run(go("spring:P3:1"))
    assert found.status == "found" and found.provider_message_id == "p3@mg.test"
    assert asked[1] == "https://api.mailgun.net/v3/mg.test/events/1"  # the next URL as given, its query intact
    asked.clear()
    assert run(go("spring:P99:1")).status == "unknown"  # never an empty page within the bound: cannot say
    assert len(asked) == 5
    # A next URL on another host is not followed (it would receive our API key).
    assert run(go("spring:P3:1", base="https://mg.proxy.example")).status == "unknown"


# -- Twilio ---------------------------------------------------------------------------------------------

SID = "AC" + "1" * 32
MESSAGE_SID = "SM" + "0123456789abcdef" * 2


def sms(to="+8613800000001", key="spring:C2:1") -> OutboundMessage:
    return OutboundMessage(key=key, channel="sms", to=to, from_="+15005550006", text="【Club】code WB1")


def test_twilio_request_shape_and_created():
    seen = {}

    def handler(request):
        seen["url"] = str(request.url)
        seen["auth"] = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        seen["form"] = dict(urllib.parse.parse_qsl(request.content.decode()))
        return httpx.Response(201, json={"sid": MESSAGE_SID, "status": "queued"})

    async def go():
        async with client_for(handler) as client:
            ch = TwilioChannel(client, SID, SecretStr("tok"), base_url="https://tw.test",
                               status_callback="https://ev.example.com/webhooks/twilio")
            return await ch.send([sms()])

    [r] = run(go())
    assert r.status == "accepted" and r.provider_message_id == MESSAGE_SID
    assert seen["url"] == f"https://tw.test/2010-04-01/Accounts/{SID}/Messages.json"
    assert seen["auth"] == f"{SID}:tok"
    assert seen["form"]["To"] == "+8613800000001" and seen["form"]["From"] == "+15005550006"
    assert seen["form"]["Body"] == "【Club】code WB1"
    assert seen["form"]["StatusCallback"] == "https://ev.example.com/webhooks/twilio?winback_key=spring%3AC2%3A1"


@pytest.mark.parametrize(
    ("status", "code", "expect", "suppress"),
    [
        (400, 21610, "permanent", "unsubscribed"),
        (400, 21211, "permanent", "invalid_address"),
        (400, 21614, "permanent", "invalid_address"),
        (429, 20429, "retryable", None),
        (400, 21602, "permanent", None),
        (503, None, "retryable", None),
    ],
)
def test_twilio_error_codes(status, code, expect, suppress):
    def handler(request):
        return httpx.Response(status, json={"code": code, "message": "m", "status": status})

    async def go():
        async with client_for(handler) as client:
            return await TwilioChannel(client, SID, SecretStr("tok")).send([sms()])

    [r] = run(go())
    assert r.status == expect and r.suppress == suppress
    if code:
        assert f"twilio_{code}" in r.reason


def test_twilio_lookup_matches_recipient_and_body():
    def handler(request):
        assert request.url.params["To"] == "+8613800000001" and request.url.params["PageSize"] == "100"
        assert not any(k.startswith("DateSent") for k in request.url.params)  # no claim time: no date filter
        return httpx.Response(200, json={"messages": [{"sid": "SM9", "to": "+8613800000001",
                                                       "body": "【Club】code WB1"}], "next_page_uri": None})

    async def go(message):
        async with client_for(handler) as client:
            return await TwilioChannel(client, SID, SecretStr("tok")).lookup("spring:C2:1", message)

    assert run(go(sms())).provider_message_id == "SM9"
    assert run(go(None)).status == "unknown"  # cannot search by our key alone
    other = OutboundMessage(key="spring:C2:1", channel="sms", to="+8613800000001", from_="x", text="other text")
    assert run(go(other)).status == "not_found"


def test_twilio_lookup_days_after_the_crash_is_bounded_by_the_claim_not_by_now():
    """Reconciled three days after the claim: the search still reaches back to the day before the claim."""
    claimed = datetime(2026, 11, 23, 0, 30, tzinfo=UTC)
    sent_on = claimed.date()
    seen = {}

    def handler(request):
        seen["raw_query"] = request.url.query.decode()
        since = datetime.fromisoformat(request.url.params["DateSent>"]).date()
        # Twilio: DateSent>=YYYY-MM-DD, GMT dates, inclusive.
        messages = [{"sid": "SM7", "to": "+8613800000001", "body": "【Club】code WB1"}] if sent_on >= since else []
        return httpx.Response(200, json={"messages": messages, "next_page_uri": None})

    async def go(now):
        async with client_for(handler) as client:
            channel = TwilioChannel(client, SID, SecretStr("tok"), clock=FrozenClock(now))
            message = OutboundMessage(key="spring:C2:1", channel="sms", to="+8613800000001", from_="+15005550006",
                                      text="【Club】code WB1", claimed_at=claimed)
            return await channel.lookup("spring:C2:1", message)

    found = run(go("2026-11-26T09:00Z"))
    assert found.status == "found" and found.provider_message_id == "SM7"
    assert "DateSent%3E=2026-11-22" in seen["raw_query"]  # the claim's GMT date minus one day, as `DateSent>=`


def test_twilio_lookup_leaves_a_business_time_claim_unbounded_and_follows_pages():
    pages = []

    def handler(request):
        pages.append(request.url)
        assert not any(k.startswith("DateSent") for k in request.url.params)
        page = int(request.url.params.get("Page", 0))
        body = "【Club】code WB1" if page == 2 else "another campaign"
        nxt = f"/2010-04-01/Accounts/{SID}/Messages.json?To=%2B8613800000001&PageSize=100&Page={page + 1}"
        return httpx.Response(200, json={"messages": [{"sid": f"SM{page}", "to": "+8613800000001", "body": body}],
                                         "next_page_uri": nxt})

    async def go():
        async with client_for(handler) as client:
            # A claim stamped after the real time is a run's business time (`--now` ahead of the date).
            channel = TwilioChannel(client, SID, SecretStr("tok"), base_url="https://tw.test",
                                    clock=FrozenClock("2026-11-01T00:00Z"))
            message = OutboundMessage(key="spring:C2:1", channel="sms", to="+8613800000001", from_="x",
                                      text="【Club】code WB1", claimed_at=datetime(2026, 12, 24, tzinfo=UTC))
            return await channel.lookup("spring:C2:1", message)

    found = run(go())
    assert found.provider_message_id == "SM2" and len(pages) == 3
    assert str(pages[1]).startswith("https://tw.test/2010-04-01/")


# -- webhook --------------------------------------------------------------------------------------------

def test_webhook_signature_and_idempotency_key():
    seen = {}

    def handler(request):
        seen["headers"] = dict(request.headers)
        seen["body"] = request.content
        return httpx.Response(200, json={"id": "push-1"})

    async def go():
        async with client_for(handler) as client:
            ch = WebhookChannel(client, "https://gw.test/hooks/wechat", SecretStr("whsec"),
                                clock=FrozenClock("2026-11-23T10:00:00Z"))
            msg = OutboundMessage(key="spring:C3:1", channel="webhook", to="openid-3", from_="club", text="你好")
            return await ch.send([msg])

    [r] = run(go())
    assert r.status == "accepted" and r.provider_message_id == "push-1"
    h = seen["headers"]
    assert h["idempotency-key"] == "spring:C3:1"
    assert h["x-winback-timestamp"] == str(int(datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()))  # the clock's
    assert verify("whsec", h["x-winback-timestamp"], seen["body"], h["x-winback-signature"])
    assert not verify("other", h["x-winback-timestamp"], seen["body"], h["x-winback-signature"])
    assert json.loads(seen["body"])["text"] == "你好"


def test_webhook_409_means_already_accepted_and_lookup():
    async def go():
        async with client_for(lambda r: httpx.Response(409, json={"error": "duplicate"})) as client:
            ch = WebhookChannel(client, "https://gw.test/h", SecretStr("s"), lookup_url="https://gw.test/d/{key}")
            return await ch.send([OutboundMessage(key="a:b:1", channel="webhook", to="x", from_="y", text="t")])

    assert run(go())[0].status == "accepted"

    def lookup_handler(request):
        assert request.url.raw_path == b"/d/a%3Ab%3A1"
        return httpx.Response(404)

    async def look():
        async with client_for(lookup_handler) as client:
            ch = WebhookChannel(client, "https://gw.test/h", SecretStr("s"), lookup_url="https://gw.test/d/{key}")
            return await ch.lookup("a:b:1")

    assert run(look()).status == "not_found"


# -- call tasks -----------------------------------------------------------------------------------------

def test_call_task_lists_are_idempotent_and_excel_friendly(tmp_path):
    ch = CallTaskChannel(tmp_path)
    msgs = [OutboundMessage(key=f"spring:C{i}:1", channel="call_task", to="王经理" if i % 2 else "Alice/Smith",
                            from_="", text=f"致电客户{i}", metadata={"customer_name": f"李{i}", "phone": "+8613800000000"})
            for i in range(4)]
    first = run(ch.send(msgs))
    again = run(CallTaskChannel(tmp_path).send(msgs[:2]))  # a retry after a crash: no duplicate rows
    assert all(r.status == "accepted" for r in first + again)
    wang = tmp_path / "spring" / "王经理.csv"
    alice = tmp_path / "spring" / "Alice_Smith.csv"  # path separators never reach the file system
    assert wang.read_bytes().startswith(b"\xef\xbb\xbf")
    with wang.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["customer_id"] for r in rows] == ["C1", "C3"] and rows[0]["customer_name"] == "李1"
    assert alice.exists()
    assert run(CallTaskChannel(tmp_path).lookup("spring:C3:1")).status == "found"
    assert run(CallTaskChannel(tmp_path).lookup("spring:C9:1")).status == "not_found"


# -- SMTP against a real aiosmtpd server ------------------------------------------------------------------

class _Recorder:
    def __init__(self, refuse=()):
        self.messages = []
        self.raw = []
        self.refuse = set(refuse)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.raw.append(envelope.content)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


def _smtp_server(recorder):
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port


def test_smtp_against_real_aiosmtpd(tmp_path):
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recorder = _Recorder(refuse={"nobody@example.com"})
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        ch = SmtpChannel("127.0.0.1", port, start_tls=False, message_id_domain="club.example.com")
        results = run(ch.send([email(subject="小明，好久不见"), email(key="spring:C2:1", to="nobody@example.com")]))
    finally:
        controller.stop()
    ok, refused = results
    assert ok.status == "accepted" and ok.provider_message_id.endswith("@club.example.com>")
    assert refused.status == "permanent" and refused.suppress == "invalid_address" and "smtp_550" in refused.reason
    [mail] = recorder.messages
    from email.header import decode_header, make_header

    assert str(make_header(decode_header(mail["Subject"]))) == "小明，好久不见"
    assert mail["X-Winback-Key"] == "spring:C1:1"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<https://ev.example.com/unsubscribe/tok>" in mail["List-Unsubscribe"]
    assert mail.is_multipart() and {p.get_content_type() for p in mail.walk()} >= {"text/plain", "text/html"}
    assert run(ch.lookup("spring:C1:1")).status == "unknown"  # plain SMTP cannot tell


def test_smtp_list_unsubscribe_goes_out_as_plain_ascii_for_one_click():
    """A ~290-character one-click URL is written literally (RFC 8058), not as RFC 2047 encoded words."""
    from email.parser import BytesParser
    from email.policy import default as default_policy

    from winback.render import make_unsubscribe_token, unsubscribe_url

    token = make_unsubscribe_token("spring-2026-winback-" + "long-campaign-name-" * 6, "C0000001", "email", "s3cret")
    url = unsubscribe_url("https://events.example.com", token)
    assert 250 <= len(url) <= 330, len(url)
    headers = unsubscribe_headers(url, "mailto:unsubscribe@example.com?subject=unsubscribe%20tok")
    recorder = _Recorder()
    controller, port = _smtp_server(recorder)
    try:
        [r] = run(SmtpChannel("127.0.0.1", port, start_tls=False, clock=FrozenClock("2026-11-23T10:00:00Z")).send(
            [email(headers=headers)]))
    finally:
        controller.stop()
    assert r.status == "accepted"
    [raw] = recorder.raw
    assert b"=?utf-8?" not in raw.lower()  # every header here is ASCII: nothing may be encoded
    unfolded = raw.replace(b"\r\n ", b" ")
    assert f"List-Unsubscribe: <{url}>, <mailto:".encode() in unfolded
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    mail = BytesParser(policy=default_policy).parsebytes(raw)
    assert f"<{url}>" in mail["List-Unsubscribe"]
    assert mail["List-Unsubscribe"] == headers["List-Unsubscribe"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Date"].datetime == datetime(2026, 11, 23, 10, tzinfo=UTC)  # from the injected clock


def test_smtp_connection_refused_is_retryable_not_ambiguous():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [r] = run(SmtpChannel("127.0.0.1", port, timeout=2).send([email()]))
    assert r.status == "retryable" and not r.ambiguous


# -- configuration and secrets ---------------------------------------------------------------------------

def test_provider_config_yaml_rejects_inline_secrets_and_names_fields(tmp_path):
    good = tmp_path / "providers.yaml"
    good.write_text("email: mailgun\nsender_email: club@example.com\nmailgun:\n  domain: mg.example.com\n"
                    "rate_limits: {mailgun: 100}\n", encoding="utf-8")
    config = load_provider_config(good)
    assert config.email == "mailgun" and config.mailgun.domain == "mg.example.com"
    bad = tmp_path / "secret.yaml"
    bad.write_text("sendgrid:\n  api_key: SG.should-not-be-here\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_provider_config(bad)
    assert "sendgrid.api_key" in str(err.value) and "SG.should" not in str(err.value)
    typo = tmp_path / "typo.yaml"
    typo.write_text("emial: sendgrid\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="emial"):
        load_provider_config(typo)


def test_missing_secret_is_a_config_error(monkeypatch):
    monkeypatch.delenv("WINBACK_SENDGRID_API_KEY", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    config = load_provider_config.__globals__["ProviderConfig"]()

    async def go():
        async with Router(config) as router:
            router.channel_for("email")

    with pytest.raises(ConfigError, match="WINBACK_SENDGRID_API_KEY"):
        run(go())


def test_secrets_never_in_reprs_errors_or_logs(monkeypatch, caplog):
    monkeypatch.setenv("WINBACK_SENDGRID_API_KEY", API_KEY)
    caplog.set_level(logging.DEBUG)

    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    async def go():
        async with client_for(handler) as client:
            config = load_provider_config.__globals__["ProviderConfig"]()
            router = Router(config, client)
            ch = router.channel_for("email")
            return ch, router, await ch.send([email()]), await ch.lookup("spring:C1:1")

    ch, router, [result], lookup = run(go())
    texts = [repr(ch), str(ch), repr(router), repr(result), repr(lookup), result.reason or "", caplog.text,
             repr(provider_config_for_emulator("http://127.0.0.1:1")),
             provider_config_for_emulator("http://127.0.0.1:1").model_dump_json()]
    for text in texts:
        assert API_KEY not in text
        assert "emulator-key" not in text  # the emulator's key is a secret field too: excluded from dumps
    assert result.status == "retryable"
