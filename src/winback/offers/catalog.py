"""The offer catalog over a customer frame: eligibility, priors of return, and the unit cost model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign, Offer


def in_birthday_window(birthday: pd.Series, as_of: pd.Timestamp, *, before: int, after: int) -> pd.Series:
    """True where the customer's birthday (month/day) falls within [as_of − before, as_of + after] days.

    29 February counts as 28 February in common years. Years are irrelevant (only month and day).
    """
    bday = pd.to_datetime(birthday, errors="coerce")
    if getattr(bday.dt, "tz", None) is not None:
        bday = bday.dt.tz_localize(None)
    today = pd.Timestamp(as_of).tz_convert("UTC").tz_localize(None).normalize()
    month = bday.dt.month.to_numpy(dtype="float64")
    day = bday.dt.day.to_numpy(dtype="float64")
    ok = ~np.isnan(month)
    hit = np.zeros(len(bday), dtype=bool)
    if not ok.any():
        return pd.Series(hit, index=birthday.index)
    m = month[ok].astype(int)
    d = day[ok].astype(int)
    sub = np.zeros(ok.sum(), dtype=bool)
    for year in (today.year - 1, today.year, today.year + 1):
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        dd = np.where((m == 2) & (d == 29) & (not leap), 28, d)
        dates = pd.to_datetime({"year": np.full(len(m), year), "month": m, "day": dd})
        delta = (dates - today).dt.days.to_numpy()
        sub |= (delta >= -before) & (delta <= after)
    hit[ok] = sub
    return pd.Series(hit, index=birthday.index)


def offer_eligible(frame: pd.DataFrame, offer: Offer, *, as_of: pd.Timestamp) -> pd.Series:
    """True where the offer may go to the customer (tiers, reasons, stages, and the birthday window)."""
    ok = pd.Series(True, index=frame.index)
    rules = offer.eligibility
    if rules.value_tiers is not None:
        ok &= frame["value_tier"].isin(rules.value_tiers).fillna(False).astype(bool)
    if rules.reasons is not None:
        ok &= frame["likely_reason"].isin(rules.reasons).fillna(False).astype(bool)
    if rules.lapse_stages is not None:
        ok &= frame["lapse_stage"].isin(rules.lapse_stages).fillna(False).astype(bool)
    if offer.kind == "birthday_gift":
        if "birthday" in frame.columns:
            ok &= in_birthday_window(frame["birthday"], as_of, before=offer.birthday_days_before,
                                     after=offer.birthday_days_after)
        else:
            ok &= False
    return ok


def expected_order_value(frame: pd.DataFrame) -> pd.Series:
    """Gamma-Gamma expected order value, else the customer's mean, else the tier median, else overall."""
    eov = pd.Series(np.nan, index=frame.index, dtype="float64")
    for column in ("expected_order_value", "monetary"):
        if column in frame.columns:
            eov = eov.fillna(pd.to_numeric(frame[column], errors="coerce").astype("float64"))
    eov = eov.where(eov > 0)
    if "value_tier" in frame.columns:
        eov = eov.fillna(eov.groupby(frame["value_tier"].astype("string")).transform("median"))
    overall = eov.median()
    return eov.fillna(0.0 if pd.isna(overall) else overall).astype("float64")


def baseline_return(frame: pd.DataFrame, campaign: Campaign) -> pd.Series:
    """Prior P(return in the window | no contact): base rate by tier × factor by lapse stage."""
    priors = campaign.priors
    base = frame["value_tier"].astype("string").map(priors.base_return).astype("float64")
    factor = frame["lapse_stage"].astype("string").map(priors.stage_factor).astype("float64").fillna(1.0)
    fallback = float(np.mean(list(priors.base_return.values()))) if priors.base_return else 0.05
    return (base.fillna(fallback) * factor).clip(0.0, 0.95)


def prior_uplift(frame: pd.DataFrame, offer: Offer, campaign: Campaign) -> pd.Series:
    """Prior uplift of return probability for this offer: by kind × reason (or the offer's override) × tier."""
    priors = campaign.priors
    reason = frame["likely_reason"].astype("string")
    if isinstance(offer.prior_uplift, float | int):
        up = pd.Series(float(offer.prior_uplift), index=frame.index)
    else:
        table = dict(priors.uplift.get(offer.kind, {}))
        if isinstance(offer.prior_uplift, dict):
            table.update(offer.prior_uplift)
        up = reason.map(table).astype("float64").fillna(0.0)
    factor = frame["value_tier"].astype("string").map(priors.tier_factor).astype("float64").fillna(1.0)
    return (up * factor).astype("float64")


def spend_with_offer(offer: Offer, eov: pd.Series) -> pd.Series:
    """Expected order value when the offer is used: at least the minimum spend of an amount-off offer."""
    if offer.min_spend:
        return np.maximum(eov, offer.min_spend)
    return eov


def cost_if_redeemed(offer: Offer, spend: pd.Series) -> pd.Series:
    """The shop's cost when the offer is redeemed: discount × order value, fixed amount, points, shipping, gift."""
    kind = offer.kind
    if kind == "percent_off":
        cost = spend * (offer.percent / 100.0)
        if offer.max_discount is not None:
            cost = cost.clip(upper=offer.max_discount)
    elif kind == "amount_off":
        cost = pd.Series(float(offer.amount), index=spend.index)
    elif kind == "bonus_points":
        cost = pd.Series(offer.points * offer.point_value, index=spend.index)
    elif kind == "free_shipping":
        cost = pd.Series(float(offer.shipping_cost), index=spend.index)
    elif kind == "birthday_gift":
        cost = pd.Series(float(offer.gift_cost) + float(offer.amount or 0.0), index=spend.index)
    else:  # reminder, service_recovery: no incentive
        cost = pd.Series(0.0, index=spend.index)
    return (cost + offer.fixed_cost).astype("float64")
