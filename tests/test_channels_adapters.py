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
    assert parse_retry_after("99999999", now=now) == 3600.0  # capped
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


def test_mailgun_lookup_by_user_variables():
    def handler(request):
        assert request.url.path == "/v3/mg.test/events"
        wanted = json.loads(request.url.params["user-variables"])
        items = [{"event": "accepted", "user-variables": {"winback_key": "spring:C9:1"},
                  "message": {"headers": {"message-id": "x@mg.test"}}}]
        return httpx.Response(200, json={"items": [i for i in items if i["user-variables"] == wanted],
                                         "paging": {}})

    async def go(key):
        async with client_for(handler) as client:
            return await MailgunChannel(client, SecretStr("k"), "mg.test").lookup(key)

    assert run(go("spring:C9:1")).provider_message_id == "x@mg.test"
    assert run(go("spring:C8:1")).status == "not_found"


# -- Twilio ---------------------------------------------------------------------------------------------

SID = "AC" + "1" * 32


def sms(to="+8613800000001", key="spring:C2:1") -> OutboundMessage:
    return OutboundMessage(key=key, channel="sms", to=to, from_="+15005550006", text="【Club】code WB1")


def test_twilio_request_shape_and_created():
    seen = {}

    def handler(request):
        seen["url"] = str(request.url)
        seen["auth"] = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        seen["form"] = dict(urllib.parse.parse_qsl(request.content.decode()))
        return httpx.Response(201, json={"sid": "SM123", "status": "queued"})

    async def go():
        async with client_for(handler) as client:
            ch = TwilioChannel(client, SID, SecretStr("tok"), base_url="https://tw.test",
                               status_callback="https://ev.example.com/webhooks/twilio")
            return await ch.send([sms()])

    [r] = run(go())
    assert r.status == "accepted" and r.provider_message_id == "SM123"
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
        assert request.url.params["To"] == "+8613800000001" and "DateSent>" in request.url.params
        return httpx.Response(200, json={"messages": [{"sid": "SM9", "to": "+8613800000001",
                                                       "body": "【Club】code WB1"}]})

    async def go(message):
        async with client_for(handler) as client:
            return await TwilioChannel(client, SID, SecretStr("tok")).lookup("spring:C2:1", message)

    assert run(go(sms())).provider_message_id == "SM9"
    assert run(go(None)).status == "unknown"  # cannot search by our key alone
    other = OutboundMessage(key="spring:C2:1", channel="sms", to="+8613800000001", from_="x", text="other text")
    assert run(go(other)).status == "not_found"


# -- webhook --------------------------------------------------------------------------------------------

def test_webhook_signature_and_idempotency_key():
    seen = {}

    def handler(request):
        seen["headers"] = dict(request.headers)
        seen["body"] = request.content
        return httpx.Response(200, json={"id": "push-1"})

    async def go():
        async with client_for(handler) as client:
            ch = WebhookChannel(client, "https://gw.test/hooks/wechat", SecretStr("whsec"))
            msg = OutboundMessage(key="spring:C3:1", channel="webhook", to="openid-3", from_="club", text="你好")
            return await ch.send([msg])

    [r] = run(go())
    assert r.status == "accepted" and r.provider_message_id == "push-1"
    h = seen["headers"]
    assert h["idempotency-key"] == "spring:C3:1"
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
        self.refuse = set(refuse)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


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
