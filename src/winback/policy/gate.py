"""The send-time gate: at the moment a message would leave, may it, in the recipient's own zone?

Planning proposes; the gate decides, per message, when the send engine claims it:
1. **quiet hours** — outside the row's local send window the message is deferred to the next
   opening (never sent, never dropped);
2. **ordered since planned** — an `if_not_returned` step of a customer with an order after the data
   the step was decided on is skipped (`ordered_since_planned`);
3. **frequency cap across every campaign** — messages sent and claimed (in flight) in the window,
   plus the messages this same claim has already let through, count against each cap; a message
   over a cap is skipped (`frequency_cap`). The ledger evaluates this inside its claim transaction,
   serialised across senders, so the count is a reservation: two campaigns racing for a customer's
   last slot give it to one of them;
4. **budget** — a row with a cost, of a campaign with a budget, is skipped (`budget`) once the campaign's
   committed cost (the expected cost of its rows sent or being sent, plus what this claim has already let
   through) would pass the budget. A row that costs nothing is never stopped by the budget.

Consent and suppression are checked by the engine right after the claim, as before. The gate is
pure: `decide(rows, history, now, last_orders)` → one decision per row.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from winback.policy.quiet_hours import next_allowed_send_time

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign

SEND = "send"
DEFER = "defer"
SKIP = "skip"
BUDGET_SLACK = 1e-9  # float sums: a budget met exactly is not passed


@dataclass(frozen=True)
class SendRules:
    """What the gate checks for one ledger row (stored as compact JSON in `send_rules`)."""

    window: tuple[str, str] | None = None  # local "HH:MM" start, end of the channel's send window
    caps: tuple[tuple[str, int, int], ...] = ()  # (scope: a channel or "any", max messages, per days)
    own_counts: bool = False  # the campaign's own earlier steps count against its caps
    if_not_returned: bool = False
    throttle_wait_minutes: int | None = None  # None: until the end of that day's send window
    budget: float | None = None  # the campaign's budget: committed + this row's cost may not pass it

    def to_json(self) -> str:
        """Compact JSON for the ledger column."""
        data: dict[str, Any] = {}
        if self.window:
            data["w"] = list(self.window)
        if self.caps:
            data["c"] = [list(c) for c in self.caps]
        if self.own_counts:
            data["o"] = 1
        if self.if_not_returned:
            data["r"] = 1
        if self.throttle_wait_minutes is not None:
            data["t"] = self.throttle_wait_minutes
        if self.budget is not None:
            data["b"] = self.budget
        return json.dumps(data, separators=(",", ":"))

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def parse(text: str | None) -> SendRules:
        """The rules a `send_rules` value holds (rows of one campaign step share one string: cached)."""
        if not text:
            return SendRules()
        try:
            data = json.loads(text)
        except ValueError:
            return SendRules()
        window = tuple(data["w"]) if data.get("w") else None
        caps = tuple((str(s), int(m), int(d)) for s, m, d in data.get("c", ()))
        budget = data.get("b")
        return SendRules(window=window, caps=caps, own_counts=bool(data.get("o")),
                         if_not_returned=bool(data.get("r")), throttle_wait_minutes=data.get("t"),
                         budget=None if budget is None else float(budget))

    def window_times(self) -> tuple[time, time] | None:
        """The send window as `datetime.time` values."""
        if not self.window:
            return None
        return time.fromisoformat(self.window[0]), time.fromisoformat(self.window[1])


def rules_for(campaign: Campaign, channel: str, *, if_not_returned: bool) -> SendRules:
    """The gate rules of one campaign step on one channel."""
    policy = campaign.policy
    window = policy.window(channel)
    caps = tuple((scope, cap.max_messages, cap.per_days) for scope, cap in sorted(policy.frequency_caps.items()))
    throttle = policy.throttle_wait_minutes
    return SendRules(window=(window.start.strftime("%H:%M"), window.end.strftime("%H:%M")), caps=caps,
                     own_counts=policy.cap_includes_own_cadence, if_not_returned=if_not_returned,
                     throttle_wait_minutes=throttle, budget=campaign.budget)


def rules_column(campaign: Campaign, channels: pd.Series, *, if_not_returned: bool) -> pd.Series:
    """`send_rules` JSON per row, from each row's channel (one string per distinct channel)."""
    by_channel = {ch: rules_for(campaign, str(ch), if_not_returned=if_not_returned).to_json()
                  for ch in channels.dropna().unique()}
    return channels.map(by_channel).astype(object)


@dataclass(frozen=True)
class Decision:
    """The gate's verdict for one row: send, defer (to `until`) or skip, with the reason."""

    action: str
    reason: str | None = None
    until: pd.Timestamp | None = None


def decide(rows: pd.DataFrame, history: pd.DataFrame, now: pd.Timestamp,
           last_orders: Mapping[str, pd.Timestamp] | None = None,
           committed: Mapping[str, float] | None = None) -> list[Decision]:
    """One decision per row of `rows` (in order; earlier rows take cap slots and budget first).

    `rows`: customer_id, campaign_id, channel, timezone, send_rules, as_of (and planned_at), expected_cost.
    `history`: other messages of these customers that count against caps — customer_id, campaign_id,
    channel and `at` (sent_at, or claimed_at for messages in flight).
    `last_orders`: each customer's latest order time, when the campaign's orders are known.
    `committed`: per campaign, the cost already committed (expected cost of its rows sent or in flight).
    """
    now = pd.Timestamp(now).tz_convert("UTC")
    n = len(rows)
    decisions: list[Decision | None] = [None] * n
    if n == 0:
        return []
    rules = [SendRules.parse(v if isinstance(v, str) else None) for v in rows["send_rules"].tolist()] \
        if "send_rules" in rows.columns else [SendRules()] * n

    # 1. quiet hours, vectorised per (zone, window) group.
    windows = pd.Series([r.window_times() for r in rules], index=rows.index, dtype=object)
    has_window = windows.notna().to_numpy()
    if has_window.any():
        zones = rows["timezone"].astype("string").fillna("UTC")
        sub = rows.index[has_window]
        due = pd.Series(now, index=sub)
        opening = next_allowed_send_time(due, zones.loc[sub], windows.loc[sub])
        later = (opening > now).to_numpy()
        if later.any():
            for pos, until in zip(np.flatnonzero(has_window)[later], opening[later].tolist(), strict=True):
                decisions[pos] = Decision(DEFER, "quiet_hours", until)

    # 2. ordered since the step was decided (only where the campaign's orders are known).
    if last_orders:
        since = _decided_at(rows)
        for pos, (customer, rule) in enumerate(zip(rows["customer_id"].astype(str), rules, strict=True)):
            if decisions[pos] is None and rule.if_not_returned:
                last = last_orders.get(customer)
                if last is not None and not pd.isna(since[pos]) and last > since[pos]:
                    decisions[pos] = Decision(SKIP, "ordered_since_planned")

    # 3. frequency caps across campaigns, counting this claim's own grants as they are made.
    hist = history if history is not None else pd.DataFrame(columns=["customer_id", "campaign_id", "channel", "at"])
    by_customer: dict[str, list[tuple[str, str, pd.Timestamp]]] = {}
    if len(hist):
        at = pd.to_datetime(hist["at"], utc=True)
        for c, k, ch, t in zip(hist["customer_id"].astype(str), hist["campaign_id"].astype(str),
                               hist["channel"].astype(str), at, strict=True):
            by_customer.setdefault(c, []).append((k, ch, t))
    customers = rows["customer_id"].astype(str).tolist()
    campaigns = rows["campaign_id"].astype(str).tolist()
    channels = rows["channel"].astype(str).tolist()
    costs = pd.to_numeric(rows["expected_cost"], errors="coerce").fillna(0.0).tolist() \
        if "expected_cost" in rows.columns else [0.0] * n
    spent = dict(committed or {})
    for pos in range(n):
        if decisions[pos] is not None:
            continue
        rule = rules[pos]
        past = by_customer.get(customers[pos], [])
        over = False
        for scope, max_messages, per_days in rule.caps:
            since = now - pd.Timedelta(days=per_days)
            count = sum(1 for k, ch, t in past
                        if t > since and (scope == "any" or ch == scope)
                        and (rule.own_counts or k != campaigns[pos]))
            if (scope == "any" or scope == channels[pos]) and count >= max_messages:
                over = True
                break
        if over:
            decisions[pos] = Decision(SKIP, "frequency_cap")
        elif costs[pos] > 0 and rule.budget is not None and \
                spent.get(campaigns[pos], 0.0) + costs[pos] > rule.budget + BUDGET_SLACK:
            decisions[pos] = Decision(SKIP, "budget")
        else:
            decisions[pos] = Decision(SEND)
            by_customer.setdefault(customers[pos], []).append((campaigns[pos], channels[pos], now))
            spent[campaigns[pos]] = spent.get(campaigns[pos], 0.0) + max(costs[pos], 0.0)
    return [d if d is not None else Decision(SEND) for d in decisions]


def _decided_at(rows: pd.DataFrame) -> list[pd.Timestamp]:
    """When each row's step was decided: its `as_of` (the data cut-off), else when it was planned."""
    if "as_of" in rows.columns:
        decided = pd.to_datetime(rows["as_of"], utc=True)
        if "planned_at" in rows.columns:
            decided = decided.fillna(pd.to_datetime(rows["planned_at"], utc=True))
    elif "planned_at" in rows.columns:
        decided = pd.to_datetime(rows["planned_at"], utc=True)
    else:
        decided = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    return decided.tolist()


def throttle_deadline(rules: SendRules, timezone: str | None, now: pd.Timestamp) -> pd.Timestamp:
    """Until when a throttled message may keep waiting: the campaign's wait, else the end of today's window."""
    now = pd.Timestamp(now).tz_convert("UTC")
    if rules.throttle_wait_minutes is not None:
        return now + pd.Timedelta(minutes=rules.throttle_wait_minutes)
    times = rules.window_times()
    if times is None:
        return now + pd.Timedelta(minutes=30)
    zone = timezone or "UTC"
    try:
        local = now.tz_convert(zone)
    except Exception:  # an unknown zone: the window in UTC
        local = now
    end = local.normalize() + pd.Timedelta(hours=times[1].hour, minutes=times[1].minute)
    return end.tz_convert("UTC") if end > local else now


def last_order_times(orders: pd.DataFrame | None, *, until: pd.Timestamp | None = None) -> dict[str, pd.Timestamp]:
    """Each customer's latest `ordered_at` (UTC) up to `until` (orders after it have not happened yet),
    for the gate's ordered-since-planned check."""
    if orders is None or len(orders) == 0:
        return {}
    t = pd.to_datetime(orders["ordered_at"], utc=True)
    customers = orders["customer_id"].astype(str)
    if until is not None:
        keep = (t <= pd.Timestamp(until).tz_convert("UTC")).to_numpy()
        t, customers = t[keep], customers[keep]
    last = t.groupby(customers).max()
    return dict(zip(last.index, last.tolist(), strict=True))
