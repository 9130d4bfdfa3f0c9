"""Claims with an owner and a lease: renewed while a sender works, reconciled only once lapsed (or once
their owner process is gone), on SQLite and PostgreSQL; several `winback send` processes on one ledger
against an emulator answering in 200 ms; `--now` never strands a crashed run's rows."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from test_channels_support import make_plan, write_templates
from winback.channels.dispatch import (
    LeaseKeeper,
    SendSettings,
    dispatch,
    new_owner,
    owner_is_dead,
    reconcile_in_flight,
)
from winback.channels.emulator import EmulatorServer
from winback.channels.providers import Router, provider_config_for_emulator
from winback.clock import FrozenClock
from winback.ledger import Ledger
from winback.render import Renderer

NOW = "2026-11-21T00:00:00Z"
T0 = pd.Timestamp(NOW)
SECRET = "unsubscribe-secret-for-tests"
REPO = Path(__file__).resolve().parents[1]


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _ledger_url(backend: str, tmp_path: Path, request) -> str:
    """A SQLite file under tmp_path, or a fresh PostgreSQL schema (`postgres_schema`)."""
    return f"sqlite:///{tmp_path / 'l.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_schema")


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path) -> str:
    return _ledger_url(request.param, tmp_path, request)


@pytest.fixture()
def templates(tmp_path):
    return write_templates(tmp_path)


def _env(**extra) -> dict[str, str]:
    return {**os.environ, "WINBACK_UNSUBSCRIBE_SECRET": SECRET, "PYTHONPATH": str(REPO / "src"),
            "WINBACK_PUBLIC_URL": "https://events.example.com", **extra}


# -- the ledger's verbs -----------------------------------------------------------------------------------


def test_a_live_lease_is_renewed_and_left_alone_a_lapsed_one_is_taken_over(url):
    with Ledger(url) as ledger:
        ledger.plan(make_plan(6))
        mine = ledger.claim(now=T0, limit=3, owner="sender-a", lease_s=60)
        assert (mine["claim_owner"] == "sender-a").all()
        assert (pd.to_datetime(mine["lease_until"], utc=True) == T0 + pd.Timedelta(seconds=60)).all()
        ledger.claim(now=T0, limit=3, owner="sender-b", lease_s=60)
        # sender-a renews at T0+50 s; sender-b does not (it crashed).
        assert ledger.renew("sender-a", until=T0 + pd.Timedelta(seconds=110), now=T0 + pd.Timedelta(seconds=50)) == 3
        later = T0 + pd.Timedelta(seconds=90)
        assert set(ledger.in_flight(lapsed_at=later)["claim_owner"]) == {"sender-b"}
        taken = ledger.reclaim(owner="reconciler", now=later, lease_s=60)
        assert len(taken) == 3 and set(taken["claim_owner"]) == {"reconciler"}
        assert taken.attrs["claim_token"] and (taken["claim_token"] == taken.attrs["claim_token"]).all()
        # A second reconciler finds nothing left to take; the stalled owner cannot renew what it lost.
        assert ledger.reclaim(owner="other", now=later, lease_s=60).empty
        assert ledger.renew("sender-b", until=later + pd.Timedelta(seconds=60)) == 0
        # Outcomes are recorded under the new claim only: the old owner's late answer changes nothing.
        keys = list(zip(taken["campaign_id"], taken["customer_id"], taken["step"], strict=True))
        assert ledger.release(keys, claim_token="stale-token") == 0
        assert ledger.release(keys[:1], claim_token=taken.attrs["claim_token"]) == 1
        assert ledger.mark_uncertain(keys[1:], claim_token=taken.attrs["claim_token"], error="no lookup") == 2
        held = ledger.uncertain("spring")
        assert len(held) == 2 and held["lease_until"].isna().all()
        assert ledger.drop_uncertain(held.iloc[:1]) == 1
        assert ledger.release(held.iloc[1:], from_states=("uncertain",)) == 1
        status = ledger.status("spring")
        assert status["sending"] == 3 and status["planned"] == 2 and status["failed"] == 1
        dropped = ledger.rows("spring").set_index("customer_id").loc[held.iloc[0]["customer_id"]]
        assert dropped["error"].startswith("uncertain_dropped") and "no lookup" in dropped["error"]


def test_rows_without_a_lease_and_rows_of_a_dead_owner_count_as_lapsed(url):
    with Ledger(url) as ledger:
        ledger.plan(make_plan(4))
        ledger.claim(now=T0, limit=2, owner="legacy", lease_s=60)
        with ledger.engine.begin() as conn:  # rows claimed before leases existed (ledger v1) carry none
            conn.execute(sa.text("update ledger set lease_until = null where claim_owner = 'legacy'"))
        ledger.claim(now=T0, limit=2, owner="gone-owner", lease_s=3600)
        taken = ledger.reclaim(owner="me", now=T0, lease_s=60, dead_owners=["gone-owner"])
        assert len(taken) == 4


def test_owner_names_a_process_that_a_later_run_can_tell_is_gone():
    me = new_owner()
    assert len(me) <= 64 and me.count("/") == 4  # fits claim_owner (VARCHAR(64))
    assert not owner_is_dead(me)  # this process
    child = subprocess.run([sys.executable, "-c", "from winback.channels.dispatch import new_owner; print(new_owner())"],
                           capture_output=True, text=True, env=_env(), check=True)
    assert owner_is_dead(child.stdout.strip())  # exited (and reaped)
    for foreign in ("3f2a9c0d1e2b4a5c9d8e7f6a5b4c3d2e", "otherhost/0badc0de/1/1/abcdef", None, ""):
        assert not owner_is_dead(foreign)  # another machine, another namespace, or not ours: never "dead"


def test_the_lease_keeper_renews_from_a_thread_while_the_loop_is_busy(tmp_path):
    clock = FrozenClock(T0)
    with Ledger(f"sqlite:///{tmp_path}/l.db", clock=clock) as ledger:
        ledger.plan(make_plan(3))
        ledger.claim(now=T0, limit=3, owner="me", lease_s=0.3)
        with LeaseKeeper(ledger, "me", 0.3, clock) as keeper:
            clock.advance(seconds=10)
            deadline = time.monotonic() + 10
            while keeper.renewals < 2 and time.monotonic() < deadline:
                time.sleep(0.02)  # blocking, as a long render or a slow commit would
        assert keeper.renewals >= 2
        lease = pd.to_datetime(ledger.in_flight()["lease_until"], utc=True)
        assert (lease > T0 + pd.Timedelta(seconds=10)).all()


# -- reconciliation on the engine's side --------------------------------------------------------------------


def _settings(router, templates, clock, **kw) -> SendSettings:
    return SendSettings(router=router, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                        public_url="https://events.example.com", clock=clock, **kw)


def test_reconciliation_leaves_a_live_sender_alone_and_settles_the_lapsed_ones(url, templates):
    with EmulatorServer(seed=3, smtp=False) as emu, Ledger(url) as ledger:
        ledger.plan(make_plan(6))
        ledger.claim(now=T0, limit=3, owner="alive-elsewhere", lease_s=120)
        ledger.claim(now=T0, limit=3, owner="crashed-elsewhere", lease_s=30)
        config = provider_config_for_emulator(emu.url, timeout_s=2.0)

        async def go(at):
            async with Router(config) as router:
                return await reconcile_in_flight(ledger, _settings(router, templates, FrozenClock(at),
                                                                   lookup_settle_s=0.0))

        first = asyncio.run(go(T0 + pd.Timedelta(seconds=60)))
        assert first.reconciled == {"not_found": 3} and first.held_elsewhere == 3
        assert set(ledger.in_flight()["claim_owner"]) == {"alive-elsewhere"}
        assert ledger.status()["planned"] == 3
        second = asyncio.run(go(T0 + pd.Timedelta(seconds=121)))
        assert second.reconciled == {"not_found": 3} and second.held_elsewhere == 0
        assert emu.stats()["accepted"] == 0  # nothing was sent by reconciling


def test_rows_of_a_killed_run_under_now_are_reconciled_by_the_next_run_at_the_same_now(tmp_path, templates):
    """`--now` fixes where the business clock starts: a killed run's lease, taken on that clock, lies ahead of
    the next run's clock at the same `--now`, and must not strand its rows. Kill -9 a sender mid-batch, run
    again at once: its process is gone from this machine, so its rows are reconciled (after the settle time)."""
    plan_path = tmp_path / "plan.parquet"
    make_plan(40).to_parquet(plan_path)
    ledger_url = f"sqlite:///{tmp_path}/l.db"
    with EmulatorServer(seed=4, smtp=False, latency_ms=300, subprocess=True) as emu:
        cmd = [sys.executable, "-m", "winback.cli", "send", "--plan", str(plan_path), "--emulator", emu.url,
               "--ledger", ledger_url, "--now", NOW, "--templates", str(templates), "--no-progress", "--json",
               "--batch-size", "20", "--lease", "1", "--lookup-settle", "0.5", "--concurrency"]
        proc = subprocess.Popen([*cmd, "4"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while emu.stats()["accepted"] < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with Ledger(ledger_url) as ledger:
            stuck = ledger.in_flight()
        assert len(stuck) > 0  # rows were left in `sending` with a lease on the killed run's clock
        rerun = subprocess.run([*cmd, "32"], env=_env(), capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        summary = json.loads(rerun.stdout.strip().splitlines()[-1])
        stats = emu.stats()
    assert sum(summary["reconciled"].values()) == len(stuck)
    with Ledger(ledger_url) as ledger:
        status = ledger.status()
    assert status["sent"] == 40 and status["sending"] == 0 and status["planned"] == 0
    assert stats["duplicates"] == 0 and stats["unique_keys"] == 40


def test_a_crashed_run_on_another_machine_is_reconciled_once_its_lease_lapsed_on_the_run_clock(tmp_path, templates):
    # Another machine's owner cannot be checked for life: its rows wait for the lease, on the business
    # clock of the run that looks (a run at a later --now, or the same one later).
    with EmulatorServer(seed=5, smtp=False) as emu, Ledger(f"sqlite:///{tmp_path}/l.db") as ledger:
        plan = make_plan(5)
        config = provider_config_for_emulator(emu.url, timeout_s=2.0)
        ledger.plan(plan)
        ledger.claim(now=T0, limit=5, owner="other-host/0badc0de/4242/1/abcdef", lease_s=1)

        async def go(at):
            async with Router(config) as router:
                return await dispatch(ledger, _settings(router, templates, None, lookup_settle_s=0.0), now=at)

        early = asyncio.run(go(T0))
        assert early.held_elsewhere == 5 and early.sent == 0 and ledger.status()["sending"] == 5
        late = asyncio.run(go(T0 + pd.Timedelta(seconds=2)))
        assert late.reconciled == {"not_found": 5} and late.sent == 5 and late.held_elsewhere == 0
        assert emu.stats()["duplicates"] == 0


# -- several `winback send` processes on one ledger, a provider answering in 200 ms --------------------------


def _run_senders(tmp_path, ledger_url: str, *, senders: int, n: int, start_next_after: int | float | None,
                 latency_ms: float = 200, concurrency: int = 16, timeout: float = 240) -> tuple[list[dict], dict]:
    """Start `senders` `winback send` processes on one plan and ledger; the next one starts when the
    emulator has accepted `start_next_after` messages (an int), after that many seconds (a float), or at
    once (None). Returns their JSON summaries and the emulator's stats."""
    templates = write_templates(tmp_path)
    plan_path = tmp_path / "plan.parquet"
    make_plan(n, channel=["email", "sms", "webhook", "call_task"]).to_parquet(plan_path)
    with EmulatorServer(seed=7, smtp=False, latency_ms=latency_ms, subprocess=True) as emu:
        cmd = [sys.executable, "-m", "winback.cli", "send", "--plan", str(plan_path), "--emulator", emu.url,
               "--ledger", ledger_url, "--now", NOW, "--templates", str(templates), "--no-progress", "--json",
               "--concurrency", str(concurrency), "--batch-size", "40"]
        procs = []
        for i in range(senders):
            if i and isinstance(start_next_after, int):
                deadline = time.monotonic() + 60
                while emu.stats()["accepted"] < start_next_after * i and time.monotonic() < deadline:
                    time.sleep(0.02)
            elif i and start_next_after:
                time.sleep(start_next_after)
            procs.append(subprocess.Popen(cmd, env=_env(WINBACK_CALL_LIST_DIR=str(tmp_path / "calls")),
                                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        summaries = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err[-2000:]
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        stats = emu.stats()
    return summaries, stats


def _assert_each_message_once(tmp_path, ledger_url: str, summaries: list[dict], stats: dict, n: int) -> None:
    with Ledger(ledger_url) as ledger:
        status = ledger.status()
    assert status["sent"] == n and status["sending"] == 0 and status["planned"] == 0
    call_keys = []
    for path in (tmp_path / "calls").rglob("*.csv"):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            call_keys += [row["key"] for row in csv.DictReader(fh) if row["key"] != "key"]
    assert len(call_keys) == len(set(call_keys)) == n // 4  # one call-list row per call task, none twice
    assert stats["duplicates"] == 0 and stats["unique_keys"] == stats["accepted"] == n - n // 4
    assert sum(s["sent"] for s in summaries) == n
    assert all(not s["reconciled"] for s in summaries)  # nobody took another sender's live rows
    assert sum(1 for s in summaries if s["sent"]) >= 2  # they really shared the work


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def test_a_second_sender_started_while_the_first_works_sends_nothing_twice(tmp_path, request, backend):
    url = _ledger_url(backend, tmp_path, request)
    # 8 requests in flight at 200 ms each: the first sender needs ~6 s for 240 provider messages, and the
    # second one starts (after ~2 s of imports) while the first holds rows in `sending`.
    summaries, stats = _run_senders(tmp_path, url, senders=2, n=320, start_next_after=20, concurrency=8)
    _assert_each_message_once(tmp_path, url, summaries, stats, 320)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_senders_five_seconds_apart_send_nothing_twice(tmp_path, request, backend):
    url = _ledger_url(backend, tmp_path, request)
    summaries, stats = _run_senders(tmp_path, url, senders=2, n=1200, start_next_after=5.0)
    _assert_each_message_once(tmp_path, url, summaries, stats, 1200)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_three_senders_at_once_send_nothing_twice(tmp_path, request, backend):
    url = _ledger_url(backend, tmp_path, request)
    summaries, stats = _run_senders(tmp_path, url, senders=3, n=1200, start_next_after=None)
    _assert_each_message_once(tmp_path, url, summaries, stats, 1200)


class _CountingChannel:
    """A provider whose lookup takes 5 ms and counts how many lookups run at once (a fake, not a patch)."""

    name = "counting"

    def __init__(self) -> None:
        self.running = self.most = self.calls = 0

    async def send(self, messages):
        raise AssertionError("reconciliation never sends")

    async def lookup(self, key, message=None):
        from winback.channels.base import LookupResult

        self.calls += 1
        found = self.calls % 2
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.005)
        self.running -= 1
        return LookupResult(key, "found" if found else "not_found", provider_message_id="m")


class _OneChannelRouter:
    def __init__(self, channel) -> None:
        self.channel = channel

    def channel_for(self, name):
        return self.channel


def test_reconciling_two_thousand_rows_looks_them_up_concurrently_within_the_bound(tmp_path, templates):
    counting = _CountingChannel()
    with Ledger(f"sqlite:///{tmp_path}/l.db") as ledger:
        ledger.plan(make_plan(2000, channel=["email", "webhook"]))
        ledger.claim(now=T0, limit=2000, lease_s=0, gate=False)
        settings = _settings(_OneChannelRouter(counting), templates, FrozenClock(T0 + pd.Timedelta(minutes=5)),
                             concurrency=32, lookup_settle_s=0.0)
        started = time.monotonic()
        summary = asyncio.run(reconcile_in_flight(ledger, settings))
        elapsed = time.monotonic() - started
        status = ledger.status()
    assert summary.reconciled == {"found": 1000, "not_found": 1000} and counting.calls == 2000
    assert 1 < counting.most <= 32  # concurrent, and never more than the semaphore allows
    assert status["sent"] == 1000 and status["planned"] == 1000 and status["sending"] == 0
    assert elapsed < 20  # one at a time this would be 2,000 × 5 ms of lookups alone
