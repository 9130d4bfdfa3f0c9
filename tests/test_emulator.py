"""The provider emulator over real HTTP on 127.0.0.1: every provider's shape through the real channels,
auth checks, faults (429 + Retry-After, 5xx, slow, dropped connections), lookups, stats and reset."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from winback.channels.base import OutboundMessage
from winback.channels.emulator import (
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    SENDGRID_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    EmulatorApp,
    EmulatorServer,
)
from winback.channels.mailgun import MailgunChannel
from winback.channels.providers import Router, provider_config_for_emulator
from winback.channels.sendgrid import SendGridChannel
from winback.channels.twilio import TwilioChannel
from winback.clock import FrozenClock, SystemClock


@pytest.fixture(scope="module")
def emu():
    with EmulatorServer(seed=7, slow_seconds=1.0) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    emu.set_faults(0.0, kinds=("429", "500", "503", "slow", "drop"))
    yield


def message(channel: str, key: str, to: str) -> OutboundMessage:
    return OutboundMessage(key=key, channel=channel, to=to, from_="club@example.com", subject="Hi 小明",
                           html="<p>Hi</p>", text="Hi 小明", headers={"List-Unsubscribe": "<https://x/u/t>"})


async def send_all(url, smtp_port, email_provider, items, **config):
    cfg = provider_config_for_emulator(url, smtp_port=smtp_port, email=email_provider, **config)
    async with Router(cfg) as router:
        out = []
        for channel, key, to in items:
            ch = router.channel_for(channel)
            m = message(channel, key, to)
            [result] = await ch.send([m])
            out.append((result, await ch.lookup(key, m)))
        return out


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun", "smtp"])
def test_every_email_provider_round_trips(emu, provider):
    [(result, found)] = asyncio.run(send_all(emu.url, emu.smtp_port, provider, [("email", "c:E1:1", "a@example.com")]))
    assert result.status == "accepted" and result.provider == provider
    assert found.status == "found"
    [stored] = emu.messages()
    expected = {"sendgrid": "sendgrid", "mailgun": "mailgun", "smtp": "smtp"}[provider]
    assert stored["provider"] == expected and stored["key"] == "c:E1:1" and stored["to"] == "a@example.com"
    assert "小明" in stored["subject"]
    assert any(k.lower() == "list-unsubscribe" for k in stored["headers"])


def test_sms_webhook_and_twilio_magic_numbers(emu):
    out = asyncio.run(send_all(emu.url, emu.smtp_port, "sendgrid", [
        ("sms", "c:S1:1", "+8613800000001"),
        ("sms", "c:S2:1", "+15005550004"),  # Twilio's magic "unsubscribed" number
        ("sms", "c:S3:1", "+15005550001"),  # invalid
        ("webhook", "c:W1:1", "openid-1"),
    ]))
    (ok, ok_found), (stop, _), (invalid, _), (hook, hook_found) = out
    assert ok.status == "accepted" and ok.provider_message_id.startswith("SM") and ok_found.status == "found"
    assert (stop.status, stop.suppress) == ("permanent", "unsubscribed")
    assert (invalid.status, invalid.suppress) == ("permanent", "invalid_address")
    assert hook.status == "accepted" and hook_found.status == "found"
    stats = emu.stats()
    assert stats["accepted"] == 2 and stats["unique_keys"] == 2 and stats["duplicates"] == 0
    assert stats["by_provider"] == {"twilio": 1, "webhook:app-push": 1}


def test_auth_is_checked(emu):
    async def go():
        async with httpx.AsyncClient() as client:
            ch = SendGridChannel(client, SecretStr("SG.wrong"), base_url=emu.url)
            [r] = await ch.send([message("email", "c:A1:1", "a@example.com")])
            bad_sig = await client.post(f"{emu.url}/hooks/app-push", json={"key": "x"},
                                        headers={"X-Winback-Timestamp": "1", "X-Winback-Signature": "sha256=00"})
            mailgun = await client.post(f"{emu.url}/v3/mg.emulator.test/messages", data={"to": "a"},
                                        auth=("api", "wrong"))
            return r, bad_sig.status_code, mailgun.status_code

    r, hook_status, mailgun_status = asyncio.run(go())
    assert r.status == "permanent" and r.reason.startswith("auth_rejected")
    assert hook_status == 401 and mailgun_status == 401
    assert emu.stats()["accepted"] == 0


def test_stats_count_duplicates_and_reset(emu):
    async def go():
        async with httpx.AsyncClient() as client:
            ch = SendGridChannel(client, SecretStr(SENDGRID_KEY), base_url=emu.url)
            m = message("email", "c:D1:1", "a@example.com")
            await ch.send([m])
            await ch.send([m])  # the emulator, like SendGrid, does not deduplicate

    asyncio.run(go())
    assert emu.stats()["accepted"] == 2 and emu.stats()["duplicates"] == 1 and emu.stats()["unique_keys"] == 1
    lookup = httpx.get(f"{emu.url}/_emulator/lookup", params={"key": "c:D1:1"}).json()
    assert len(lookup["messages"]) == 2
    emu.reset()
    assert emu.stats() == {"accepted": 0, "unique_keys": 0, "duplicates": 0, "by_provider": {}, "requests": {}}


@pytest.mark.parametrize("kind", ["429", "500", "503", "drop", "slow"])
def test_each_fault_kind_maps_to_a_retryable_result(emu, kind):
    emu.set_faults(1.0, kinds=(kind,), retry_after="2")

    async def go():
        async with httpx.AsyncClient(timeout=0.5) as client:
            ch = SendGridChannel(client, SecretStr(SENDGRID_KEY), base_url=emu.url, timeout=0.5)
            return await ch.send([message("email", f"c:F{kind}:1", "a@example.com")])

    [r] = asyncio.run(go())
    assert r.status == "retryable"
    if kind == "429":
        assert r.retry_after == 2.0 and not r.ambiguous
    if kind == "503":
        assert not r.ambiguous
    if kind in ("500", "drop", "slow"):
        assert r.ambiguous  # the request may have been taken: the engine looks it up before retrying
    if kind == "slow":
        assert emu.stats()["accepted"] == 1  # accepted, then stalled past the client's timeout


def test_faults_are_seeded(emu):
    def pattern():
        emu.set_faults(0.0)
        httpx.post(f"{emu.url}/_emulator/faults", json={"rate": 0.5, "kinds": ["503"]})
        codes = []
        with httpx.Client() as client:
            for i in range(30):
                r = client.post(f"{emu.url}/v3/mail/send", headers={"Authorization": f"Bearer {SENDGRID_KEY}"},
                                json={"personalizations": [{"to": [{"email": "a@x.com"}],
                                                            "custom_args": {"winback_key": f"s:{i}:1"}}],
                                      "from": {"email": "c@x.com"}, "subject": "s",
                                      "content": [{"type": "text/plain", "value": "x"}]})
                codes.append(r.status_code)
        return codes

    first = pattern()
    assert 0 < first.count(503) < 30 and set(first) == {202, 503}
    # same seed, same sequence: two fresh emulators fail the same requests
    with EmulatorServer(seed=11, smtp=False) as a, EmulatorServer(seed=11, smtp=False) as b:
        a.set_faults(0.5, kinds=("503",))
        b.set_faults(0.5, kinds=("503",))

        def codes(url):
            with httpx.Client() as client:
                return [client.post(f"{url}/v3/mail/send", headers={"Authorization": f"Bearer {SENDGRID_KEY}"},
                                    json={"personalizations": [{"to": [{"email": "a@x.com"}]}],
                                          "from": {"email": "c@x.com"}, "subject": "s",
                                          "content": [{"type": "text/plain", "value": "x"}]}).status_code
                        for _ in range(20)]
        assert codes(a.url) == codes(b.url)


# -- lookups as the providers answer them: time ranges, filters, paging -----------------------------

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def in_process(clock: FrozenClock) -> httpx.AsyncClient:
    """A client on an in-process emulator whose providers' time is `clock`."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=EmulatorApp(clock=clock)),
                             base_url="http://testserver")


def test_mailgun_events_honour_the_range_filters_and_paging():
    clock = FrozenClock(T0)

    async def go():
        async with in_process(clock) as client:
            auth = ("api", MAILGUN_KEY)
            for i, to in enumerate(["ann@example.com", "bob@example.com", "ann@example.com"]):
                await client.post(f"/v3/{MAILGUN_DOMAIN}/messages", auth=auth,
                                  data={"from": "c@x.com", "to": to, "subject": "s", "text": "t",
                                        "v:winback_key": f"c:M{i}:1"})
                clock.advance(hours=1)
            events = f"/v3/{MAILGUN_DOMAIN}/events"
            undocumented = await client.get(events, auth=auth, params={"user-variables": '{"winback_key": "c:M0:1"}'})
            since = int((T0 + timedelta(minutes=30)).timestamp())
            first = await client.get(events, auth=auth, params={"begin": since, "ascending": "yes", "limit": 1,
                                                                "event": "accepted", "recipient": "ann@example.com"})
            second = await client.get(first.json()["paging"]["next"], auth=auth)
            third = await client.get(second.json()["paging"]["next"], auth=auth)
            rfc2822 = await client.get(events, auth=auth, params={"begin": "Fri, 20 Nov 2026 09:30:00 -0000",
                                                                  "ascending": "yes"})
            newest_first = await client.get(events, auth=auth, params={"ascending": "no"})
            too_many = await client.get(events, auth=auth, params={"ascending": "yes", "limit": 301})
            return undocumented, first, second, third, rfc2822, newest_first, too_many

    undocumented, first, second, third, rfc2822, newest_first, too_many = asyncio.run(go())
    assert undocumented.status_code == 400 and "user-variables" in undocumented.json()["message"]
    # ann's messages since `begin` (M0 is before it, M1 is bob's), one per page; an empty page ends the range.
    assert first.json()["paging"]["next"].startswith(f"http://testserver/v3/{MAILGUN_DOMAIN}/events/")
    pages = [first.json()["items"], second.json()["items"], third.json()["items"]]
    assert [[e["user-variables"]["winback_key"] for e in page] for page in pages] == [["c:M2:1"], [], []]
    assert [e["user-variables"]["winback_key"] for e in rfc2822.json()["items"]] == ["c:M1:1", "c:M2:1"]
    assert [e["user-variables"]["winback_key"] for e in newest_first.json()["items"]] == ["c:M2:1", "c:M1:1",
                                                                                           "c:M0:1"]
    assert too_many.status_code == 400


def test_mailgun_lookup_days_after_the_claim_finds_the_message_in_the_emulator():
    clock = FrozenClock(T0)

    async def go():
        async with in_process(clock) as client:
            channel = MailgunChannel(client, SecretStr(MAILGUN_KEY), MAILGUN_DOMAIN, base_url="http://testserver",
                                     clock=clock)
            m = OutboundMessage(key="c:L1:1", channel="email", to="ann@example.com", from_="club@example.com",
                                subject="s", text="t", claimed_at=T0)
            [sent] = await channel.send([m])
            clock.advance(days=3)  # the crash is reconciled three days later
            found = await channel.lookup(m.key, m)
            later_claim = dataclasses.replace(m, claimed_at=T0 + timedelta(hours=2))
            not_yet = await channel.lookup(m.key, later_claim)  # an attempt claimed after that message
            return sent, found, not_yet

    sent, found, not_yet = asyncio.run(go())
    assert found.status == "found" and found.provider_message_id == sent.provider_message_id
    assert not_yet.status == "not_found"


def test_twilio_list_filters_by_date_sent_and_pages():
    clock = FrozenClock(T0)

    async def go():
        async with in_process(clock) as client:
            channel = TwilioChannel(client, TWILIO_SID, SecretStr(TWILIO_TOKEN), base_url="http://testserver",
                                    from_number="+15005550006", clock=clock)
            sms = [OutboundMessage(key=f"c:T{i}:1", channel="sms", to="+8613800000001", from_="+15005550006",
                                   text=f"code {i}", claimed_at=clock.now_datetime() if i == 0 else None)
                   for i in range(3)]
            for m in sms:
                await channel.send([m])
                clock.advance(days=2)
            url = f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
            auth = (TWILIO_SID, TWILIO_TOKEN)
            since = await client.get(url, auth=auth, params={"To": "+8613800000001", "DateSent>": "2026-11-22"})
            page0 = await client.get(url, auth=auth, params={"To": "+8613800000001", "PageSize": 2})
            page1 = await client.get(page0.json()["next_page_uri"], auth=auth)
            found = await channel.lookup(sms[0].key, sms[0])  # six days after its claim
            return since.json(), page0.json(), page1.json(), found

    since, page0, page1, found = asyncio.run(go())
    assert [m["body"] for m in since["messages"]] == ["code 2", "code 1"]  # newest first, on and after the day
    assert [m["body"] for m in page0["messages"]] == ["code 2", "code 1"] and page0["next_page_uri"]
    assert [m["body"] for m in page1["messages"]] == ["code 0"] and page1["next_page_uri"] is None
    assert found.status == "found"


def test_lookups_bounded_by_a_claim_three_days_back_over_real_http(emu):
    claimed = SystemClock().now_datetime() - timedelta(days=3)  # the emulator runs on the real time

    async def go():
        cfg = provider_config_for_emulator(emu.url, email="mailgun")
        async with Router(cfg) as router:
            out = []
            for channel, key, to in (("email", "c:R1:1", "r@example.com"), ("sms", "c:R2:1", "+8613800000002")):
                ch = router.channel_for(channel)
                m = OutboundMessage(key=key, channel=channel, to=to, from_="+15005550006", subject="s", text="t",
                                    claimed_at=claimed)
                [result] = await ch.send([m])
                out.append((result.status, (await ch.lookup(key, m)).status))
            return out

    assert asyncio.run(go()) == [("accepted", "found"), ("accepted", "found")]


def test_sendgrid_payload_validation(emu):
    r = httpx.post(f"{emu.url}/v3/mail/send", headers={"Authorization": f"Bearer {SENDGRID_KEY}"},
                   json={"personalizations": [], "from": {}})
    assert r.status_code == 400
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"personalizations", "from.email", "content"} <= fields


def test_emulator_command_runs_as_a_subprocess():
    with EmulatorServer(subprocess=True, smtp=True, fault_rate=0.0) as server:
        assert server.stats()["accepted"] == 0
        [(result, found)] = asyncio.run(send_all(server.url, server.smtp_port, "smtp",
                                                 [("email", "c:P1:1", "p@example.com")]))
        assert result.status == "accepted" and found.status == "found"


def test_emulator_command_rejects_bad_options():
    out = subprocess.run([sys.executable, "-m", "winback.cli", "emulator", "--fault-rate", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Error:" in out.stderr and "--fault-rate" in out.stderr


@pytest.mark.parametrize(("kind", "expected"), [("drop", httpx.RemoteProtocolError), ("slow", httpx.ReadTimeout)])
def test_winback_transport_maps_failures_by_their_meaning_for_delivery(emu, kind, expected):
    from winback.channels.providers import make_client

    emu.set_faults(1.0, kinds=(kind,))

    async def go():
        async with make_client("aiohttp", timeout_s=0.5) as client:
            with pytest.raises(expected):
                await client.post(f"{emu.url}/v3/mail/send", json={}, headers={"Authorization": "Bearer x"})
            emu.set_faults(0.0)
            ok = await client.get(f"{emu.url}/_emulator/stats")
            assert ok.status_code == 200 and "accepted" in ok.json()

    asyncio.run(go())


def test_winback_transport_connection_refused_is_connect_error():
    import socket

    from winback.channels.providers import make_client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        async with make_client("aiohttp", timeout_s=2) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")

    asyncio.run(go())
