"""Prefect overhead: a campaign through the flows vs the same step functions called directly.

Both paths run the zh-CN example campaign on the same demo world (100,000 customers by default):
load and validate → segment → plan → persist to a fresh SQLite ledger → send every due message to
the local emulator (a subprocess, reset between paths). The direct path calls the very functions
the Prefect tasks wrap (`task.fn`), in the same order, without flow runs, task runs or artifacts.
The ephemeral Prefect API is started before timing (a scheduled run talks to a running server);
its start-up time is printed separately.

    .venv/bin/python bench/orchestration.py [--customers 100000]

Last line: {"bench": "orchestration", "customers", "seconds", "direct_seconds", "overhead"}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.chdir(REPO)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("WINBACK_UNSUBSCRIBE_SECRET", "bench-only-secret")
os.environ.setdefault("WINBACK_PUBLIC_URL", "https://winback.example.com")

CAMPAIGN = "campaigns/cn_retail_winback.yaml"
AS_OF = "2026-11-23"
NOW = "2026-11-24T10:30:00+08:00"


def direct(world: str, ledger_url: str, emulator_url: str) -> dict:
    """The campaign flow's steps, called as plain functions (the same tasks' `.fn`, the same engine)."""
    from flows import tasks

    from winback.channels.dispatch import DispatchSummary
    from winback.config import parse_timestamp
    from winback.resources import RunSettings

    now, as_of = parse_timestamp(NOW), parse_timestamp(AS_OF)
    settings = RunSettings.from_env(ledger_url=ledger_url, emulator_url=emulator_url, now=now)
    spec = tasks.load_campaign_task.fn(CAMPAIGN)
    inputs = tasks.load_sources_task.fn(spec, world)
    segments = tasks.segment_task.fn(inputs, as_of)
    plan = tasks.plan_task.fn(spec, inputs, segments, as_of, settings)
    persisted = tasks.persist_plan_task.fn(plan, settings)["new"]
    _, last_orders = tasks.prepare_dispatch_task.fn(spec, world, settings)
    sent, first = 0, True
    while True:
        batch = DispatchSummary.from_dict(tasks.send_batch_task.fn(spec, spec.id, settings, last_orders=last_orders,
                                                                   batch_size=2000, reconcile=first))
        first = False
        sent += batch.sent
        if batch.messages + batch.released + batch.in_doubt + batch.throttled == 0:
            break
    return {"persisted": persisted, "sent": sent}


def through_prefect(world: str, ledger_url: str, emulator_url: str) -> dict:
    """The `winback-campaign` flow (with its dispatch subflow), as `winback run` runs it."""
    from flows.campaign import campaign_flow

    summary = campaign_flow(campaign=CAMPAIGN, as_of=AS_OF, world=world, ledger_url=ledger_url,
                            emulator_url=emulator_url, now=NOW)
    return {"persisted": summary["persisted"], "sent": summary["dispatch"][summary["campaign_id"]]["sent"]}


def main() -> int:
    """Run both paths on one world and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best time of each path counts")
    args = parser.parse_args()

    from prefect import flow

    from winback.channels.emulator import EmulatorServer
    from winback.config import parse_timestamp
    from winback.demo import generate_world, write_world

    work = Path(tempfile.mkdtemp(prefix="wb-orch-"))
    os.environ["WINBACK_CALL_LIST_DIR"] = str(work / "call-lists")
    world = work / "world"
    write_world(generate_world(args.customers, seed=5, as_of=parse_timestamp(AS_OF)), world)

    started = time.perf_counter()
    flow(name="bench-warm-up")(lambda: None)()
    print(f"ephemeral Prefect API start-up: {time.perf_counter() - started:.1f} s (not counted)", flush=True)

    # Alternate the paths (the first run of anything pays for imports and cold caches) and keep the
    # best time of each.
    figures: dict[str, float] = {}
    with EmulatorServer(smtp=False, subprocess=True) as emulator:
        for rnd in range(1, args.rounds + 1):
            for name, path in (("direct", direct), ("prefect", through_prefect)):
                emulator.reset()
                ledger_url = f"sqlite:///{work / f'ledger-{name}-{rnd}.db'}"
                t0 = time.perf_counter()
                result = path(str(world), ledger_url, emulator.url)
                seconds = time.perf_counter() - t0
                stats = emulator.stats()
                figures[name] = min(seconds, figures.get(name, float("inf")))
                print(f"round {rnd} {name:>8}: {seconds:6.1f} s · persisted {result['persisted']:,} · "
                      f"sent {result['sent']:,} · emulator {stats['accepted']:,} accepted, "
                      f"{stats['duplicates']} duplicates", flush=True)
    overhead = (figures["prefect"] - figures["direct"]) / figures["prefect"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Prefect overhead: {overhead:.1%} of the flow's wall time (target ≤ 10%); peak RSS {peak:,.0f} MB")
    print(json.dumps({"bench": "orchestration", "customers": args.customers, "seconds": round(figures["prefect"], 2),
                      "direct_seconds": round(figures["direct"], 2), "overhead": round(overhead, 4),
                      "peak_rss_mb": round(peak)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
