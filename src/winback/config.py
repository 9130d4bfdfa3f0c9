"""Configuration read at the edges: secrets, the ledger URL, and parsing of as-of / now options.

Nothing here is read at import time; callers pass the results into the pure core.
"""

from __future__ import annotations

import os
from datetime import date, datetime

import pandas as pd
from pydantic import SecretStr

from winback.clock import DEFAULT_TIMEZONE, SystemClock, business_time
from winback.errors import ConfigError

DEFAULT_LEDGER_PATH = ".winback/ledger.db"


def secret(name: str, *, required: bool = False) -> SecretStr | None:
    """Return a secret from the environment, else from a Prefect Secret block, as a masked `SecretStr`.

    `name` is the environment variable (`WINBACK_SENDGRID_API_KEY`); the block is the same name in
    lower case with dashes (`winback-sendgrid-api-key`). The value is never logged: `SecretStr`
    prints as `**********`.
    """
    value = os.environ.get(name)
    if not value:
        value = _prefect_secret(name.lower().replace("_", "-"))
    if not value:
        if required:
            raise ConfigError(
                f"secret {name} is not set",
                hint=f"export {name}=… or create a Prefect Secret block named "
                f"{name.lower().replace('_', '-')!r}",
            )
        return None
    return SecretStr(value)


def _prefect_secret(block_name: str) -> str | None:
    """Load a Prefect Secret block if a Prefect API is configured; None when absent or unreachable."""
    if not (os.environ.get("PREFECT_API_URL") or _in_prefect_run()):
        return None
    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(block_name).get())
    except Exception:  # absent block or unreachable API: the caller reports the missing secret
        return None


def _in_prefect_run() -> bool:
    try:
        from prefect.context import FlowRunContext

        return FlowRunContext.get() is not None
    except Exception:
        return False


def ledger_url(explicit: str | None = None) -> str:
    """The ledger URL: the explicit option, else WINBACK_LEDGER_URL, else a SQLite file under the cwd."""
    if explicit:
        return explicit
    env = os.environ.get("WINBACK_LEDGER_URL")
    if env:
        return env
    os.makedirs(os.path.dirname(DEFAULT_LEDGER_PATH), exist_ok=True)
    return f"sqlite:///{DEFAULT_LEDGER_PATH}"


def parse_timestamp(value: str | date | datetime | pd.Timestamp | None, *, option: str = "--as-of",
                    tz: str = DEFAULT_TIMEZONE) -> pd.Timestamp | None:
    """Parse a date or timestamp option into a UTC `pd.Timestamp` (see `winback.clock.business_time`).

    A bare date (`2026-11-23`) means the end of that day in `tz` (everything ordered that day counts);
    a naive timestamp is read in `tz`; an aware one is converted.
    """
    return business_time(value, option=option, tz=tz)


def utc_now() -> pd.Timestamp:
    """The current time in UTC from the system clock; call only at the edges (CLI, flows)."""
    return SystemClock().now()
