"""Money: what a campaign really cost and what it earned. Every formula is written here once.

docs/MONEY.md states the same rules for people. In short, per campaign (and per arm or breakdown):

- **Realized offer cost** of one redeemed coupon (an order in the window carrying a code the ledger gave
  that customer), by offer kind: `percent_off` — the discount applied (the order's recorded `discount`,
  else percent × order amount), capped at the offer's `max_discount`; `amount_off` — the recorded
  discount, else the amount, never more than the amount or the order; `bonus_points` — points ×
  `point_value`; `free_shipping` — the shipping cost of one shipment; `birthday_gift` — the gift's cost
  (plus its amount off, if any); any other kind — the recorded discount. Every kind adds the offer's
  `fixed_cost`. When the offer's terms are unknown (neither the campaign nor the ledger context names
  them) the recorded discount, else the plan's expected cost stands in, and a note says so.
- **Contact cost** of one message really sent: `economics.contact_costs[channel]`, per segment for SMS
  (a 2-segment SMS costs twice), per task for a call, per message otherwise. Held-out, failed,
  skipped or uncertain messages cost nothing.
- **Incremental gross margin** = incremental order value × `economics.gross_margin`, where incremental
  order value = (order value per customer, treated − holdout) × treated customers, and an order's value
  is what it was worth before the coupon (`amount + discount`): the discount is a cost, counted once in
  the offer cost, not a second time as lost revenue. Its CI is the Welch CI of the per-customer
  difference, scaled the same way.
- **Net incremental value** = incremental gross margin − realized offer cost − contact cost.
- **ROI** = net incremental value / (realized offer cost + contact cost); undefined when nothing was spent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign, Offer

TERM_COLUMNS = ("percent", "amount_off", "max_discount", "points", "point_value", "shipping_cost", "gift_cost",
                "fixed_cost")
DEFAULT_POINT_VALUE = 0.01  # the campaign model's default: 100 points = 1 unit of currency


def offer_terms(offer: Offer) -> dict[str, float | None]:
    """The cost terms of a campaign offer (percent as a fraction)."""
    return {
        "percent": None if offer.percent is None else offer.percent / 100.0,
        "amount_off": offer.amount,
        "max_discount": offer.max_discount,
        "points": None if offer.points is None else float(offer.points),
        "point_value": offer.point_value,
        "shipping_cost": offer.shipping_cost,
        "gift_cost": offer.gift_cost,
        "fixed_cost": offer.fixed_cost,
    }


def context_terms(context: str | None) -> dict[str, float | None]:
    """The cost terms a ledger row's render context carries in its `offer` (NaN-free; None when absent)."""
    out: dict[str, float | None] = dict.fromkeys(TERM_COLUMNS)
    if not isinstance(context, str) or '"offer"' not in context:
        return out
    try:
        offer = json.loads(context).get("offer") or {}
    except (ValueError, AttributeError):
        return out
    names = {"percent": "percent", "amount_off": "amount", "max_discount": "max_discount", "points": "points",
             "point_value": "point_value", "shipping_cost": "shipping_cost", "gift_cost": "gift_cost",
             "fixed_cost": "fixed_cost"}
    for target, key in names.items():
        value = offer.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[target] = float(value)
    if out["percent"] is not None and out["percent"] > 1:
        out["percent"] /= 100.0  # `percent` 15 and 0.15 both mean 15 %
    return out


def terms_for_rows(rows: pd.DataFrame, campaign: Campaign | None = None) -> pd.DataFrame:
    """Cost terms per ledger row: the campaign's offer by id when known, else the row's context."""
    by_offer = {o.id: offer_terms(o) for o in campaign.offers} if campaign is not None else {}
    offers = rows["offer"].astype("string").to_numpy(dtype=object, na_value=None) if "offer" in rows else \
        [None] * len(rows)
    contexts = rows["context"].to_numpy(dtype=object) if "context" in rows else [None] * len(rows)
    records = [by_offer.get(o) or context_terms(c) for o, c in zip(offers, contexts, strict=True)]
    frame = pd.DataFrame.from_records(records, columns=list(TERM_COLUMNS), index=rows.index).astype("float64")
    return frame


def redemption_costs(kind: np.ndarray, amount: np.ndarray, discount: np.ndarray, terms: pd.DataFrame,
                     fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cost, known) of each redeemed coupon order; `known` is False where the offer's terms were missing
    and the recorded discount or `fallback` (the plan's expected cost) stood in. Rules: module docstring."""
    kind = np.asarray(kind, dtype=object)
    amount = np.asarray(amount, dtype=float)
    discount = np.nan_to_num(np.asarray(discount, dtype=float))
    t = {c: terms[c].to_numpy(dtype=float) for c in TERM_COLUMNS}
    recorded = discount > 0
    cost = np.where(recorded, discount, np.nan)
    known = np.zeros(len(kind), dtype=bool)

    pct = kind == "percent_off"
    applied = np.where(recorded, discount, t["percent"] * amount)
    capped = np.where(np.isnan(t["max_discount"]), applied, np.minimum(applied, t["max_discount"]))
    take = pct & ~np.isnan(capped)
    cost, known = np.where(take, capped, cost), known | take

    off = kind == "amount_off"
    applied = np.where(recorded, np.minimum(discount, np.where(np.isnan(t["amount_off"]), discount, t["amount_off"])),
                       np.minimum(t["amount_off"], amount))
    take = off & ~np.isnan(applied)
    cost, known = np.where(take, applied, cost), known | take

    points = t["points"] * np.where(np.isnan(t["point_value"]), DEFAULT_POINT_VALUE, t["point_value"])
    take = (kind == "bonus_points") & ~np.isnan(points)
    cost, known = np.where(take, points, cost), known | take

    take = (kind == "free_shipping") & ~np.isnan(t["shipping_cost"])
    cost, known = np.where(take, t["shipping_cost"], cost), known | take

    gift = t["gift_cost"] + np.nan_to_num(t["amount_off"])
    take = (kind == "birthday_gift") & ~np.isnan(gift)
    cost, known = np.where(take, gift, cost), known | take

    other = ~np.isin(kind, ["percent_off", "amount_off", "bonus_points", "free_shipping", "birthday_gift"])
    known |= other & recorded
    cost = np.where(np.isnan(cost), np.nan_to_num(np.asarray(fallback, dtype=float)), cost)
    cost = cost + np.where(known, np.nan_to_num(t["fixed_cost"]), 0.0)
    return cost, known


def contact_costs(channel: pd.Series, sent: np.ndarray, rates: Mapping[str, float],
                  sms_segments: pd.Series | None = None) -> np.ndarray:
    """Cost of each message: the channel's rate if it was really sent, × its SMS segments (default 1)."""
    rate = channel.astype("string").map(dict(rates)).astype("float64").fillna(0.0).to_numpy()
    units = np.ones(len(channel))
    if sms_segments is not None:
        seg = pd.to_numeric(sms_segments, errors="coerce").to_numpy(dtype=float)
        is_sms = channel.astype("string").eq("sms").fillna(False).to_numpy(dtype=bool)
        units = np.where(is_sms & np.isfinite(seg) & (seg >= 1), seg, 1.0)
    return np.where(np.asarray(sent, dtype=bool), rate * units, 0.0)


def incremental_margin(diff_per_customer: float, n_treated: int, gross_margin: float) -> float:
    """Incremental gross margin: (order value per customer, treated − holdout) × treated × margin."""
    if not n_treated:
        return math.nan
    return diff_per_customer * n_treated * gross_margin


def net_value(margin: float, offer_cost: float, contact_cost: float) -> float:
    """Net incremental value: incremental gross margin − realized offer cost − contact cost."""
    return margin - offer_cost - contact_cost


def roi(net: float, offer_cost: float, contact_cost: float) -> float | None:
    """ROI = net incremental value / total cost; None when nothing was spent or the net is unknown."""
    spent = offer_cost + contact_cost
    if spent <= 0 or net is None or not math.isfinite(net):
        return None
    return net / spent


def money_columns(diff: float, ci_low: float, ci_high: float, n_treated: int, *, gross_margin: float,
                  offer_cost: float, contact_cost: float) -> dict[str, Any]:
    """The money figures of one comparison (overall, an arm pair, a breakdown group), from the per-customer
    order-value difference and its CI."""
    margin = incremental_margin(diff, n_treated, gross_margin)
    net = net_value(margin, offer_cost, contact_cost)
    return {
        "incremental_margin": margin,
        "margin_ci_low": incremental_margin(ci_low, n_treated, gross_margin),
        "margin_ci_high": incremental_margin(ci_high, n_treated, gross_margin),
        "offer_cost": offer_cost,
        "contact_cost": contact_cost,
        "total_cost": offer_cost + contact_cost,
        "net_incremental_value": net,
        "roi": roi(net, offer_cost, contact_cost),
    }
