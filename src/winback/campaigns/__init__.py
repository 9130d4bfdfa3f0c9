"""Campaigns: definitions (YAML → pydantic), and the plan — who is contacted, how, when, with what, and why not.

`load_campaign(path)` validates a campaign file; `build_plan(...)` and `plan_followup(...)` are the pure
decision functions (docs/CONTRACTS.md "Campaigns and the plan"); `plan_summary(plan, campaign)` gives the
counts the CLI prints and the Prefect flow turns into artifacts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "PLAN_COLUMNS",
    "CadenceStep",
    "Campaign",
    "Offer",
    "PlanSummary",
    "PowerCheck",
    "build_plan",
    "holdout_power_check",
    "load_campaign",
    "parse_campaign",
    "plan_followup",
    "plan_summary",
    "resolve_sources",
    "validate_campaign_data",
]

if TYPE_CHECKING:
    from winback.campaigns.loading import load_campaign, parse_campaign, validate_campaign_data
    from winback.campaigns.model import CadenceStep, Campaign, Offer
    from winback.campaigns.plan import (
        PLAN_COLUMNS,
        PlanSummary,
        PowerCheck,
        build_plan,
        holdout_power_check,
        plan_followup,
        plan_summary,
    )
    from winback.campaigns.sources import resolve_sources

_HOME = {
    "load_campaign": "loading",
    "parse_campaign": "loading",
    "validate_campaign_data": "loading",
    "CadenceStep": "model",
    "Campaign": "model",
    "Offer": "model",
    "PLAN_COLUMNS": "plan",
    "PlanSummary": "plan",
    "PowerCheck": "plan",
    "build_plan": "plan",
    "holdout_power_check": "plan",
    "plan_followup": "plan",
    "plan_summary": "plan",
    "resolve_sources": "sources",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.campaigns.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.campaigns' has no attribute {name!r}")
