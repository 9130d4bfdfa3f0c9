"""The Prefect path as a user takes it, on a real server (not the test harness).

`prefect server start` on a free local port with its own PREFECT_HOME, a process work pool,
`prefect deploy --all --prefect-file deployments/prefect.yaml` from a copy of the checkout, a worker
with WINBACK_EMULATOR_URL set, then: (a) the server's scheduler creates scheduled runs by itself
(it did not with SQLAlchemy 2.1), (b) the campaign, dispatch and measure deployments run with the
README's parameters and end Completed, with 0 duplicate sends at the emulator, (c) the artifacts are
readable through the API, and a run with no provider configured fails at once with one clear line.
Bounded in time; every process is stopped by its process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from winback.config import parse_timestamp

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AS_OF = "2026-11-23"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A copy of what a deployment needs from the checkout, with a small demo world where the example
    campaign's `sources:` point (../demo-out/world)."""
    from winback.demo import generate_world, write_world

    root = tmp_path_factory.mktemp("site")
    for folder in ("campaigns", "templates", "flows", "deployments"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_world(generate_world(400, seed=3, as_of=parse_timestamp(AS_OF)), root / "demo-out" / "world")
    return root


@pytest.fixture(scope="module")
def server(site, tmp_path_factory):
    """`prefect server start` on a free port; yields (api_url, env)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5",
               PREFECT_LOGGING_LEVEL="INFO", PATH=f"{BIN}:{env.get('PATH', '')}")
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from flows.serve import _wait_healthy

        try:
            _wait_healthy(api, timeout=120)
        except SystemExit as exc:
            pytest.fail(f"{exc}\n{(home / 'server.log').read_text()[-3000:]}")
        yield api, env, home
    finally:
        _stop(proc)
        log.close()
        errors = [line for line in (home / "server.log").read_text().splitlines()
                  if "Can't evaluate bulk DML" in line]
        assert not errors, f"the server's scheduler failed: {errors[0]}"


def _prefect(env, cwd, *args, timeout=180) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _runs(api: str, **flt) -> list[dict]:
    body = {"limit": 200, **({"flow_runs": flt} if flt else {})}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def _deployment_id(api: str, flow: str, name: str) -> str:
    return httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=10).json()["id"]


def _wait_final(api: str, run_id: str, seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    pytest.fail(f"flow run {run_id} did not finish in {seconds} s")


def _run_deployment(api, env, site, target: str, *params: str) -> dict:
    args = ["deployment", "run", target]
    for p in params:
        args += ["--param", p]
    out = _prefect(env, site, *args, timeout=60)
    run_id = next(line.split()[-1] for line in out.stdout.splitlines() if "UUID" in line)
    return _wait_final(api, run_id)


def test_deploy_worker_schedules_and_manual_runs_on_a_real_server(server, site, tmp_path):
    from winback.channels.emulator import EmulatorServer
    from winback.ledger import Ledger

    api, env, home = server
    env = {**env, "WINBACK_HOME": str(site)}
    _prefect(env, site, "work-pool", "create", "winback", "--type", "process")
    _prefect(env, site, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")

    ledger_url = f"sqlite:///{site / 'ledger.db'}"
    with EmulatorServer(smtp=False, subprocess=True) as emulator:
        worker_env = {**env, "WINBACK_EMULATOR_URL": emulator.url, "WINBACK_LEDGER_URL": ledger_url,
                      "WINBACK_UNSUBSCRIBE_SECRET": "server-test-secret", "WINBACK_PUBLIC_URL": "https://w.example.com",
                      "WINBACK_CALL_LIST_DIR": str(tmp_path / "calls")}
        wlog = open(home / "worker.log", "w")
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "winback"], env=worker_env,
                                  cwd=site, stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # (a) the scheduler creates scheduled runs by itself.
            deadline = time.monotonic() + 120
            scheduled = []
            while time.monotonic() < deadline and not scheduled:
                scheduled = _runs(api, state={"type": {"any_": ["SCHEDULED"]}})
                time.sleep(2)
            assert scheduled, "no scheduled run within 120 s: the server's scheduler is not working"

            # (b) each shipped deployment, run as the README shows it, ends Completed.
            campaign = _run_deployment(api, env, site, "winback-campaign/cn-retail-daily", f"as_of={AS_OF}")
            assert campaign["state_type"] == "COMPLETED", (home / "worker.log").read_text()[-4000:]
            assert campaign["name"].startswith("老客回流 · 2026 冬季挽回 · 2026-11-23"), campaign["name"]
            dispatch = _run_deployment(api, env, site, "winback-dispatch/every-15-minutes")
            assert dispatch["state_type"] == "COMPLETED", (home / "worker.log").read_text()[-4000:]
            measure = _run_deployment(api, env, site, "winback-measure/daily-report",
                                      "campaign=cn-retail-winback-2026w")
            assert measure["state_type"] == "COMPLETED", (home / "worker.log").read_text()[-4000:]
            stats = emulator.stats()
            assert stats["duplicates"] == 0
            rows = Ledger(ledger_url).rows("cn-retail-winback-2026w")
            assert len(rows) > 0 and stats["unique_keys"] == int(
                ((rows["state"] == "sent") & (rows["channel"] != "call_task")).sum())

            # (c) the artifacts are readable through the API.
            keys = {a["key"] for a in httpx.post(f"{api}/artifacts/filter", json={"limit": 100}, timeout=10).json()}
            assert {"cn-retail-winback-2026w-plan", "cn-retail-winback-2026w-uplift"} <= keys, keys

            # A wrong campaign id in a measure run says which campaigns the ledger knows.
            wrong = _run_deployment(api, env, site, "winback-measure/daily-report", "campaign=cn-retail-winback")
            assert wrong["state_type"] == "FAILED"
            assert "no campaign 'cn-retail-winback' in the ledger; known: cn-retail-winback-2026w" in \
                wrong["state"]["message"], wrong["state"]["message"]
        finally:
            _stop(worker)
            wlog.close()


def test_a_run_with_no_provider_fails_at_once_with_one_line(server, site):
    api, env, home = server
    env = {k: v for k, v in env.items() if not k.startswith("WINBACK_")}
    env.update(WINBACK_LEDGER_URL=f"sqlite:///{site / 'no-provider.db'}")
    out = subprocess.run([sys.executable, "-c", (
        "from flows.dispatch import dispatch_flow\n"
        "state = dispatch_flow(return_state=True)\n"
        "print('MESSAGE:', state.message)\n")], env=env, cwd=site, capture_output=True, text=True, timeout=180)
    message = next((line for line in out.stdout.splitlines() if line.startswith("MESSAGE:")), out.stderr[-2000:])
    assert "no provider configured: set WINBACK_PROVIDER_CONFIG" in message and "WINBACK_EMULATOR_URL" in message
