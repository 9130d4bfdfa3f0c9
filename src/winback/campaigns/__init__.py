"""Campaigns: definitions (YAML → pydantic), and the plan — who is contacted, how, when, with what, and why not.

`load_campaign(path)` validates a campaign file; `build_plan(...)` and `plan_followup(...)` are the pure
decision functions (docs/CONTRACTS.md "Campaigns and the plan"); `plan_summary(plan, campaign)` gives the
counts the CLI prints and the Prefect flow turns into artifacts.
"""

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
