"""The Prefect flows end to end, under one prefect_test_harness, against the emulator over real HTTP.

A small demo world (a few hundred customers) runs the zh-CN example campaign: plan → ledger → send,
re-runs send nothing, quiet hours defer but never drop, later cadence steps skip customers who came
back, a killed flow run resumes without duplicates, and the runs and artifacts are readable through
the Prefect API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from winback.config import parse_timestamp

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = str(REPO / "campaigns" / "cn_retail_winback.yaml")
AS_OF = "2026-11-23"
MORNING = "2026-11-24T10:30:00+08:00"  # inside every quiet-hours window in Shanghai


@pytest.fixture(autouse=True)
def _secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("WINBACK_UNSUBSCRIBE_SECRET", "test-unsubscribe-secret")
    monkeypatch.setenv("WINBACK_PUBLIC_URL", "https://winback.example.com")
    monkeypatch.setenv("WINBACK_CALL_LIST_DIR", str(tmp_path / "call-lists"))


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    from winback.demo import generate_world, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(700, seed=11, as_of=parse_timestamp(AS_OF)), out)
    return out


@pytest.fixture()
def fresh_world(world_dir, tmp_path) -> Path:
    """A private copy of the world (simulated returns append to its orders)."""
    import shutil

    copy = tmp_path / "world"
    shutil.copytree(world_dir, copy)
    return copy


@pytest.fixture()
def ledger_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture()
def emulator():
    from winback.channels.emulator import EmulatorServer

    with EmulatorServer(smtp=False) as emu:
        yield emu


def _ledger(url):
    from winback.ledger import Ledger

    return Ledger(url)


def _sent_to_providers(url) -> int:
    """Messages the ledger says went to a provider (call tasks go to call lists, not to the emulator)."""
    rows = _ledger(url).rows()
    return int(((rows["state"] == "sent") & (rows["channel"] != "call_task")).sum())


def test_campaign_end_to_end_then_rerun_sends_nothing(prefect_harness, world_dir, ledger_url, emulator):
    from flows.campaign import campaign_flow

    first = campaign_flow(campaign=CAMPAIGN, as_of=AS_OF, world=str(world_dir), ledger_url=ledger_url,
                          emulator_url=emulator.url, now=MORNING)
    status = _ledger(ledger_url).status(first["campaign_id"])
    assert first["persisted"] == sum(status.values()), (first, status)
    assert status.get("sent", 0) > 20 and status.get("held_out", 0) > 0
    stats = emulator.stats()
    assert stats["duplicates"] == 0
    assert stats["unique_keys"] == _sent_to_providers(ledger_url)

    second = campaign_flow(campaign=CAMPAIGN, as_of=AS_OF, world=str(world_dir), ledger_url=ledger_url,
                           emulator_url=emulator.url, now=MORNING)
    assert second["persisted"] == 0
    assert emulator.stats()["accepted"] == stats["accepted"]
    assert _ledger(ledger_url).status(first["campaign_id"]) == status


def test_flow_runs_and_artifacts_are_readable_through_the_api(prefect_harness, world_dir, ledger_url, emulator):
    import asyncio

    from flows.artifacts import artifact_key
    from flows.campaign import campaign_flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter
    from prefect.client.schemas.sorting import ArtifactSort

    summary = campaign_flow(campaign=CAMPAIGN, as_of=AS_OF, world=str(world_dir), ledger_url=ledger_url,
                            emulator_url=emulator.url, now=MORNING, dry_run=True)
    key = artifact_key(summary["campaign_id"], "plan")

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(), limit=50)
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC,
                limit=5)
            return runs, artifacts

    runs, artifacts = asyncio.run(read())
    names = [r.name for r in runs]
    assert any(n.startswith("老客回流 · 2026 冬季挽回 · 2026-11-23") for n in names), names
    assert artifacts, f"no artifact {key!r}"
    assert "Exclusions by reason" in artifacts[0].data and "dry run" in artifacts[0].data


def test_quiet_hours_defer_sends_never_drop_them(prefect_harness, world_dir, ledger_url, emulator):
    from flows.campaign import campaign_flow
    from flows.dispatch import dispatch_flow

    night = "2026-11-24T02:00:00+08:00"  # 02:00 in Shanghai: nobody there may be messaged now
    summary = campaign_flow(campaign=CAMPAIGN, as_of=AS_OF, world=str(world_dir), ledger_url=ledger_url,
                            emulator_url=emulator.url, now=night)
    rows = _ledger(ledger_url).rows(summary["campaign_id"])
    treated = rows[rows["arm"] == "treatment"]
    shanghai = treated[treated["timezone"] == "Asia/Shanghai"]
    assert len(shanghai) > 10
    assert (shanghai["state"] == "planned").all(), "a Shanghai customer was messaged at 02:00 local"
    local = pd.to_datetime(shanghai["send_at_utc"], utc=True).dt.tz_convert("Asia/Shanghai")
    assert (local.dt.hour >= 9).all()

    # 21:00 is the end of the email window (09:00–21:00, end excluded): the gate defers, never drops.
    dispatch_flow(campaign=CAMPAIGN, now="2026-11-24T21:00:00+08:00", world=str(world_dir),
                  ledger_url=ledger_url, emulator_url=emulator.url)
    late = _ledger(ledger_url).rows(summary["campaign_id"])
    late_sh = late[(late["arm"] == "treatment") & (late["timezone"] == "Asia/Shanghai")]
    assert (late_sh["state"] == "planned").all(), "a Shanghai customer was messaged at 21:00 local"
    assert (late_sh["gate_reason"] == "quiet_hours").all()

    dispatch_flow(campaign=CAMPAIGN, now="2026-11-25T17:00:00+08:00", world=str(world_dir),
                  ledger_url=ledger_url, emulator_url=emulator.url)
    after = _ledger(ledger_url).rows(summary["campaign_id"])
    step1 = after[(after["arm"] == "treatment") & (after["step"].astype(int) == 1)]
    sh = step1[step1["timezone"] == "Asia/Shanghai"]
    assert set(sh["state"]) <= {"sent", "failed", "suppressed"}
    # Elsewhere it is night at 17:00 Shanghai time: still planned, due at the next local opening.
    waiting = step1[step1["state"] == "planned"]
    assert (pd.to_datetime(waiting["send_at_utc"], utc=True) > parse_timestamp("2026-11-25T17:00:00+08:00")).all()
    assert len(step1) == len(_ledger(ledger_url).rows(summary["campaign_id"]).query("arm == 'treatment' and step == 1"))
    assert _sent_to_providers(ledger_url) == emulator.stats()["unique_keys"]


def test_cadence_skips_customers_who_came_back(prefect_harness, fresh_world, ledger_url, emulator):
    from flows.campaign import campaign_flow
    from flows.dispatch import dispatch_flow

    summary = campaign_flow(campaign=CAMPAIGN, as_of=AS_OF, world=str(fresh_world), ledger_url=ledger_url,
                            emulator_url=emulator.url, now=MORNING)
    cid = summary["campaign_id"]
    rows = _ledger(ledger_url).rows(cid)
    sent = rows[(rows["state"] == "sent") & (rows["step"].astype(int) == 1) & (rows["channel"] != "call_task")]
    assert len(sent) > 10
    # Half of the contacted customers order the day after their message.
    returners = sent.iloc[::2]
    orders = pd.read_parquet(fresh_world / "orders.parquet")
    new = pd.DataFrame({
        "order_id": [f"R-{c}" for c in returners["customer_id"]],
        "customer_id": returners["customer_id"].astype(str).to_numpy(),
        "ordered_at": pd.to_datetime(returners["sent_at"], utc=True) + pd.Timedelta(days=1),
        "amount": 120.0, "category": orders["category"].iloc[0], "discount": 0.0, "coupon_code": None,
    })
    pd.concat([orders, new.astype({c: orders[c].dtype for c in new.columns if c in orders})],
              ignore_index=True).to_parquet(fresh_world / "orders.parquet", index=False)

    # Three days and a quarter of an hour after the first send (the next 15-minute dispatch).
    dispatch_flow(campaign=CAMPAIGN, now="2026-11-27T10:45:00+08:00", world=str(fresh_world),
                  ledger_url=ledger_url, emulator_url=emulator.url)
    after = _ledger(ledger_url).rows(cid)
    step2 = after[after["step"].astype(int) == 2]
    assert len(step2) > 0, "step 2 was never planned"
    contacted_again = set(step2.loc[step2["arm"] == "treatment", "customer_id"].astype(str))
    assert not contacted_again & set(returners["customer_id"].astype(str))
    stayed_away = set(sent["customer_id"].astype(str)) - set(returners["customer_id"].astype(str))
    assert contacted_again & stayed_away, "nobody who stayed away got step 2"
    assert emulator.stats()["duplicates"] == 0


def test_killed_flow_run_resumes_and_sends_every_message_exactly_once(prefect_harness, world_dir, ledger_url,
                                                                     tmp_path):
    from flows.dispatch import dispatch_flow

    from winback.channels.emulator import EmulatorServer

    # The killed run uses its own ephemeral Prefect API (killed with it, process group and all), so
    # its concurrency slot dies with it; the resuming run uses the session's test API.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONUNBUFFERED="1")
    with EmulatorServer(smtp=False, latency_ms=40, subprocess=True) as emulator:
        cmd = [sys.executable, "-m", "winback.cli", "run", CAMPAIGN, "--as-of", AS_OF, "--world", str(world_dir),
               "--ledger", ledger_url, "--emulator", emulator.url, "--now", MORNING]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while emulator.stats()["accepted"] < 15 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        before = emulator.stats()["accepted"]
        ledger = _ledger(ledger_url)
        cid = ledger.campaigns()[0]
        interrupted = ledger.status(cid)
        assert interrupted.get("planned", 0) + interrupted.get("sending", 0) > 0, \
            "the kill came too late to interrupt sending"

        dispatch_flow(campaign=CAMPAIGN, now=MORNING, world=str(world_dir), ledger_url=ledger_url,
                      emulator_url=emulator.url)
        stats = emulator.stats()
        status = ledger.status(cid)
    assert stats["duplicates"] == 0
    assert stats["accepted"] >= before
    assert status.get("sending", 0) == 0
    # What is still planned is night where its customer lives (New York, London): deferred by the
    # send-time gate to their next local opening, never dropped.
    left = ledger.rows(cid).query("state == 'planned'")
    assert (left["gate_reason"] == "quiet_hours").all() and (left["timezone"] != "Asia/Shanghai").all()
    assert (pd.to_datetime(left["send_at_utc"], utc=True) > parse_timestamp(MORNING)).all()
    assert stats["unique_keys"] == _sent_to_providers(ledger_url)
