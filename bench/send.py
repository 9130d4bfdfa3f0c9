"""Benchmark: `winback send` (render + ledger + exactly-once protocol) against the local emulator, with
same-run baselines posting the same SendGrid payloads at the same concurrency through bare loops:
aiohttp (the fastest client measured here), plain httpx (default transport) and httpx over
httpx-aiohttp's AiohttpTransport (the transport winback uses; the transport-choice figure).

The emulator runs in its own process, `winback send` in another (so neither shares the bench's event
loop); the bare loops run here. `winback send` runs twice, each on a fresh ledger: as one process
(`--workers 1`) and with `--workers` sender processes (default 2, the machine's cores; the same
total concurrency, split between them), the latter in `--rounds` rounds interleaved with the bare
aiohttp loop: each round's ratio is against the faster aiohttp run right before or after it, and
`msgs_per_s`, `baseline_msgs_per_s` and `ratio` are medians over the rounds. The single-process
figures are reported beside them. Last line: one JSON object.

    .venv/bin/python bench/send.py [--messages 20000] [--concurrency 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from winback.channels.emulator import SENDGRID_KEY, EmulatorServer  # noqa: E402
from winback.policy.gate import SendRules  # noqa: E402

NOW = "2026-11-21T00:00:00Z"
SECRET = "bench-unsubscribe-secret"
TEMPLATES = {
    "bench/en-US/email.subject": "We miss you, {{ customer.first_name }}",
    "bench/en-US/email.html": "<p>Hello {{ customer.first_name }}, {{ offer.percent }}% off with "
                              "<b>{{ coupon_code }}</b>.</p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>",
    "bench/en-US/email.txt": "Hello {{ customer.first_name }}, {{ offer.percent }}% off with {{ coupon_code }}.\n"
                             "Unsubscribe: {{ unsubscribe_url }}",
    "bench/zh-CN/email.subject": "{{ customer.first_name }}，好久不见",
    "bench/zh-CN/email.html": "<p>{{ customer.first_name }}您好，{{ coupon_code }} 立享 {{ offer.percent }}% 优惠</p>"
                              "<p><a href=\"{{ unsubscribe_url }}\">退订</a></p>",
    "bench/zh-CN/email.txt": "{{ customer.first_name }}您好，{{ coupon_code }} 立享 {{ offer.percent }}% 优惠\n"
                             "退订：{{ unsubscribe_url }}",
}


def write_templates(root: Path) -> Path:
    """The benchmark's templates folder."""
    for rel, text in TEMPLATES.items():
        path = root / "templates" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "templates"


def make_plan(n: int) -> pd.DataFrame:
    """n treatment email rows shaped like `build_plan`'s output."""
    ids = [f"B{i:07d}" for i in range(n)]
    locales = ["zh-CN" if i % 2 else "en-US" for i in range(n)]
    contexts = [json.dumps({"customer": {"customer_id": c, "first_name": "小明" if loc == "zh-CN" else "Ann",
                                         "locale": loc}, "offer": {"id": "p15", "kind": "percent_off", "percent": 15},
                            "coupon_code": f"WB{i:07d}", "history": {}, "brand": {"name": "Club"},
                            "survey_url": None, "step": 1}, ensure_ascii=False)
                for i, (c, loc) in enumerate(zip(ids, locales, strict=True))]
    return pd.DataFrame({
        "campaign_id": "bench", "customer_id": ids, "step": 1, "arm": "treatment", "reason": "eligible",
        "channel": "email", "to_address": [f"{c.lower()}@example.com" for c in ids],
        "send_at_utc": pd.Timestamp("2026-11-20T02:00:00Z"), "send_at_local": "2026-11-20T10:00:00+08:00",
        "timezone": "Asia/Shanghai", "locale": locales, "offer": "p15", "offer_kind": "percent_off",
        "template": "bench", "coupon_code": [f"WB{i:07d}" for i in range(n)], "value_tier": "gold",
        "lapse_stage": "lapsed", "likely_reason": "forgotten", "account_manager": None, "context": contexts,
        "as_of": pd.Timestamp("2026-11-19T00:00:00Z"),
        # The send-time gate is on: every claim checks the local window and counts the customers'
        # messages across campaigns against the caps (all pass here, so every message is sent).
        "send_rules": SendRules(window=("00:00", "23:59"), caps=(("email", 2, 14), ("any", 3, 14)),
                                if_not_returned=True).to_json(),
    })


def payloads(plan: pd.DataFrame, templates: Path) -> list[bytes]:
    """The exact SendGrid bodies winback posts for the plan (rendered the same way)."""
    from pydantic import SecretStr

    from winback.channels.dispatch import SendSettings, build_message
    from winback.channels.sendgrid import SendGridChannel
    from winback.render import Renderer

    settings = SendSettings(router=None, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                            public_url="https://events.example.com", unsubscribe_mailto="unsubscribe@example.com",
                            sender_email="club@example.com", sender_name="Winback Club")
    channel = SendGridChannel(None, SecretStr(SENDGRID_KEY))  # type: ignore[arg-type]
    return [json.dumps(channel.payload(build_message(row, settings))).encode()
            for row in plan.to_dict("records")]


CPU_S: dict[str, float] = {}  # client CPU seconds (user + system) per loop: a figure the machine's load moves less


async def _drive(post, bodies: list[bytes], concurrency: int, name: str) -> float:
    queue = iter(bodies)
    started, cpu = time.perf_counter(), time.process_time()

    async def worker():
        for body in queue:
            await post(body)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    CPU_S[name] = time.process_time() - cpu
    return time.perf_counter() - started


async def bare_aiohttp(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Seconds for a bare aiohttp loop to post every body."""
    import aiohttp

    headers = {"Authorization": f"Bearer {SENDGRID_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def post(body):
            async with session.post(f"{url}/v3/mail/send", data=body, headers=headers) as response:
                await response.read()
                assert response.status == 202, response.status

        return await _drive(post, bodies, concurrency, "aiohttp")


async def bare_httpx(url: str, bodies: list[bytes], concurrency: int, transport: str) -> float:
    """Seconds for a bare httpx loop (default transport or AiohttpTransport) to post every body."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if transport == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30)
    elif transport == "winback":
        from winback.channels.transport import AiohttpTransport as WinbackTransport

        client = httpx.AsyncClient(transport=WinbackTransport(limits=limits), timeout=30)
    else:
        client = httpx.AsyncClient(limits=limits, timeout=30)
    headers = {"Authorization": f"Bearer {SENDGRID_KEY}", "Content-Type": "application/json"}
    async with client:
        async def post(body):
            response = await client.post(f"{url}/v3/mail/send", content=body, headers=headers)
            assert response.status_code == 202, response.status_code

        return await _drive(post, bodies, concurrency, f"httpx-{transport}")


def run_winback_send(url: str, plan_path: Path, templates: Path, ledger: str, concurrency: int,
                     batch_size: int, transport: str, workers: int = 1) -> dict:
    """`winback send` in a subprocess; returns its JSON summary plus the process wall time."""
    env = {**os.environ, "WINBACK_UNSUBSCRIBE_SECRET": SECRET, "WINBACK_PUBLIC_URL": "https://events.example.com",
           "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "winback.cli", "send", "--plan", str(plan_path), "--emulator", url,
           "--ledger", ledger, "--now", NOW, "--templates", str(templates), "--concurrency", str(concurrency),
           "--batch-size", str(batch_size), "--transport", transport, "--no-progress", "--json",
           "--workers", str(workers)]
    import resource

    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the emulator child is still running: not counted
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - started
    CPU_S["winback"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode != 0:
        raise SystemExit(f"winback send failed ({out.returncode}): {out.stderr[-3000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary["process_wall_s"] = wall
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--transport", default="aiohttp", choices=["aiohttp", "httpx"])
    parser.add_argument("--workers", type=int, default=2, help="sender processes of the main winback send run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved aiohttp / winback send rounds")
    args = parser.parse_args()
    n, c = args.messages, args.concurrency

    with tempfile.TemporaryDirectory() as tmp_name, EmulatorServer(subprocess=True, smtp=False) as emu:
        tmp = Path(tmp_name)
        templates = write_templates(tmp)
        plan = make_plan(n)
        plan_path = tmp / "plan.parquet"
        plan.to_parquet(plan_path)
        bodies = payloads(plan, templates)
        print(f"{n} messages, concurrency {c}, emulator {emu.url} (own process, uvicorn+httptools)", flush=True)

        # The bare loops run on the same event loop as winback send (asyncio; WINBACK_EVENT_LOOP=uvloop for uvloop),
        # and with the same garbage-collector setting `winback send` uses (heap frozen, young generation of
        # 50,000): the baselines get every process-level advantage winback gets.
        import gc

        from winback.channels.dispatch import run_async

        gc.collect()
        gc.freeze()
        gc.set_threshold(max(gc.get_threshold()[0], 50_000), *gc.get_threshold()[1:])

        emu.reset()
        aio_s = run_async(bare_aiohttp(emu.url, bodies, c))
        aio_cpu = CPU_S["aiohttp"]
        assert emu.stats()["accepted"] == n
        print(f"bare aiohttp loop:              {n / aio_s:8.0f} msgs/s ({aio_s:.2f} s)", flush=True)

        emu.reset()
        hx_s = run_async(bare_httpx(emu.url, bodies, c, "default"))
        print(f"bare httpx loop (default):      {n / hx_s:8.0f} msgs/s ({hx_s:.2f} s)", flush=True)

        emu.reset()
        hxa_s = run_async(bare_httpx(emu.url, bodies, c, "httpx-aiohttp"))
        print(f"bare httpx + httpx_aiohttp:     {n / hxa_s:8.0f} msgs/s ({hxa_s:.2f} s)", flush=True)

        emu.reset()
        hxw_s = run_async(bare_httpx(emu.url, bodies, c, "winback"))
        print(f"bare httpx + winback transport: {n / hxw_s:8.0f} msgs/s ({hxw_s:.2f} s)", flush=True)

        emu.reset()
        single = run_winback_send(emu.url, plan_path, templates, f"sqlite:///{tmp}/ledger-1.db", c,
                                  args.batch_size, args.transport, workers=1)
        single_cpu = CPU_S["winback"]
        assert single["sent"] == n and emu.stats()["duplicates"] == 0, single
        print(f"winback send, 1 process:        {single['msgs_per_s']:8.0f} msgs/s ({single['seconds']:.2f} s)",
              flush=True)
        # The machine is shared and noisy (the bare aiohttp loop moved between 3,500 and 7,000 msgs/s
        # from one minute to the next here): `--rounds` rounds of aiohttp → winback send, closed by a
        # last aiohttp run. Each round's ratio is taken against the faster of the aiohttp runs right
        # before and right after it (conservative); the reported figures are the medians.
        import statistics

        emu.reset()
        aio_runs = [run_async(bare_aiohttp(emu.url, bodies, c))]
        aio_cpu = min(aio_cpu, CPU_S["aiohttp"])
        wb_runs, ratios, summary = [], [], single
        for r in range(args.rounds):
            emu.reset()
            summary = run_winback_send(emu.url, plan_path, templates, f"sqlite:///{tmp}/ledger-{args.workers}-{r}.db",
                                       c, args.batch_size, args.transport, workers=args.workers)
            stats = emu.stats()
            assert summary["sent"] == n, summary
            assert stats["accepted"] == n and stats["duplicates"] == 0, stats
            emu.reset()
            aio_runs.append(run_async(bare_aiohttp(emu.url, bodies, c)))
            aio_cpu = min(aio_cpu, CPU_S["aiohttp"])
            baseline = n / min(aio_runs[-2], aio_runs[-1])
            wb_runs.append(summary["msgs_per_s"])
            ratios.append(summary["msgs_per_s"] / baseline)
            print(f"round {r + 1}: winback send ({args.workers} processes) {summary['msgs_per_s']:8.0f} msgs/s, "
                  f"bare aiohttp before/after {n / aio_runs[-2]:.0f}/{n / aio_runs[-1]:.0f}, "
                  f"ratio {ratios[-1]:.3f}", flush=True)
        ratio = statistics.median(ratios)
        aio_s = n / statistics.median(n / min(a, b) for a, b in zip(aio_runs, aio_runs[1:], strict=False))
        wb = statistics.median(wb_runs)
        print(f"winback send ({args.transport} transport, {args.workers} sender processes): {wb:8.0f} msgs/s ({summary['seconds']:.2f} s in dispatch: "
              f"plan persisted, rendered, claimed, sent, recorded; {summary['process_wall_s']:.2f} s wall "
              f"with interpreter start and plan read = {n / summary['process_wall_s']:.0f} msgs/s)", flush=True)
        print(f"emulator: accepted {stats['accepted']}, unique keys {stats['unique_keys']}, "
              f"duplicates {stats['duplicates']}", flush=True)
        # Client CPU per message: winback's whole process (interpreter start, plan read, ledger thread
        # included) against the bare loops' own CPU while they ran.
        cpu_ms = {k: round(1000 * v / n, 3) for k, v in
                  {"aiohttp": aio_cpu, "httpx": CPU_S["httpx-default"], "winback": CPU_S["winback"]}.items()}
        print(f"client CPU per message: aiohttp {cpu_ms['aiohttp']} ms, httpx {cpu_ms['httpx']} ms, "
              f"winback send {cpu_ms['winback']} ms (process total)", flush=True)

    result = {
        "bench": "send", "messages": n, "concurrency": c, "transport": args.transport,
        "msgs_per_s": round(wb, 1), "baseline_msgs_per_s": round(n / aio_s, 1), "ratio": round(ratio, 3),
        "rounds": [round(x, 3) for x in ratios],
        "httpx_msgs_per_s": round(n / hx_s, 1), "ratio_httpx": round(wb / (n / hx_s), 3),
        "httpx_aiohttp_transport_msgs_per_s": round(n / hxa_s, 1),
        "httpx_winback_transport_msgs_per_s": round(n / hxw_s, 1),
        "workers": args.workers, "single_process_msgs_per_s": round(single["msgs_per_s"], 1),
        "single_process_ratio": round(single["msgs_per_s"] / (n / aio_s), 3),
        "single_process_cpu_ms_per_msg": round(1000 * single_cpu / n, 3),
        "wall_msgs_per_s": round(n / summary["process_wall_s"], 1), "duplicates": stats["duplicates"],
        "event_loop": os.environ.get("WINBACK_EVENT_LOOP", "asyncio"),
        "cpu_ms_per_msg": cpu_ms, "cpu_ratio": round(cpu_ms["aiohttp"] / cpu_ms["winback"], 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
