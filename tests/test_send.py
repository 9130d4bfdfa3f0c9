"""The exactly-once send engine and `winback send`, against the real emulator on 127.0.0.1 and a real
SQLite ledger: faults, suppressions, outages, reconciliation after a crash, uncertain policy, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from test_channels_support import make_plan, write_templates
from winback.channels.base import message_key
from winback.channels.dispatch import Backoff, SendSettings, build_message, dispatch, dispatch_batch
from winback.channels.emulator import EmulatorServer
from winback.channels.providers import Router, provider_config_for_emulator
from winback.cli import main
from winback.ledger import Ledger
from winback.render import Renderer

NOW = "2026-11-21T00:00:00Z"
SECRET = "unsubscribe-secret-for-tests"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def emu():
    with EmulatorServer(seed=5, slow_seconds=1.0) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    emu.set_faults(0.0, kinds=("429", "500", "503", "slow", "drop"), retry_after="0.05")
    yield


@pytest.fixture()
def templates(tmp_path):
    return write_templates(tmp_path)


def run_dispatch(emu, tmp_path, templates, plan, *, ledger=None, email="sendgrid", smtp_lookup=True, **kw):
    ledger = ledger or Ledger(f"sqlite:///{tmp_path}/ledger.db")
    config = provider_config_for_emulator(emu.url, smtp_port=emu.smtp_port, email=email,
                                          out_dir=str(tmp_path / "calls"), timeout_s=0.4)
    if not smtp_lookup:
        config.smtp.lookup_url = None

    async def go():
        async with Router(config) as router:
            settings = SendSettings(
                router=router, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                public_url="https://events.example.com", unsubscribe_mailto="unsubscribe@example.com",
                concurrency=kw.pop("concurrency", 24), backoff=Backoff(0.02, 0.2), seed=1,
                max_attempts=kw.pop("max_attempts", 6), uncertain_policy=kw.pop("uncertain_policy", "resend"),
                outage_after=kw.pop("outage_after", 25), rate_limits=kw.pop("rate_limits", {}),
            )
            return await dispatch(ledger, settings, now=NOW, plan=plan, batch_size=kw.pop("batch_size", 100), **kw)

    return ledger, asyncio.run(go())


def test_injected_faults_every_message_settles_without_duplicates(emu, tmp_path, templates):
    emu.set_faults(0.2)
    plan = make_plan(300, channel=["email", "sms", "webhook"], holdout_every=10)
    ledger, summary = run_dispatch(emu, tmp_path, templates, plan)
    status = ledger.status()
    treated = int((plan["arm"] == "treatment").sum())
    assert status["held_out"] == 30 and status["planned"] == 0 and status["sending"] == 0
    assert status["sent"] + status["failed"] == treated and status["uncertain"] == 0
    rows = ledger.rows("spring")
    failed = rows[rows["state"] == "failed"]
    assert failed["error"].notna().all() and (failed["error"].str.len() > 0).all()
    stats = emu.stats()
    assert stats["duplicates"] == 0
    assert stats["unique_keys"] == status["sent"]
    assert summary.retries > 0 and summary.lookups > 0  # faults really happened and were reconciled
    # holdout customers were never contacted
    held = {message_key("spring", c, 1) for c in rows.loc[rows["state"] == "held_out", "customer_id"]}
    assert not held & {m["key"] for m in emu.messages()}


def _land_held_requests(server: EmulatorServer) -> dict:
    """Let the emulator's held requests through and wait until each one received is recorded."""
    server.hold(False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = server.stats()
        if stats["accepted"] == stats["requests"].get("sendgrid", 0):
            break
        time.sleep(0.05)
    return stats


@pytest.mark.parametrize("wait", [False, True])
def test_a_timed_out_request_still_queued_at_the_provider_is_not_resent(tmp_path, templates, monkeypatch, wait):
    # The emulator holds every request in its queue, unanswered: the client gives up after 0.4 s and
    # asks whether the message arrived. Looking up at once finds nothing and resends (the held copies
    # land later: duplicates). With the wait (`lookup_settle_s`), the wait is where the held requests
    # land, so the lookup finds them: no resend. Events, not durations, order the two.
    from winback.channels import dispatch as engine

    with EmulatorServer(seed=1, smtp=False) as slow:
        config = provider_config_for_emulator(slow.url, timeout_s=0.4)
        slow.hold()

        async def settle(seconds):
            await asyncio.to_thread(_land_held_requests, slow)

        monkeypatch.setattr(engine, "_settle", settle)

        async def go():
            async with Router(config) as router:
                settings = SendSettings(router=router, renderer=Renderer(templates),
                                        unsubscribe_secret=SecretStr(SECRET), public_url="https://events.example.com",
                                        concurrency=10, backoff=Backoff(0.02, 0.2), seed=1, max_attempts=3,
                                        lookup_settle_s=1.0 if wait else 0.0)
                return await dispatch(Ledger(f"sqlite:///{tmp_path}/l.db"), settings, now=NOW,
                                      plan=make_plan(10), batch_size=10)

        summary = asyncio.run(go())
        stats = _land_held_requests(slow)  # requests the client gave up on still land
    if wait:
        assert summary.sent == 10 and summary.lookups >= 1 and summary.retries == 0
        assert stats["duplicates"] == 0 and stats["accepted"] == 10
    else:  # the race the wait closes, shown on the same emulator
        assert summary.lookups >= 1 and stats["duplicates"] > 0


def test_reconciling_rows_claimed_moments_ago_waits_for_the_settle_first(emu, tmp_path, templates, monkeypatch):
    # A sender killed just now may have requests still queued at the provider: the next run waits
    # `lookup_settle_s` from the moment its lease lapsed (the run's clock) before looking its rows up.
    from winback.channels import dispatch as engine
    from winback.channels.dispatch import reconcile_in_flight
    from winback.clock import FrozenClock

    waits = []

    async def settle(seconds):
        waits.append(seconds)

    monkeypatch.setattr(engine, "_settle", settle)
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    ledger.plan(make_plan(5))
    ledger.claim("spring", now=NOW, limit=5, lease_s=0.5)  # claimed at NOW, "crashed" before sending
    config = provider_config_for_emulator(emu.url, timeout_s=2.0)

    async def go(settle_s, at):
        async with Router(config) as router:
            settings = SendSettings(router=router, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                                    public_url="https://events.example.com", lookup_settle_s=settle_s,
                                    clock=FrozenClock(at))
            return await reconcile_in_flight(ledger, settings)

    # The reconcile runs a second after the claim (on the run's clock, whatever the machine's date).
    summary = asyncio.run(go(30.0, pd.Timestamp(NOW) + pd.Timedelta(seconds=1)))
    assert len(waits) == 1  # a wait was asked for before the lookups
    assert summary.reconciled["not_found"] == 5 and ledger.status()["planned"] == 5
    ledger.claim("spring", now=NOW, limit=5, lease_s=0.5)  # lease lapsed a day before the reconcile: no wait
    asyncio.run(go(30.0, pd.Timestamp(NOW) + pd.Timedelta(days=1)))
    assert len(waits) == 1


def test_rerun_after_completion_sends_nothing(emu, tmp_path, templates):
    plan = make_plan(40, channel=["email", "webhook"])
    ledger, first = run_dispatch(emu, tmp_path, templates, plan)
    assert first.sent == 40
    _, second = run_dispatch(emu, tmp_path, templates, plan, ledger=ledger)
    assert second.sent == 0 and second.planned_new == 0 and second.attempts == 0
    assert emu.stats()["accepted"] == 40


def test_email_carries_one_click_unsubscribe(emu, tmp_path, templates):
    from winback.render import verify_unsubscribe_token

    run_dispatch(emu, tmp_path, templates, make_plan(3))
    for stored in emu.messages():
        header = stored["headers"]["List-Unsubscribe"]
        https, mailto = [part.strip(" <>") for part in header.split(",")]
        assert https.startswith("https://events.example.com/unsubscribe/") and mailto.startswith("mailto:")
        assert stored["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        token = https.rsplit("/", 1)[-1]
        assert verify_unsubscribe_token(token, SECRET)[1] == stored["key"].split(":")[1]


def test_suppressed_at_send_time_and_permanent_refusals_suppress(emu, tmp_path, templates):
    plan = make_plan(6, channel="sms")
    plan.loc[1, "to_address"] = "+15005550004"  # Twilio: recipient replied STOP
    plan.loc[2, "to_address"] = "+15005550001"  # Twilio: invalid number
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.add_suppression("C000003", "sms", None, "unsubscribed", source="events")
    ledger.add_suppression("C999999", "sms", "+8613800000004", "complained", source="events")  # by address
    _, summary = run_dispatch(emu, tmp_path, templates, plan, ledger=ledger)
    states = ledger.rows("spring").set_index("customer_id")["state"].to_dict()
    assert states == {"C000000": "sent", "C000001": "failed", "C000002": "failed", "C000003": "suppressed",
                      "C000004": "suppressed", "C000005": "sent"}
    assert summary.failed == {"twilio_21610": 1, "twilio_21211": 1} and summary.suppressed == 2
    reasons = ledger.suppressions().set_index("customer_id")["reason"].to_dict()
    assert reasons["C000001"] == "unsubscribed" and reasons["C000002"] == "invalid_address"
    assert {m["to"] for m in emu.messages()} == {"+8613800000000", "+8613800000005"}


def test_outage_stops_cleanly_and_leaves_rows_planned(emu, tmp_path, templates):
    emu.set_faults(1.0, kinds=("503",))
    plan = make_plan(120)
    ledger, summary = run_dispatch(emu, tmp_path, templates, plan, outage_after=10, batch_size=50)
    status = ledger.status()
    assert summary.outage and "sendgrid" in summary.outage
    assert status["failed"] == 0 and status["sent"] == 0 and status["sending"] == 0
    assert status["planned"] == 120 and summary.remaining_planned == 120
    emu.set_faults(0.0)
    _, after = run_dispatch(emu, tmp_path, templates, plan, ledger=ledger)
    assert after.sent == 120 and emu.stats()["duplicates"] == 0


def test_crash_leftovers_are_reconciled_by_lookup_before_anything_is_resent(emu, tmp_path, templates):
    plan = make_plan(20, channel=["email", "sms", "webhook", "call_task"])
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.plan(plan)
    claimed = ledger.claim(now=NOW, limit=20, lease_s=0)  # a run that crashed after claiming (lease lapsed)…
    config = provider_config_for_emulator(emu.url, out_dir=str(tmp_path / "calls"))

    async def half_sent():  # …and after handing the first half to the providers, before recording
        async with Router(config) as router:
            settings = SendSettings(router=router, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                                    public_url="https://events.example.com")
            for row in claimed.iloc[:10].to_dict("records"):
                message = build_message(row, settings)
                [r] = await router.channel_for(row["channel"]).send([message])
                assert r.status == "accepted"

    asyncio.run(half_sent())
    _, summary = run_dispatch(emu, tmp_path, templates, None, ledger=ledger)
    assert summary.reconciled == {"found": 10, "not_found": 10}
    assert ledger.status()["sent"] == 20
    assert emu.stats()["duplicates"] == 0
    # call lists were written once each
    lines = sum(len(p.read_text(encoding="utf-8-sig").splitlines()) - 1 for p in (tmp_path / "calls").rglob("*.csv"))
    assert lines == 5


@pytest.mark.parametrize("policy", ["hold", "resend"])
def test_uncertain_policy_when_the_provider_cannot_tell(emu, tmp_path, templates, policy):
    plan = make_plan(6)
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.plan(plan)
    # Crashed with six emails in flight over plain SMTP (no lookup); its lease has lapsed.
    ledger.claim(now=NOW, limit=6, lease_s=0)
    _, summary = run_dispatch(emu, tmp_path, templates, None, ledger=ledger, email="smtp", smtp_lookup=False,
                              uncertain_policy=policy)
    status = ledger.status()
    assert summary.reconciled == {"unknown": 6}
    if policy == "hold":
        assert status["uncertain"] == 6 and sum(summary.uncertain.values()) == 6 and emu.stats()["accepted"] == 0
        assert ledger.rows("spring")["error"].str.contains("uncertain").all()
    else:
        assert status["sent"] == 6 and summary.uncertain_resent == 6 and emu.stats()["accepted"] == 6


def test_dispatch_batch_is_callable_alone_and_render_failures_fail_alone(emu, tmp_path, templates):
    plan = make_plan(4)
    plan.loc[2, "template"] = "broken"  # uses a variable the context lacks
    plan.loc[3, "to_address"] = None
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.plan(plan)
    rows = ledger.claim(now=NOW, limit=10)
    config = provider_config_for_emulator(emu.url)

    async def go():
        async with Router(config) as router:
            settings = SendSettings(router=router, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                                    public_url="https://events.example.com")
            return await dispatch_batch(rows, ledger, settings)

    summary = asyncio.run(go())
    assert summary.sent == 2 and summary.failed == {"render": 1, "missing_address": 1}
    errors = ledger.rows("spring").set_index("customer_id")["error"]
    assert "no_such_field" in errors["C000002"] and "missing_address" in errors["C000003"]


def test_rate_limit_is_wired_per_provider(emu, tmp_path, templates):
    # The bucket semantics are aiolimiter's; we check the wiring: one limiter per configured provider
    # at the configured rate, none for the others, and a rate-limited run still sends everything.
    async def limiters():
        settings = SendSettings(router=None, renderer=None, rate_limits={"sendgrid": 40})
        return settings.limiter("sendgrid"), settings.limiter("sendgrid"), settings.limiter("mailgun")

    limiter, again, other = asyncio.run(limiters())
    assert limiter is not None and limiter.max_rate == 40 and limiter.time_period == 1.0
    assert again is limiter and other is None
    _, summary = run_dispatch(emu, tmp_path, templates, make_plan(30), rate_limits={"sendgrid": 40})
    assert summary.sent == 30


# -- the command line ------------------------------------------------------------------------------------

def _env(tmp_path):
    return {**os.environ, "WINBACK_UNSUBSCRIBE_SECRET": SECRET, "PYTHONPATH": str(REPO / "src"),
            "WINBACK_PUBLIC_URL": "https://events.example.com"}


def test_send_command_json_and_resumable(emu, tmp_path, templates, monkeypatch, capsys):
    plan_path = tmp_path / "plan.parquet"
    make_plan(25, channel=["email", "sms"], holdout_every=5).to_parquet(plan_path)
    monkeypatch.setenv("WINBACK_UNSUBSCRIBE_SECRET", SECRET)
    args = ["send", "--plan", str(plan_path), "--emulator", emu.url, "--ledger", f"sqlite:///{tmp_path}/l.db",
            "--now", NOW, "--templates", str(templates)]
    assert main([*args, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["sent"] == 20 and first["planned_new"] == 25
    assert main(args) == 0  # the table and the progress bar path; nothing left to send
    out = capsys.readouterr().out
    assert "sent" in out and "remaining planned" in out
    assert emu.stats()["accepted"] == 20


def test_send_command_workers_share_the_plan_exactly_once(emu, tmp_path, templates, monkeypatch, capsys):
    # Three forked sender processes claim batches of one plan from one SQLite ledger, with 20% faults.
    emu.set_faults(0.2, kinds=("429", "500", "503", "drop"), retry_after="0.05")
    plan_path = tmp_path / "plan.parquet"
    make_plan(150, channel=["email", "sms", "webhook"]).to_parquet(plan_path)
    monkeypatch.setenv("WINBACK_UNSUBSCRIBE_SECRET", SECRET)
    ledger_url = f"sqlite:///{tmp_path}/l.db"
    args = ["send", "--plan", str(plan_path), "--emulator", emu.url, "--ledger", ledger_url, "--now", NOW,
            "--templates", str(templates), "--workers", "3", "--batch-size", "10", "--concurrency", "12",
            "--max-attempts", "8"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    status = Ledger(ledger_url).status()
    stats = emu.stats()
    assert summary["planned_new"] == 150 and summary["sent"] + summary["failed_total"] == 150
    assert status["sent"] == summary["sent"] and status["sending"] == 0 and status["planned"] == 0
    assert stats["duplicates"] == 0 and stats["unique_keys"] == summary["sent"]
    assert summary["attempts"] >= 150 and summary["retries"] > 0  # the senders' summaries were merged
    assert main(args) == 0  # progress-bar path; nothing left
    assert emu.stats()["accepted"] == stats["accepted"]
    assert main([*args[:-8], "--workers", "0"]) == 1


def test_send_command_errors_are_clean(tmp_path, templates, capsys):
    assert main(["send", "--plan", str(tmp_path / "missing.csv"), "--emulator", "http://127.0.0.1:9"]) == 1
    assert "Error:" in capsys.readouterr().err
    assert main(["send", "--plan", str(tmp_path / "x.csv")]) == 1  # neither provider source
    assert "--provider-config" in capsys.readouterr().err
    assert main(["send", "--plan", str(tmp_path / "x.csv"), "--emulator", "http://x", "--uncertain", "maybe"]) == 1


def test_send_command_outage_exits_nonzero(emu, tmp_path, templates, monkeypatch, capsys):
    emu.set_faults(1.0, kinds=("503",))
    plan_path = tmp_path / "plan.csv"
    make_plan(30).to_csv(plan_path, index=False)
    monkeypatch.setenv("WINBACK_UNSUBSCRIBE_SECRET", SECRET)
    code = main(["send", "--plan", str(plan_path), "--emulator", emu.url, "--ledger", f"sqlite:///{tmp_path}/l.db",
                 "--now", NOW, "--templates", str(templates), "--no-progress", "--max-attempts", "50"])
    assert code == 1
    err = capsys.readouterr().err
    assert "outage" in err and "left planned" in err
    assert Ledger(f"sqlite:///{tmp_path}/l.db").status()["planned"] == 30


def test_batches_can_run_in_separate_event_loops(emu, tmp_path, templates):
    """The Prefect dispatch flow may run each batch in its own `asyncio.run`."""
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.plan(make_plan(30, channel=["email", "sms"]))
    config = provider_config_for_emulator(emu.url)
    sent = 0
    for _ in range(3):
        async def one_batch():
            async with Router(config) as router:
                settings = SendSettings(router=router, renderer=Renderer(templates),
                                        unsubscribe_secret=SecretStr(SECRET), public_url="https://events.example.com",
                                        rate_limits={"sendgrid": 1000})
                rows = await asyncio.to_thread(ledger.claim, now=NOW, limit=10)
                return await dispatch_batch(rows, ledger, settings)

        sent += asyncio.run(one_batch()).sent
    assert sent == 30 and ledger.status()["sent"] == 30 and emu.stats()["duplicates"] == 0


def test_send_command_with_provider_config_yaml_and_env_secrets(emu, tmp_path, templates, monkeypatch, capsys):
    from winback.channels import emulator as emulator_module

    config = tmp_path / "providers.yaml"
    config.write_text(
        "email: mailgun\nsender_email: club@example.com\nsender_name: 示例俱乐部\n"
        "unsubscribe_mailto: unsubscribe@example.com\npublic_url: https://events.example.com\ntimeout_s: 2\n"
        "sms_from: '+15005550006'\n"
        f"mailgun: {{base_url: '{emu.url}', domain: {emulator_module.MAILGUN_DOMAIN}, api_key_env: MY_MAILGUN_KEY}}\n"
        f"twilio: {{base_url: '{emu.url}', account_sid: {emulator_module.TWILIO_SID}, auth_token_env: MY_TWILIO}}\n"
        f"call_task: {{out_dir: '{tmp_path / 'calls'}'}}\n",
        encoding="utf-8")
    monkeypatch.setenv("MY_MAILGUN_KEY", emulator_module.MAILGUN_KEY)
    monkeypatch.setenv("MY_TWILIO", emulator_module.TWILIO_TOKEN)
    monkeypatch.setenv("WINBACK_UNSUBSCRIBE_SECRET", SECRET)
    plan_path = tmp_path / "plan.csv"
    make_plan(12, channel=["email", "sms", "call_task"]).to_csv(plan_path, index=False)
    code = main(["send", "--plan", str(plan_path), "--provider-config", str(config), "--ledger",
                 f"sqlite:///{tmp_path}/l.db", "--now", NOW, "--templates", str(templates), "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["sent"] == 12, summary
    assert emu.stats()["by_provider"] == {"mailgun": 4, "twilio": 4}
    assert len(list((tmp_path / "calls" / "spring").glob("*.csv"))) == 2
    # a missing secret is a clean error naming the variable, never a traceback
    monkeypatch.delenv("MY_MAILGUN_KEY")
    make_plan(3, campaign_id="autumn").to_csv(plan_path, index=False)
    assert main(["send", "--plan", str(plan_path), "--provider-config", str(config), "--ledger",
                 f"sqlite:///{tmp_path}/l.db", "--now", NOW, "--templates", str(templates)]) == 1
    assert "MY_MAILGUN_KEY" in capsys.readouterr().err
    assert Ledger(f"sqlite:///{tmp_path}/l.db").status("autumn")["planned"] == 3  # released, not failed
