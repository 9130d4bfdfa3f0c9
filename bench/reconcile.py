"""Reconciling a crashed run's 2,000 in-flight rows: how long before a restarted sender can send again.

A run claims 2,000 rows (email, SMS, webhook, call task) and dies after handing half of them to the
providers (the local emulator, a subprocess). The next run takes the lapsed rows over, looks each one up
at its provider (concurrently, bounded by the semaphore) and writes the outcomes in three batched
updates. Baseline, in the same run on a fresh copy of the same ledger: every row rendered again before
its lookup, as reconciliation did before (only Twilio matches by body and needs it).

    .venv/bin/python bench/reconcile.py [--rows 2000] [--rounds 3]

Last line: {"bench": "reconcile", "rows", "seconds", "baseline_seconds", "found", "not_found", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.chdir(REPO)

NOW = "2026-11-21T00:00:00Z"
SECRET = "bench-only-secret"


def crashed_ledger(folder: Path, rows: int, emulator_url: str) -> Path:
    """A SQLite ledger with `rows` claimed rows whose lease lapsed, half of them accepted by the emulator."""
    from pydantic import SecretStr

    from test_channels_support import make_plan, write_templates
    from winback.channels.dispatch import SendSettings, build_message
    from winback.channels.providers import Router, provider_config_for_emulator
    from winback.ledger import Ledger
    from winback.render import Renderer

    templates = write_templates(folder)
    path = folder / "ledger.db"
    with Ledger(f"sqlite:///{path}") as ledger:
        ledger.plan(make_plan(rows, channel=["email", "sms", "webhook", "call_task"]))
        claimed = ledger.claim(now=NOW, limit=rows, lease_s=0, gate=False)
    config = provider_config_for_emulator(emulator_url, out_dir=str(folder / "calls"))

    async def hand_over_half():
        async with Router(config) as router:
            settings = SendSettings(router=router, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                                    public_url="https://events.example.com")
            for row in claimed.iloc[::2].to_dict("records"):
                [result] = await router.channel_for(row["channel"]).send([build_message(row, settings)])
                assert result.status == "accepted", result

    asyncio.run(hand_over_half())
    return path


def reconcile(path: Path, emulator_url: str, folder: Path, *, render_all: bool) -> tuple[float, dict]:
    """Time one reconciliation of the ledger at `path`; `render_all` renders every row before its lookup."""
    from pydantic import SecretStr

    from winback.channels.dispatch import SendSettings, reconcile_in_flight
    from winback.channels.providers import Router, provider_config_for_emulator
    from winback.clock import Clock
    from winback.ledger import Ledger
    from winback.render import Renderer

    config = provider_config_for_emulator(emulator_url, out_dir=str(folder / "calls"))

    class EveryBody(Router):  # the baseline: what reconciliation rendered before (every message)
        def channel_for(self, channel):
            adapter = super().channel_for(channel)
            adapter.lookup_needs_body = True
            return adapter

    async def go():
        async with (EveryBody if render_all else Router)(config) as router:
            settings = SendSettings(router=router, renderer=Renderer(folder / "templates"),
                                    unsubscribe_secret=SecretStr(SECRET), public_url="https://events.example.com",
                                    concurrency=64, lookup_settle_s=0.0, clock=Clock.starting_at(NOW))
            with Ledger(f"sqlite:///{path}") as ledger:
                started = time.perf_counter()
                summary = await reconcile_in_flight(ledger, settings)
                return time.perf_counter() - started, summary

    seconds, summary = asyncio.run(go())
    return seconds, dict(summary.reconciled)


def main() -> None:
    from winback.channels.emulator import EmulatorServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"engine": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(seed=1, smtp=False, subprocess=True) as emu:
        folder = Path(tmp)
        master = crashed_ledger(folder, args.rows, emu.url)
        found = {}
        for _ in range(args.rounds):  # adjacent pairs, on fresh copies of the same crashed ledger
            for label, render_all in (("baseline", True), ("engine", False)):
                copy = folder / f"{label}.db"
                shutil.copyfile(master, copy)
                seconds, found = reconcile(copy, emu.url, folder, render_all=render_all)
                results[label].append(seconds)
                assert sum(found.values()) == args.rows, found
    best = {label: min(values) for label, values in results.items()}
    print(f"reconcile {args.rows} in-flight rows (half accepted before the crash), {args.rounds} rounds:")
    for label in ("baseline", "engine"):
        print(f"  {label:8s}  best {best[label]:.2f} s  median {statistics.median(results[label]):.2f} s  "
              f"({args.rows / best[label]:,.0f} rows/s)")
    print(json.dumps({"bench": "reconcile", "rows": args.rows, "seconds": round(best["engine"], 3),
                      "baseline_seconds": round(best["baseline"], 3), "found": found.get("found", 0),
                      "not_found": found.get("not_found", 0), "rounds": args.rounds}))


if __name__ == "__main__":
    main()
