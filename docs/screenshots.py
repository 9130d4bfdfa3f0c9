"""Regenerate docs/img/*.png: the Prefect UI as a CRM lead sees it, from a real local server.

Runs what the README's "With a work pool" section describes, on free local ports and a temporary
PREFECT_HOME: `prefect server start`, a process work pool, `prefect deploy --all`, a worker with
WINBACK_EMULATOR_URL, then the campaign, dispatch and measure deployments, and takes screenshots of
the runs list, the campaign run and the uplift artifact in headless Chromium (Debian's `chromium`).
Needs a `make demo` output (demo-out/: its ledger and world, with the simulated returns) so the
uplift report has a return window to show.

    .venv/bin/python docs/screenshots.py
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUT = REPO / "docs" / "img"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(env, cwd, *args) -> str:
    out = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise SystemExit(f"prefect {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def _wait(api: str, run_id: str) -> dict:
    for _ in range(600):
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise SystemExit(f"flow run {run_id} did not finish")


def _deployment_run(api, env, cwd, target, *params) -> dict:
    args = ["deployment", "run", target]
    for p in params:
        args += ["--param", p]
    out = _run(env, cwd, *args)
    run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
    run = _wait(api, run_id)
    print(f"{target}: {run['name']} → {run['state_type']}", flush=True)
    return run


def _shot(url: str, path: Path, *, width: int = 1400, height: int = 1000) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", "--virtual-time-budget=15000",
                    f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    print(f"wrote {path}", flush=True)


def main() -> int:
    demo = REPO / "demo-out"
    if not (demo / "ledger.db").exists():
        raise SystemExit("run `make demo` first (docs/screenshots.py shows its measured campaign)")
    from winback.channels.emulator import EmulatorServer

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        site = tmp / "site"
        for folder in ("campaigns", "templates", "flows", "deployments"):
            shutil.copytree(REPO / folder, site / folder, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(demo / "world", site / "demo-out" / "world")
        shutil.copy(demo / "ledger.db", site / "ledger.db")
        port = _free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(tmp / "home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1", PREFECT_WORKER_QUERY_SECONDS="2", WINBACK_HOME=str(site),
                   PREFECT_UI_API_URL=api, PATH=f"{BIN}:{env.get('PATH', '')}")
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        worker = None
        try:
            from flows.serve import _wait_healthy

            _wait_healthy(api)
            _run(env, site, "work-pool", "create", "winback", "--type", "process")
            _run(env, site, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
            with EmulatorServer(smtp=False, subprocess=True) as emulator:
                worker_env = {**env, "WINBACK_EMULATOR_URL": emulator.url,
                              "WINBACK_LEDGER_URL": f"sqlite:///{site / 'ledger.db'}",
                              "WINBACK_UNSUBSCRIBE_SECRET": "screenshots-only", "WINBACK_CALL_LIST_DIR": str(tmp / "calls"),
                              "WINBACK_PUBLIC_URL": "https://winback.example.com"}
                worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "winback"], env=worker_env,
                                          cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
                campaign = _deployment_run(api, env, site, "winback-campaign/cn-retail-daily", "as_of=2026-11-23",
                                           "now=2026-11-24T09:30:00+08:00")
                _deployment_run(api, env, site, "winback-dispatch/every-15-minutes", "now=2026-11-25T11:00:00+08:00")
                _deployment_run(api, env, site, "winback-measure/daily-report", "campaign=cn-retail-winback-2026w",
                                "as_of=2026-12-25T12:00:00+08:00")
                ui = f"http://127.0.0.1:{port}"
                _shot(f"{ui}/runs", OUT / "ui-runs.png")
                _shot(f"{ui}/runs/flow-run/{campaign['id']}", OUT / "ui-campaign-run.png")
                artifacts = httpx.post(f"{api}/artifacts/filter", json={"limit": 50}, timeout=10).json()
                by_key = {}
                for a in artifacts:
                    by_key.setdefault(a["key"], a)
                _shot(f"{ui}/artifacts/artifact/{by_key['cn-retail-winback-2026w-plan']['id']}",
                      OUT / "ui-plan-artifact.png")
                _shot(f"{ui}/artifacts/artifact/{by_key['cn-retail-winback-2026w-uplift']['id']}",
                      OUT / "ui-uplift-artifact.png", height=2200)
        finally:
            for proc in (worker, server):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
