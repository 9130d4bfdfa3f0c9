"""The composition root: one place that builds the ledger, provider router, renderer, send settings and clock.

The CLI (`winback send`, `winback dispatch`), the Prefect flows, the demo and the benchmarks all get
their parts here, from one validated `RunSettings`, and close what they open (`with Resources(...)`).

Provider configuration: an explicit `provider_config` (a YAML file) or `emulator_url` (every channel
to a running `winback emulator`), else the environment (`WINBACK_PROVIDER_CONFIG`,
`WINBACK_EMULATOR_URL`) — what a Prefect worker is started with. With neither, the first thing
that needs a provider fails with one line saying which variable to set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from winback.clock import Clock
from winback.errors import ConfigError

NO_PROVIDER = ("no provider configured: set WINBACK_PROVIDER_CONFIG (path to a provider config file) or "
               "WINBACK_EMULATOR_URL (every channel to a running `winback emulator`)")


class RunSettings(BaseModel):
    """What a run needs from outside: where the ledger is, which providers, and what time it is."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    ledger_url: str | None = None
    provider_config: Path | None = None
    emulator_url: str | None = None
    smtp_port: int | None = None
    email_provider: Literal["sendgrid", "mailgun", "smtp"] | None = None
    transport: Literal["aiohttp", "httpx"] | None = None
    call_list_dir: Path = Path("call-lists")
    now: pd.Timestamp | None = None  # business time the clock starts at (None: the system clock)
    concurrency: int = 64
    max_attempts: int = 5
    # `hold`: a send nobody can confirm waits for a person (`winback uncertain …`); `skip` is its old name.
    uncertain_policy: Literal["hold", "resend", "skip"] = "hold"
    lease_s: float = 120.0  # how long a claim holds its rows without a renewal (renewed every third)
    lookup_settle_s: float = 2.0  # how long a provider may take to show a message it accepted in its lookup

    @field_validator("now", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> pd.Timestamp | None:
        from winback.clock import business_time

        if value is None or isinstance(value, pd.Timestamp):
            return value
        return business_time(value, option="now")

    @field_validator("concurrency", "max_attempts")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("lease_s", "lookup_settle_s")
    @classmethod
    def _seconds(cls, value: float, info) -> float:
        if value < 0 or (info.field_name == "lease_s" and value == 0):
            raise ValueError("must be a positive number of seconds")
        return value

    @classmethod
    def from_env(cls, **given: Any) -> RunSettings:
        """Settings from explicit values, the environment filling what is not given."""
        values = {k: v for k, v in given.items() if v is not None}
        if "provider_config" not in values and "emulator_url" not in values:
            if os.environ.get("WINBACK_PROVIDER_CONFIG"):
                values["provider_config"] = os.environ["WINBACK_PROVIDER_CONFIG"]
            elif os.environ.get("WINBACK_EMULATOR_URL"):
                values["emulator_url"] = os.environ["WINBACK_EMULATOR_URL"]
        if "call_list_dir" not in values and os.environ.get("WINBACK_CALL_LIST_DIR"):
            values["call_list_dir"] = os.environ["WINBACK_CALL_LIST_DIR"]
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(err["msg"], field=".".join(str(x) for x in err["loc"])) from None


class Resources:
    """The parts of one run, built lazily from `RunSettings` and closed together."""

    def __init__(self, settings: RunSettings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings or RunSettings.from_env()
        self.clock = clock or Clock.starting_at(self.settings.now)
        self._ledger = None
        self._provider_config = None

    # -- the ledger ---------------------------------------------------------------------------------

    @property
    def ledger_url(self) -> str:
        """The ledger URL (explicit, else WINBACK_LEDGER_URL, else the local SQLite file)."""
        from winback.config import ledger_url

        return ledger_url(self.settings.ledger_url)

    @property
    def ledger(self):
        """The ledger, opened once with this run's clock."""
        if self._ledger is None:
            from winback.ledger import Ledger

            self._ledger = Ledger(self.ledger_url, clock=self.clock)
        return self._ledger

    def close(self) -> None:
        """Close what was opened (the ledger's connection pool)."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def __enter__(self) -> Resources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- providers and rendering --------------------------------------------------------------------

    def provider_config(self):
        """The provider configuration; a `ConfigError` naming the variables when none is set."""
        if self._provider_config is not None:
            return self._provider_config
        from winback.channels.providers import load_provider_config, provider_config_for_emulator

        s = self.settings
        if s.provider_config is not None and s.emulator_url:
            raise ConfigError("give one of a provider config and an emulator URL, not both",
                              field="provider_config")
        if s.emulator_url:
            config = provider_config_for_emulator(s.emulator_url, smtp_port=s.smtp_port,
                                                  out_dir=str(s.call_list_dir))
        elif s.provider_config is not None:
            config = load_provider_config(s.provider_config)
        else:
            raise ConfigError(NO_PROVIDER)
        updates = {k: v for k, v in (("email", s.email_provider), ("transport", s.transport)) if v}
        self._provider_config = config.model_copy(update=updates) if updates else config
        return self._provider_config

    def renderer(self, templates: Path | str = Path("templates"), *, locale_fallback=None):
        """A sandboxed renderer over a templates folder."""
        from winback.render import Renderer

        kwargs = {"locale_fallback": locale_fallback} if locale_fallback else {}
        return Renderer(templates, unsubscribe_mailto=self.provider_config().unsubscribe_mailto, **kwargs)

    @asynccontextmanager
    async def sender(self, campaign=None, *, templates: Path | str | None = None, share: int = 1,
                     progress=None, require_unsubscribe_secret: bool = False) -> AsyncIterator[Any]:
        """Open the provider router and yield the engine's `SendSettings` (campaign sender, clock, limits)."""
        from winback.channels.dispatch import SendSettings
        from winback.channels.providers import Router
        from winback.config import secret

        config = self.provider_config()
        if campaign is not None:
            renderer = self.renderer(campaign.templates_path(), locale_fallback=campaign.locale_fallback)
        else:
            renderer = self.renderer(templates or Path("templates"))
        unsubscribe = secret("WINBACK_UNSUBSCRIBE_SECRET", required=require_unsubscribe_secret)
        s = self.settings
        async with Router(config) as router:
            yield SendSettings.from_config(
                config, router=router, renderer=renderer, concurrency=s.concurrency, share=share,
                sender_email=campaign.brand.sender_email if campaign else None,
                sender_name=campaign.brand.sender_name if campaign else None,
                unsubscribe_secret=unsubscribe, max_attempts=s.max_attempts,
                uncertain_policy=s.uncertain_policy, progress=progress, clock=self.clock,
                lease_s=s.lease_s, lookup_settle_s=s.lookup_settle_s,
            )


def campaign_inputs(campaign, *, world: str | Path | None = None):
    """The campaign's validated sources (or a demo world's), for cadence planning and the send gate."""
    from winback.campaigns import resolve_sources
    from winback.sources import load_inputs

    return load_inputs(**resolve_sources(campaign, world=world))
