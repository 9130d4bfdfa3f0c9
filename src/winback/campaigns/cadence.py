"""Cadence steps over days, and dispatching one campaign: the work of `winback dispatch` and the
Prefect dispatch flow, in one place.

`advance_cadence` plans step n+1 for customers of step n whose delay has passed and who have not
come back; `dispatch_campaign` advances the cadence, then runs the send engine (through the send-time
gate, with the customers' latest orders from the campaign's sources) and returns what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from winback.campaigns.model import Campaign

CONTACT_LOOKBACK_DAYS = 90  # contact history read for the planning-time frequency cap


def cadence_due(campaign: Campaign, prior: pd.DataFrame, now: pd.Timestamp) -> bool:
    """Cheap check before loading any data: is some later step due for someone not yet planned for it?"""
    if len(campaign.cadence) < 2 or prior.empty:
        return False
    steps = prior["step"].astype(int)
    sent = pd.to_datetime(prior.get("sent_at"), utc=True).fillna(pd.to_datetime(prior["send_at_utc"], utc=True))
    for i in range(1, len(campaign.cadence)):
        delay = pd.Timedelta(days=campaign.cadence[i].day - campaign.cadence[i - 1].day)
        prev = (steps == i) & (sent.dt.floor("min") + delay <= now)  # as plan_followup counts days
        done = set(prior.loc[steps == i + 1, "customer_id"])
        if (prev & ~prior["customer_id"].isin(done)).any():
            return True
    return False


def advance_cadence(campaign: Campaign, ledger, inputs: Callable[[], Any], now: pd.Timestamp) -> int:
    """Plan and persist every later cadence step whose time has come; return the rows inserted.

    `inputs` loads the campaign's validated sources (called only when some step is due).
    """
    from winback.campaigns.decisions import plan_decisions
    from winback.campaigns.plan import plan_followup
    from winback.ledger.decisions import record_decisions

    prior = ledger.rows(campaign.id)
    if not cadence_due(campaign, prior, now):
        return 0
    data = inputs()
    since = now - pd.Timedelta(days=CONTACT_LOOKBACK_DAYS)
    planned = 0
    for step in range(2, len(campaign.cadence) + 1):
        rows = plan_followup(campaign, step, prior, data.customers, data.orders, now=now,
                             suppressions=ledger.suppressions(), contact_history=ledger.contact_history(since))
        if len(rows):
            planned += ledger.plan(rows, now=now)
            record_decisions(ledger, plan_decisions(rows), now=now)
            prior = ledger.rows(campaign.id)
    return planned


@dataclass
class CampaignDispatch:
    """What one dispatch of one campaign did."""

    campaign_id: str
    followups_planned: int = 0
    summary: Any = None  # winback.channels.dispatch.DispatchSummary
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the CLI's --json, the flow's return value)."""
        out = {"campaign_id": self.campaign_id, "followups_planned": self.followups_planned, "notes": self.notes}
        if self.summary is not None:
            out.update(self.summary.to_dict())
        return out


class SourcesCache:
    """Loads a campaign's sources at most once per dispatch (cadence planning and the gate share them)."""

    def __init__(self, campaign: Campaign, world: str | None) -> None:
        self.campaign, self.world, self._inputs = campaign, world, None

    def __call__(self):
        if self._inputs is None:
            from winback.resources import campaign_inputs

            self._inputs = campaign_inputs(self.campaign, world=self.world)
        return self._inputs


def prepare_dispatch(resources, campaign: Campaign, *, world: str | None = None
                     ) -> tuple[int, dict[str, pd.Timestamp] | None]:
    """Advance the cadence and read each customer's latest order for the gate: (followups planned, last orders).

    The sources are read only when something is due (a cadence step or a planned message).
    """
    from winback.policy.gate import last_order_times

    ledger = resources.ledger
    now = resources.clock.now()
    sources = SourcesCache(campaign, world)
    followups = advance_cadence(campaign, ledger, sources, now)
    if ledger.count_due(campaign.id, now=now) == 0:
        return followups, None
    return followups, last_order_times(sources().orders, until=now)


async def send_campaign(resources, campaign: Campaign | None, campaign_id: str, *,
                        last_orders: dict | None, batch_size: int = 2000, max_batches: int | None = None,
                        reconcile: bool = True, progress=None):
    """Run the send engine over one campaign's due rows (reconciling interrupted sends first)."""
    from winback.channels.dispatch import dispatch

    async with resources.sender(campaign, progress=progress) as settings:
        return await dispatch(resources.ledger, settings, campaign_id=campaign_id, batch_size=batch_size,
                              max_batches=max_batches, reconcile=reconcile, last_orders=last_orders)
