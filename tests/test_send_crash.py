"""Crash safety of `winback send`: SIGKILL a sending subprocess at ≥10 random moments, then re-run; the
emulator must have seen every ledger key exactly once and every planned message must be sent.

The provider fails 20% of requests (throttled, unavailable, connection dropped after the request).
Each kill costs a process start (pandas, SQLAlchemy, httpx imports): the one-sender variant runs by
default, the `--workers 2` variant is marked `slow` (`make test-slow`, which CI runs).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from test_channels_support import make_plan, write_templates
from winback.channels.emulator import EmulatorServer
from winback.ledger import Ledger

NOW = "2026-11-21T00:00:00Z"
SECRET = "unsubscribe-secret-for-tests"
REPO = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "WINBACK_UNSUBSCRIBE_SECRET": SECRET, "PYTHONPATH": str(REPO / "src"),
            "WINBACK_PUBLIC_URL": "https://events.example.com"}


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_kill_minus_nine_at_random_points_then_rerun_sends_each_key_exactly_once(tmp_path, workers):
    """≥10 SIGKILLs of a sending subprocess at random moments; the final run completes the plan.

    With --workers 2 the killed process is the parent: its sender processes die with it.
    """
    templates = write_templates(tmp_path)
    with EmulatorServer(seed=9, subprocess=True, smtp=False) as emu:
        emu.set_faults(0.2, kinds=("429", "503", "drop"), retry_after="0.05")
        _kill_and_resume(emu, tmp_path, templates, workers)


def _kill_and_resume(emu, tmp_path, templates, workers):
    n = 300
    plan_path = tmp_path / "plan.parquet"
    make_plan(n, channel=["email", "sms", "webhook"]).to_parquet(plan_path)
    ledger_url = f"sqlite:///{tmp_path}/l.db"
    # Only the channels' commands are loaded (not every package's CLI): a faster start per kill.
    runner = ("import sys, typer; from winback.channels import cli; app = typer.Typer(); cli.register(app); "
              "app(sys.argv[1:], prog_name='winback')")
    cmd = [sys.executable, "-c", runner, "send", "--plan", str(plan_path), "--emulator", emu.url,
           "--ledger", ledger_url, "--now", NOW, "--templates", str(templates), "--no-progress", "--json",
           "--batch-size", "10", "--concurrency", "4", "--max-attempts", "10", "--workers", str(workers),
           # The killed sender's process is gone, so its rows are reconciled at once, after the settle
           # time: this emulator answers in microseconds (no latency), half a second is ample.
           "--lookup-settle", "0.5"]
    rng = random.Random(20261123)
    kills = 0
    with httpx.Client() as client:
        def accepted():
            return client.get(f"{emu.url}/_emulator/stats").json()["accepted"]

        while kills < 10:
            before = accepted()
            if before >= n - 20:
                break
            proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            target = before + rng.randint(1, 12)
            deadline = time.monotonic() + 60
            while accepted() < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.02))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
    assert kills >= 10
    final = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    stats = emu.stats()
    status = Ledger(ledger_url).status()
    assert status["sent"] == n and status["sending"] == 0 and status["planned"] == 0
    assert stats["duplicates"] == 0 and stats["unique_keys"] == n == stats["accepted"]
    assert summary["failed_total"] == 0
