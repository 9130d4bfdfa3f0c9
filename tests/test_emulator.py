"""The provider emulator over real HTTP on 127.0.0.1: every provider's shape through the real channels,
auth checks, faults (429 + Retry-After, 5xx, slow, dropped connections), lookups, stats and reset."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest
from pydantic import SecretStr

from winback.channels.base import OutboundMessage
from winback.channels.emulator import SENDGRID_KEY, EmulatorServer
from winback.channels.providers import Router, provider_config_for_emulator
from winback.channels.sendgrid import SendGridChannel


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
