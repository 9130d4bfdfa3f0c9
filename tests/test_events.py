"""The events server: provider webhooks with genuine and forged signatures, and one-click unsubscribe.

Genuine signatures are produced the providers' way — SendGrid with a P-256 key we generate (and
checked by SendGrid's own `EventWebhook` helper), Twilio by Twilio's own `RequestValidator`,
Mailgun by the documented HMAC — and the ledger is real (SQLite file, and PostgreSQL where marked).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pandas as pd
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.clock import FrozenClock
from winback.events import create_app, twilio_signature
from winback.events.replay import remember_token
from winback.ledger import Ledger, Outcome
from winback.render.tokens import make_unsubscribe_token

REPO = Path(__file__).resolve().parents[1]
NOW = pd.Timestamp("2026-11-23 10:00", tz="UTC")
CLOCK = NOW.timestamp()
TWILIO_TOKEN = "twilio-auth-token-for-tests"
MAILGUN_KEY = "key-mailgun-signing-for-tests"
UNSUB_SECRET = "unsubscribe-secret-for-tests"
PUBLIC_URL = "https://events.example.cn"


# -- fixtures --------------------------------------------------------------------------------------


class AsgiClient:
    """A small sync client driving the ASGI app in-process through httpx's ASGITransport."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture(scope="module")
def sendgrid_keys():
    """A P-256 key pair like SendGrid's: (private key, public key as base64 DER — what SendGrid shows)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode("ascii")


def sent_plan(ledger: Ledger) -> None:
    """Three customers: an email (SendGrid), an email (Mailgun) and an SMS (Twilio), all sent."""
    plan = pd.DataFrame(
        {
            "campaign_id": "spring",
            "customer_id": ["c1", "c2", "c3"],
            "step": 1,
            "arm": "treatment",
            "channel": ["email", "email", "sms"],
            "to_address": ["c1@example.cn", "c2@example.com", "+8613800000003"],
            "send_at_utc": NOW - pd.Timedelta(hours=1),
            "locale": ["zh-CN", "en-US", "zh-CN"],
        }
    )
    ledger.plan(plan)
    batch = ledger.claim(now=NOW, limit=10)
    ledger.record(
        [
            Outcome("spring", "c1", 1, "sent", "sendgrid", "sgmsg1"),
            Outcome("spring", "c2", 1, "sent", "mailgun", "20261123.abc@mg.example.com"),
            Outcome("spring", "c3", 1, "sent", "twilio", "SM0000000000000000000000000000003"),
        ],
        claim_token=batch.attrs["claim_token"],
        now=NOW,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "postgres_schema")
    with Ledger(url) as led:
        sent_plan(led)
        yield led


@pytest.fixture()
def sqlite_ledger(tmp_path):
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as led:
        sent_plan(led)
        yield led


def make_client(ledger, sendgrid_keys, **overrides) -> AsgiClient:
    options = {
        "sendgrid_public_key": sendgrid_keys[1],
        "mailgun_signing_key": MAILGUN_KEY,
        "twilio_auth_token": TWILIO_TOKEN,
        "unsubscribe_secret": UNSUB_SECRET,
        "public_url": PUBLIC_URL,
        "clock": FrozenClock(NOW),
    }
    options.update(overrides)
    return AsgiClient(create_app(ledger, **options))


def status_of(ledger: Ledger) -> dict[str, str | None]:
    rows = ledger.rows("spring")
    return {c: (None if pd.isna(s) else s) for c, s in zip(rows["customer_id"], rows["delivery_status"], strict=True)}


# -- SendGrid --------------------------------------------------------------------------------------


def sendgrid_body(*events: dict) -> bytes:
    return json.dumps(list(events), separators=(",", ":")).encode("utf-8")


def sign_sendgrid(private, body: bytes, timestamp: str) -> str:
    signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def sg_event(event: str, event_id: str, **extra) -> dict:
    base = {"email": "c1@example.cn", "timestamp": int(CLOCK) - 30, "event": event, "sg_event_id": event_id,
            "sg_message_id": "sgmsg1.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC6AD-4.0",
            "winback_key": "spring:c1:1", "campaign_id": "spring", "customer_id": "c1", "step": "1"}
    base.update(extra)
    return base


def test_sendgrid_genuine_events_update_the_ledger(ledger, sendgrid_keys):
    from sendgrid.helpers.eventwebhook import EventWebhook

    private, public_b64 = sendgrid_keys
    body = sendgrid_body(sg_event("processed", "e0"), sg_event("delivered", "e1"), sg_event("click", "e2"),
                         sg_event("bounce", "e3", email="c1@example.cn", type="bounce"))
    ts = str(int(CLOCK))
    signature = sign_sendgrid(private, body, ts)
    # Cross-check: SendGrid's own helper accepts what we sign.
    helper = EventWebhook()
    assert helper.verify_signature(body.decode(), signature, ts, helper.convert_public_key_to_ecdsa(public_b64))
    client = make_client(ledger, sendgrid_keys)
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": ts,
               "Content-Type": "application/json"}
    response = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 4, "new": 4}
    assert status_of(ledger)["c1"] == "bounced"
    sup = ledger.suppressions()
    assert sup[["customer_id", "channel", "address", "reason", "source"]].values.tolist() == [
        ["c1", "email", "c1@example.cn", "bounced", "sendgrid"]]
    events = ledger.events("spring")
    assert list(events["event"]) == ["processed", "delivered", "clicked", "bounced"]
    assert (events["provider_message_id"] == "sgmsg1").all()
    assert events["occurred_at"].iloc[0] == NOW - pd.Timedelta(seconds=30)
    # SendGrid retries deliveries, signed anew: the same batch again changes nothing.
    ts2 = str(int(CLOCK) + 1)
    again = client.post("/webhooks/sendgrid", content=body, headers={
        **headers, "X-Twilio-Email-Event-Webhook-Signature": sign_sendgrid(private, body, ts2),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts2})
    assert again.json() == {"received": 4, "new": 0}
    assert len(ledger.events()) == 4


def test_sendgrid_matches_by_message_id_when_custom_args_are_missing(sqlite_ledger, sendgrid_keys):
    private, _ = sendgrid_keys
    event = sg_event("spamreport", "e9")
    for name in ("winback_key", "campaign_id", "customer_id", "step"):
        event.pop(name)
    body = sendgrid_body(event)
    ts = str(int(CLOCK))
    response = make_client(sqlite_ledger, sendgrid_keys).post(
        "/webhooks/sendgrid", content=body,
        headers={"X-Twilio-Email-Event-Webhook-Signature": sign_sendgrid(private, body, ts),
                 "X-Twilio-Email-Event-Webhook-Timestamp": ts})
    assert response.status_code == 200
    assert status_of(sqlite_ledger)["c1"] == "complained"
    assert sqlite_ledger.suppressions()["reason"].tolist() == ["complained"]


@pytest.mark.parametrize("attack", ["other_key", "tampered_body", "stale", "future", "missing", "garbage"])
def test_sendgrid_forged_or_stale_signatures_are_rejected(sqlite_ledger, sendgrid_keys, attack):
    from sendgrid.helpers.eventwebhook import EventWebhook

    private, public_b64 = sendgrid_keys
    body = sendgrid_body(sg_event("unsubscribe", "e5"))
    ts = str(int(CLOCK))
    if attack == "other_key":
        signature = sign_sendgrid(ec.generate_private_key(ec.SECP256R1()), body, ts)
    elif attack == "tampered_body":
        signature = sign_sendgrid(private, body, ts)
        body = body.replace(b"c1", b"c2")
    elif attack in ("stale", "future"):
        ts = str(int(CLOCK) + (-301 if attack == "stale" else 301))
        signature = sign_sendgrid(private, body, ts)  # genuine, but outside the 5-minute window
    elif attack == "garbage":
        signature = "not-base64!!"
    else:
        signature = ""
    if attack in ("other_key", "tampered_body"):
        helper = EventWebhook()
        assert not helper.verify_signature(body.decode(), signature, ts,
                                           helper.convert_public_key_to_ecdsa(public_b64))
    headers = {"X-Twilio-Email-Event-Webhook-Timestamp": ts}
    if signature:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = signature
    response = make_client(sqlite_ledger, sendgrid_keys).post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 403
    assert sqlite_ledger.events().empty and sqlite_ledger.suppressions().empty
    assert status_of(sqlite_ledger)["c1"] is None


def test_sendgrid_signed_but_malformed_body_is_a_400(sqlite_ledger, sendgrid_keys):
    private, _ = sendgrid_keys
    ts = str(int(CLOCK))
    client = make_client(sqlite_ledger, sendgrid_keys)
    for body in (b"{not json", b'{"event": "delivered"}', b'[{"email": "x"}]'):
        response = client.post("/webhooks/sendgrid", content=body,
                               headers={"X-Twilio-Email-Event-Webhook-Signature": sign_sendgrid(private, body, ts),
                                        "X-Twilio-Email-Event-Webhook-Timestamp": ts})
        assert response.status_code == 400, body
    assert sqlite_ledger.events().empty


# -- Twilio ----------------------------------------------------------------------------------------


def twilio_form(status: str, error_code: str | None = None) -> dict[str, str]:
    form = {"MessageSid": "SM0000000000000000000000000000003", "SmsSid": "SM0000000000000000000000000000003",
            "AccountSid": "AC00000000000000000000000000000001", "MessageStatus": status, "SmsStatus": status,
            "To": "+8613800000003", "From": "+15005550006", "ApiVersion": "2010-04-01"}
    if error_code:
        form["ErrorCode"] = error_code
    return form


def test_twilio_genuine_callbacks_update_the_ledger(ledger, sendgrid_keys):
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TWILIO_TOKEN)
    client = make_client(ledger, sendgrid_keys)
    query = "?" + urlencode({"winback_key": "spring:c3:1"})
    url = f"{PUBLIC_URL}/webhooks/twilio{query}"  # as Twilio sees it, behind the public URL

    def post(form):
        signature = validator.compute_signature(url, form)
        return client.post(f"/webhooks/twilio{query}", data=form, headers={"X-Twilio-Signature": signature})

    assert post(twilio_form("sent")).status_code == 200
    assert post(twilio_form("delivered")).status_code == 200
    assert status_of(ledger)["c3"] == "delivered"
    assert ledger.suppressions().empty
    # A later STOP reply makes the carrier refuse: error 21610 → unsubscribed and suppressed.
    assert post(twilio_form("undelivered", "21610")).status_code == 200
    assert status_of(ledger)["c3"] == "unsubscribed"
    assert ledger.suppressions()[["customer_id", "channel", "address", "reason"]].values.tolist() == [
        ["c3", "sms", "+8613800000003", "unsubscribed"]]
    assert post(twilio_form("delivered")).status_code == 200  # replay: stored once
    assert list(ledger.events()["event"]) == ["sent", "delivered", "unsubscribed"]


def test_twilio_forged_signatures_are_rejected(sqlite_ledger, sendgrid_keys):
    from twilio.request_validator import RequestValidator

    client = make_client(sqlite_ledger, sendgrid_keys)
    form = twilio_form("undelivered", "21610")
    url = f"{PUBLIC_URL}/webhooks/twilio?winback_key=spring%3Ac3%3A1"
    forged = [
        RequestValidator("a-different-token").compute_signature(url, form),
        RequestValidator(TWILIO_TOKEN).compute_signature(url, {**form, "ErrorCode": "30003"}),  # body altered
        RequestValidator(TWILIO_TOKEN).compute_signature(f"{PUBLIC_URL}/elsewhere", form),
        None,
    ]
    for signature in forged:
        headers = {"X-Twilio-Signature": signature} if signature else {}
        response = client.post("/webhooks/twilio?winback_key=spring%3Ac3%3A1", data=form, headers=headers)
        assert response.status_code == 403
    assert sqlite_ledger.events().empty and sqlite_ledger.suppressions().empty


@settings(max_examples=60, deadline=None)
@given(
    url=st.sampled_from(["https://events.example.cn/webhooks/twilio", "https://x.cn:443/a?b=c&d=%E4%B8%AD",
                         "http://127.0.0.1:8030/webhooks/twilio?winback_key=a%3Ab%3A1"]),
    params=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=6),
)
def test_our_twilio_signature_matches_twilios_own(url, params):
    from twilio.request_validator import RequestValidator

    assert twilio_signature(TWILIO_TOKEN, url, params.items()) == RequestValidator(TWILIO_TOKEN).compute_signature(
        url, params)


# -- Mailgun ---------------------------------------------------------------------------------------


def mailgun_payload(event: str, event_id: str, *, severity: str | None = None, key: str = MAILGUN_KEY,
                    timestamp: int | None = None, recipient: str = "c2@example.com") -> dict:
    ts = str(timestamp if timestamp is not None else int(CLOCK))
    token = secrets.token_hex(25)  # Mailgun: a random 50-character string, new for every request
    # Mailgun's documented check: hex HMAC-SHA256 of timestamp + token with the webhook signing key.
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    data = {"event": event, "id": event_id, "timestamp": CLOCK - 10, "recipient": recipient,
            "message": {"headers": {"message-id": "20261123.abc@mg.example.com"}},
            "user-variables": {"winback_key": "spring:c2:1"}}
    if severity:
        data["severity"] = severity
    return {"signature": {"timestamp": ts, "token": token, "signature": signature}, "event-data": data}


def test_mailgun_genuine_events_update_the_ledger(ledger, sendgrid_keys):
    client = make_client(ledger, sendgrid_keys)
    assert client.post("/webhooks/mailgun", json=mailgun_payload("delivered", "m1")).status_code == 200
    assert status_of(ledger)["c2"] == "delivered"
    assert client.post("/webhooks/mailgun", json=mailgun_payload("failed", "m2", severity="temporary")).json()[
        "new"] == 1
    assert status_of(ledger)["c2"] == "delivered" and ledger.suppressions().empty
    assert client.post("/webhooks/mailgun", json=mailgun_payload("failed", "m3", severity="permanent")).status_code == 200
    assert status_of(ledger)["c2"] == "bounced"
    assert ledger.suppressions()[["customer_id", "reason", "source"]].values.tolist() == [["c2", "bounced", "mailgun"]]
    assert client.post("/webhooks/mailgun", json=mailgun_payload("complained", "m4")).status_code == 200
    assert status_of(ledger)["c2"] == "complained"
    assert client.post("/webhooks/mailgun", json=mailgun_payload("complained", "m4")).json()["new"] == 0


@pytest.mark.parametrize("attack", ["other_key", "stale", "altered_token", "no_signature"])
def test_mailgun_forged_or_stale_signatures_are_rejected(sqlite_ledger, sendgrid_keys, attack):
    if attack == "other_key":
        payload = mailgun_payload("unsubscribed", "m9", key="key-not-ours")
    elif attack == "stale":
        payload = mailgun_payload("unsubscribed", "m9", timestamp=int(CLOCK) - 3600)
    elif attack == "altered_token":
        payload = mailgun_payload("unsubscribed", "m9")
        payload["signature"]["token"] = "0" * 50
    else:
        payload = mailgun_payload("unsubscribed", "m9")
        del payload["signature"]
    response = make_client(sqlite_ledger, sendgrid_keys).post("/webhooks/mailgun", json=payload)
    assert response.status_code == 403
    assert sqlite_ledger.events().empty and sqlite_ledger.suppressions().empty


# -- replays --------------------------------------------------------------------------------------


def test_mailgun_replayed_request_is_refused_and_changes_nothing(ledger, sendgrid_keys):
    client = make_client(ledger, sendgrid_keys)
    payload = mailgun_payload("failed", "m7", severity="permanent")
    assert client.post("/webhooks/mailgun", json=payload).status_code == 200
    before = (ledger.events().copy(), ledger.suppressions().copy())
    again = client.post("/webhooks/mailgun", json=payload)
    # 406: Mailgun's documented "rejected, do not retry" answer.
    assert again.status_code == 406 and "replay" in again.json()["error"]
    assert len(ledger.events()) == len(before[0]) == 1
    assert len(ledger.suppressions()) == len(before[1]) == 1


def test_mailgun_replay_with_altered_event_data_is_refused(sqlite_ledger, sendgrid_keys):
    """Mailgun signs only timestamp + token: a captured signature fits any event data until its token is known."""
    client = make_client(sqlite_ledger, sendgrid_keys)
    genuine = mailgun_payload("delivered", "m8")
    assert client.post("/webhooks/mailgun", json=genuine).status_code == 200
    forged = mailgun_payload("complained", "m8-forged", recipient="nobody@example.org")
    forged["signature"] = genuine["signature"]
    forged["event-data"]["user-variables"] = {"winback_key": "spring:ghost:1"}
    response = client.post("/webhooks/mailgun", json=forged)
    assert response.status_code == 406
    assert sqlite_ledger.suppressions().empty
    assert sqlite_ledger.events()["event"].tolist() == ["delivered"]
    assert status_of(sqlite_ledger)["c2"] == "delivered"


def test_sendgrid_replayed_request_is_refused_even_with_the_twin_signature(ledger, sendgrid_keys):
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    private, _ = sendgrid_keys
    body = sendgrid_body(sg_event("spamreport", "e20"))
    ts = str(int(CLOCK) - 20)
    signature = sign_sendgrid(private, body, ts)
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": ts}
    client = make_client(ledger, sendgrid_keys)
    assert client.post("/webhooks/sendgrid", content=body, headers=headers).json() == {"received": 1, "new": 1}
    assert client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 409
    # ECDSA's (r, n - s) verifies as well as (r, s): a replay under that signature is the same request.
    r, s_ = decode_dss_signature(base64.b64decode(signature))
    twin = base64.b64encode(encode_dss_signature(r, _P256_ORDER - s_)).decode()
    twin_headers = {**headers, "X-Twilio-Email-Event-Webhook-Signature": twin}
    assert client.post("/webhooks/sendgrid", content=body, headers=twin_headers).status_code == 409
    # Altered data under the captured signature is a forgery, refused by the signature check.
    altered = body.replace(b"spamreport", b"unsubscribe")
    assert client.post("/webhooks/sendgrid", content=altered, headers=headers).status_code == 403
    assert len(ledger.events()) == 1 and ledger.suppressions()["reason"].tolist() == ["complained"]


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # n of NIST P-256 (FIPS 186-4)


def test_a_token_is_first_once_and_forgotten_after_it_expires(sqlite_ledger):
    from winback.ledger import schema

    expires = NOW + pd.Timedelta(seconds=300)
    assert remember_token(sqlite_ledger, "mailgun", "tok-1", expires, NOW) is True
    assert remember_token(sqlite_ledger, "mailgun", "tok-1", expires, NOW + pd.Timedelta(seconds=299)) is False
    assert remember_token(sqlite_ledger, "sendgrid", "tok-1", expires, NOW) is True  # per provider
    later = NOW + pd.Timedelta(seconds=400)
    assert remember_token(sqlite_ledger, "mailgun", "tok-2", later + pd.Timedelta(seconds=300), later) is True
    with sqlite_ledger.engine.connect() as conn:
        left = conn.execute(schema.webhook_tokens.select()).fetchall()
    assert [(row.provider, row.token) for row in left] == [("mailgun", "tok-2")]  # expired rows deleted


def test_a_replay_after_the_window_is_stale_not_new(sqlite_ledger, sendgrid_keys):
    """The token is forgotten only once its signature is too old to pass anyway."""
    clock = FrozenClock(NOW)
    client = make_client(sqlite_ledger, sendgrid_keys, clock=clock)
    payload = mailgun_payload("delivered", "m30")
    assert client.post("/webhooks/mailgun", json=payload).status_code == 200
    clock.advance(seconds=301)
    assert remember_token(sqlite_ledger, "mailgun", "other", clock.now() + pd.Timedelta(seconds=300), clock.now())
    assert client.post("/webhooks/mailgun", json=payload).status_code == 403
    assert len(sqlite_ledger.events()) == 1


# -- unsubscribe -----------------------------------------------------------------------------------


def test_unsubscribe_page_then_one_click(ledger, sendgrid_keys):
    client = make_client(ledger, sendgrid_keys)
    token = make_unsubscribe_token("spring", "c1", "email", UNSUB_SECRET)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert 'lang="zh-CN"' in page.text and "确认退订" in page.text  # c1's locale is zh-CN
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert page.headers["cache-control"] == "no-store"
    english = client.get(f"/unsubscribe/{token}?lang=en")
    assert "Unsubscribe</button>" in english.text
    assert ledger.suppressions().empty  # GET never changes anything (mail scanners prefetch links)
    # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click to the link.
    done = client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "已成功退订" in done.text
    assert ledger.suppressions()[["customer_id", "channel", "address", "reason", "source"]].values.tolist() == [
        ["c1", "email", "c1@example.cn", "unsubscribed", "winback"]]
    assert status_of(ledger)["c1"] == "unsubscribed"
    assert client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert len(ledger.suppressions()) == 1 and len(ledger.events()) == 1


def test_forged_unsubscribe_tokens_change_nothing(sqlite_ledger, sendgrid_keys):
    client = make_client(sqlite_ledger, sendgrid_keys)
    genuine = make_unsubscribe_token("spring", "c1", "email", UNSUB_SECRET)
    payload, signature = genuine.split(".")
    other = make_unsubscribe_token("spring", "c2", "email", UNSUB_SECRET).split(".")[0]
    forged = [
        make_unsubscribe_token("spring", "c1", "email", "someone-elses-secret"),
        f"{other}.{signature}",  # c2's payload with c1's signature
        f"{payload}.{signature[:-2]}AA",
        "garbage",
    ]
    for token in forged:
        assert client.get(f"/unsubscribe/{token}").status_code == 400
        response = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 400
        assert "not valid" in response.text
    # A genuine token without the one-click body does nothing either.
    assert client.post(f"/unsubscribe/{genuine}", data={"confirm": "yes"}).status_code == 400
    assert sqlite_ledger.suppressions().empty and sqlite_ledger.events().empty


def test_unknown_customer_unsubscribes_all_the_same(sqlite_ledger, sendgrid_keys):
    """A link from a message whose ledger is elsewhere still suppresses the person on that channel."""
    client = make_client(sqlite_ledger, sendgrid_keys)
    token = make_unsubscribe_token("autumn", "c77", "sms", UNSUB_SECRET)
    assert client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"},
                       headers={"Accept-Language": "en-GB"}).status_code == 200
    assert sqlite_ledger.suppressions()[["customer_id", "channel", "address"]].values.tolist() == [["c77", "sms", None]]


# -- configuration, health -------------------------------------------------------------------------


def test_unconfigured_endpoints_answer_503_and_health_reports(sqlite_ledger):
    client = AsgiClient(create_app(sqlite_ledger))
    assert client.post("/webhooks/sendgrid", content=b"[]").status_code == 503
    assert client.post("/webhooks/twilio", data={"MessageSid": "x"}).status_code == 503
    assert client.post("/webhooks/mailgun", json={}).status_code == 503
    assert client.get("/unsubscribe/abc.def").status_code == 503
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "enabled": {"sendgrid": False, "twilio": False, "mailgun": False,
                                                         "unsubscribe": False}}


def test_a_bad_sendgrid_key_is_a_config_error(sqlite_ledger):
    from winback.errors import ConfigError

    with pytest.raises(ConfigError, match="WINBACK_SENDGRID_WEBHOOK_PUBLIC_KEY"):
        create_app(sqlite_ledger, sendgrid_public_key="not a key")
    rsa_like = base64.b64encode(b"\x30\x03\x02\x01\x00").decode()
    with pytest.raises(ConfigError):
        create_app(sqlite_ledger, sendgrid_public_key=rsa_like)


# -- real HTTP -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 90  # `winback` imports every step package; slow on a busy machine
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def test_uvicorn_serves_the_app_over_real_http(sqlite_ledger, sendgrid_keys):
    import uvicorn

    port = free_port()
    app = create_app(sqlite_ledger, sendgrid_public_key=sendgrid_keys[1], unsubscribe_secret=UNSUB_SECRET)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http="httptools"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        private, _ = sendgrid_keys
        body = sendgrid_body(sg_event("delivered", "http-1", timestamp=int(time.time())))
        ts = str(int(time.time()))
        ok = httpx.post(f"{base}/webhooks/sendgrid", content=body,
                        headers={"X-Twilio-Email-Event-Webhook-Signature": sign_sendgrid(private, body, ts),
                                 "X-Twilio-Email-Event-Webhook-Timestamp": ts})
        assert ok.status_code == 200 and ok.json()["new"] == 1
        forged = httpx.post(f"{base}/webhooks/sendgrid", content=body.replace(b"delivered", b"spamreport"),
                            headers={"X-Twilio-Email-Event-Webhook-Signature": sign_sendgrid(private, body, ts),
                                     "X-Twilio-Email-Event-Webhook-Timestamp": ts})
        assert forged.status_code == 403
        token = make_unsubscribe_token("spring", "c2", "email", UNSUB_SECRET)
        one_click = httpx.post(f"{base}/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert one_click.status_code == 200
        bad = httpx.post(f"{base}/unsubscribe/{token[:-3]}xyz", content=b"List-Unsubscribe=One-Click")
        assert bad.status_code == 400
    finally:
        server.should_exit = True
        thread.join(10)
    assert status_of(sqlite_ledger) == {"c1": "delivered", "c2": "unsubscribed", "c3": None}
    assert sqlite_ledger.suppressions()["customer_id"].tolist() == ["c2"]


SERVE = """
import sys, typer
from winback.events.cli import register
app = typer.Typer()
app.callback()(lambda: None)
register(app)
app(prog_name="winback")
"""


def test_events_server_command_verifies_twilio_callbacks(tmp_path):
    from twilio.request_validator import RequestValidator

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with Ledger(url) as led:
        sent_plan(led)
    port = free_port()
    env = {**os.environ, "WINBACK_TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "WINBACK_UNSUBSCRIBE_SECRET": UNSUB_SECRET}
    for name in ("WINBACK_PUBLIC_URL", "WINBACK_SENDGRID_WEBHOOK_PUBLIC_KEY", "WINBACK_MAILGUN_SIGNING_KEY",
                 "PREFECT_API_URL"):
        env.pop(name, None)
    # Only this package's commands in the subprocess: `python -m winback.cli` would import every step
    # package's CLI first (slow on a busy machine); discovery itself is covered by the test below.
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "events-server", "--port", str(port), "--ledger", url],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        target = f"{base}/webhooks/twilio?winback_key=spring%3Ac3%3A1"
        form = twilio_form("undelivered", "30006")  # a landline: the number can never get SMS
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(target, form)
        assert httpx.post(target, data=form, headers={"X-Twilio-Signature": signature}).status_code == 200
        assert httpx.post(target, data=form, headers={"X-Twilio-Signature": signature[::-1]}).status_code == 403
        assert httpx.get(f"{base}/healthz").json()["enabled"]["twilio"] is True
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert TWILIO_TOKEN not in stderr and UNSUB_SECRET not in stderr
    with Ledger(url) as led:
        assert status_of(led)["c3"] == "bounced"
        assert led.suppressions()["reason"].tolist() == ["bounced"]


def test_events_server_command_rejects_a_bad_port(capsys):
    from winback.cli import main

    assert main(["events-server", "--port", "70000", "--ledger", "sqlite://"]) == 1
    assert "Error:" in capsys.readouterr().err
    assert main(["events-server", "--help"]) == 0
    assert "--ledger" in capsys.readouterr().out
