"""The decision trail: why each customer a run evaluated got what they got, as rows for the ledger.

`plan_decisions(plan)` turns a plan (`build_plan` / `plan_followup`) into one decision row per customer and
step — audience in or out with the rule that decided, each channel's policy check, arm, offer chosen with
its expected net value and the runner-up, channel and why, human follow-up or why not — plus the
customers outside the audience, which `build_plan` carries beside the plan (`DecisionTrail`). Pure; the
ledger stores the rows (`winback.ledger.decisions.record_decisions`) and `winback explain` reads them back.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign

DETAIL_FIELDS = ("value_tier", "lapse_stage", "likely_reason", "offer_kind", "p_base", "p_return", "offer_guard",
                 "budget_note", "policy_detail", "manager_of_record", "account_manager", "send_at_local",
                 "coupon_code")
OUTSIDE_FIELDS = ("value_tier", "lapse_stage", "likely_reason", "p_alive", "recency_days", "account_manager")


class DecisionTrail(dict):
    """Decision rows that travel beside a plan frame in `plan.attrs` (the customers outside the audience).

    pandas deep-copies `attrs` on every operation and writes them as JSON into Parquet files; this holder
    copies as itself (a plan's derived frames share one trail instead of copying thousands of rows each
    time) and is an empty mapping to JSON (a plan file does not carry the trail; the ledger does).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        super().__init__()
        self.frame = frame

    def __deepcopy__(self, memo: dict) -> DecisionTrail:
        return self

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"DecisionTrail({len(self.frame)} rows)"


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        # Figures for people: four significant digits (a P(alive) of 6.686924981907905e-07 reads 6.687e-07).
        return float(f"{value:.4g}") if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _details(frame: pd.DataFrame, fields: tuple[str, ...]) -> list[str]:
    present = [f for f in fields if f in frame.columns]
    columns = [frame[f].astype(object).tolist() for f in present]
    out = []
    for values in zip(*columns, strict=True) if present else [()] * len(frame):
        item = {k: _clean(v) for k, v in zip(present, values, strict=True)}
        out.append(json.dumps({k: v for k, v in item.items() if v is not None}, ensure_ascii=False))
    return out


def outside_rows(customers: pd.DataFrame, rules: pd.Series, campaign: Campaign, *, as_of: Any) -> pd.DataFrame:
    """Decision rows of customers the audience rules left out (`rules`: the rule each one failed)."""
    frame = pd.DataFrame({
        "campaign_id": campaign.id,
        "customer_id": customers["customer_id"].astype("string").to_numpy(),
        "step": 1,
        "as_of": pd.Timestamp(as_of),
        "in_audience": False,
        "audience_rule": rules.reindex(customers.index).astype("string").to_numpy(),
        "reason": "outside_audience",
        "human_followup": "not evaluated (outside the audience)",
        "detail": _details(customers, OUTSIDE_FIELDS),
    })
    return frame


def decision_rows(plan: pd.DataFrame) -> pd.DataFrame:
    """One decision row per plan row (every customer of the audience the plan evaluated)."""
    if plan is None or plan.empty:
        return pd.DataFrame(columns=["campaign_id", "customer_id", "step", "in_audience"])

    def col(name: str) -> pd.Series:
        return plan[name] if name in plan.columns else pd.Series(pd.NA, index=plan.index)

    step = plan["step"].astype("int64")
    return pd.DataFrame({
        "campaign_id": plan["campaign_id"].astype("string"),
        "customer_id": plan["customer_id"].astype("string"),
        "step": step,
        "as_of": col("as_of"),
        "in_audience": True,
        "audience_rule": np.where(step == 1, "in audience", "follow-up of an earlier step's treatment or holdout"),
        "policy": col("policy_checks"),
        "arm": plan["arm"].astype("string"),
        "reason": col("reason"),
        "offer": col("offer"),
        "expected_net_value": col("expected_net_value"),
        "expected_cost": col("expected_cost"),
        "runner_up": col("runner_up"),
        "runner_up_net_value": col("runner_up_net_value"),
        "channel": col("channel"),
        "channel_reason": col("channel_reason"),
        "human_followup": col("human_followup"),
        "detail": _details(plan, DETAIL_FIELDS),
    }, index=plan.index).reset_index(drop=True)


def plan_decisions(plan: pd.DataFrame) -> pd.DataFrame:
    """Every decision a plan holds: its rows, plus the customers outside the audience it carries."""
    rows = decision_rows(plan)
    trail = plan.attrs.get("decision_trail") if plan is not None else None
    if isinstance(trail, DecisionTrail) and len(trail):
        rows = pd.concat([rows, trail.frame], ignore_index=True) if len(rows) else trail.frame.copy()
    return rows
