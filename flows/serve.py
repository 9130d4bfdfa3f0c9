"""`make ui`: a local Prefect server on 127.0.0.1:4200 serving winback's deployments.

The deployments are read from `deployments/prefect.yaml` (one source of truth for names, schedules
and parameters) and served from this process, so a user can open the UI, see the schedules and
trigger runs without a work pool or a worker. Ctrl-C stops the server and the runner.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"


def load_deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` entries of prefect.yaml (YAML anchors resolved)."""
    with open(path, encoding="utf-8") as fh:
        return list(yaml.safe_load(fh)["deployments"])


def load_entrypoint(entrypoint: str):
    """Import `flows/campaign.py:campaign_flow` as the `flows.campaign` module and return the flow."""
    file_part, _, attr = entrypoint.partition(":")
    module_name = file_part.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module_name), attr)


def _schedules(spec: dict[str, Any]) -> list:
    from prefect.schedules import Cron, Interval

    out = []
    for item in spec.get("schedules") or []:
        active = item.get("active", True)
        if "cron" in item:
            out.append(Cron(item["cron"], timezone=item.get("timezone"), active=active))
        elif "interval" in item:
            out.append(Interval(item["interval"], timezone=item.get("timezone"), active=active))
    return out


def runner_deployments(path: Path = PREFECT_YAML) -> list:
    """`RunnerDeployment`s equivalent to prefect.yaml, for `serve()`."""
    deployments = []
    for spec in load_deployment_specs(path):
        flow = load_entrypoint(spec["entrypoint"])
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=_schedules(spec),
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return deployments


def _wait_healthy(api_url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"Error: the Prefect server did not answer {api_url}/health within {timeout:.0f} s")


def main() -> int:
    """Start (or reuse) a local Prefect server and serve the deployments until Ctrl-C."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    host, port = "127.0.0.1", int(os.environ.get("WINBACK_UI_PORT", "4200"))
    api_url = os.environ.get("PREFECT_API_URL") or f"http://{host}:{port}/api"
    server = None
    try:
        httpx.get(f"{api_url}/health", timeout=2).raise_for_status()
        print(f"Using the Prefect server at {api_url}")
    except httpx.HTTPError:
        print(f"Starting a Prefect server on http://{host}:{port} …")
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            env={**os.environ, "PREFECT_UI_API_URL": api_url},
        )
        _wait_healthy(api_url)
    os.environ["PREFECT_API_URL"] = api_url
    emulator = _provider_environment()
    if not (REPO / "demo-out" / "world" / "customers.parquet").exists():
        print("Note: the example campaign reads demo-out/world; create it with `make demo` or "
              "`.venv/bin/winback demo-data --out demo-out/world --as-of 2026-11-23`.")
    print(f"Open http://{host}:{port} — deployments are served from this process (schedules active); Ctrl-C stops.")
    from prefect import serve

    try:
        serve(*runner_deployments())
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (emulator, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    return 0


def _provider_environment() -> subprocess.Popen | None:
    """The runs served here send where a worker's would: WINBACK_PROVIDER_CONFIG or WINBACK_EMULATOR_URL
    from the environment; with neither, a local `winback emulator` is started and used (no message
    leaves the machine), and the unsubscribe settings get local defaults."""
    if os.environ.get("WINBACK_PROVIDER_CONFIG") or os.environ.get("WINBACK_EMULATOR_URL"):
        print("Providers: " + (f"WINBACK_PROVIDER_CONFIG={os.environ['WINBACK_PROVIDER_CONFIG']}"
                               if os.environ.get("WINBACK_PROVIDER_CONFIG")
                               else f"WINBACK_EMULATOR_URL={os.environ['WINBACK_EMULATOR_URL']}"))
        return None
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "winback.cli", "emulator", "--port", str(port), "--no-smtp"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/_emulator/stats", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    os.environ["WINBACK_EMULATOR_URL"] = url
    os.environ.setdefault("WINBACK_UNSUBSCRIBE_SECRET", "local-ui-only")
    os.environ.setdefault("WINBACK_PUBLIC_URL", "http://127.0.0.1:8088")
    print(f"Providers: neither WINBACK_PROVIDER_CONFIG nor WINBACK_EMULATOR_URL is set — sending to a local "
          f"emulator at {url} (messages at {url}/_emulator/messages)")
    return proc


if __name__ == "__main__":
    sys.exit(main())
