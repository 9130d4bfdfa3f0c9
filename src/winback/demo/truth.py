"""The demo world's ground-truth response model: who returns in 30 days, with and without an offer.

For every customer the generator knows the latent state (alive or dead, purchase rate λ, why they
slipped, true value tier, recency, birthday). From it we write, beside the data, the probability of
placing at least one order in the next 30 days:

Baseline (no contact)
    alive:  p_base = 1 − exp(−30·λ_eff)                      (Poisson purchases at rate λ_eff/day;
            λ_eff = λ × 0.12 once faded × (1 − favourite share) after a move to a competitor)
    dead:   p_base = 0.004 + 0.03·exp(−d/120)                (spontaneous reactivation, d = days since
            their last order; a customer who dropped out recently sometimes wanders back)
    never ordered: p_base = 0.01

Treated with an offer of kind k (a message carrying it)
    u_k    = E[reason, k] · M_k[tier] · R[tier] · F · B_k            (the *incremental* conversion)
    p_k    = 1 − (1 − p_base)·(1 − u_k)                          (so p_k ≥ p_base always)
where E is the effect table below (absolute probability for a gold-ish customer), M_k the kind's
tier affinity (points please big spenders, free shipping small baskets), R[tier] the general
responsiveness of the tier, F = 0.35 + 0.65·exp(−d/365) for dead customers (lost long ago ⇒ harder
to win back; F = 1 for alive ones) and B_k the birthday factor (birthday_gift ×2 when the birthday
falls in the next 30 days, ×0.3 otherwise; 1 for the other kinds); u_k is capped at 0.15.
A call by the account manager (channel `call_task`) uses the `call` column of E with
R[tier]·F, ×0.6 when the customer has no account manager (a service agent calls instead).

Which offer is truly best (u_k before R and F, which scale all kinds alike):
    service      → service_recovery (11 pp)          price      → percent_off (8–11 pp)
    competitor   → amount_off (gold/iron/lead), bonus_points (platinum)
    manager_left → call (12 pp); among messages bonus_points (platinum/gold/iron), amount_off (lead)
    forgotten    → reminder (10 pp: platinum/gold/iron), free_shipping (lead); birthday_gift for
                   platinum/gold/iron customers whose birthday is in the window (11 pp × affinity)
    none         → pull-forward of purchases: percent_off/amount_off ≈ 4–6 pp (≤ 10 pp at most)
so each kind wins for some (tier, reason) group, and a learner can find it. The largest effects
(12–15 pp) need a well-matched offer on a slipping (faded) or recently lapsed platinum/gold customer;
a typical lapsing audience averages ≈ 4 pp.

Returning customers order for `return_order_value` = their own mean order value (Gamma-Gamma mean).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from winback.errors import DataError
from winback.vocab import OFFER_KINDS, REASONS, VALUE_TIERS

# Effect table E[reason, kind] in absolute probability (see module docstring). Columns: OFFER_KINDS
# then "call". Values chosen so that well-matched offers move 30-day return by ~10–15 pp and the
# rest by a few points, as reported for retail win-back programmes.
EFFECT_COLUMNS = (*OFFER_KINDS, "call")
EFFECT = pd.DataFrame(
    [
        # reminder pct   amt   pts   ship  bday  svc   call
        [0.010, 0.030, 0.030, 0.020, 0.015, 0.020, 0.110, 0.090],  # service
        [0.010, 0.100, 0.080, 0.030, 0.050, 0.030, 0.010, 0.020],  # price
        [0.020, 0.030, 0.030, 0.055, 0.015, 0.040, 0.030, 0.120],  # manager_left
        [0.010, 0.060, 0.080, 0.035, 0.030, 0.020, 0.010, 0.040],  # competitor
        [0.100, 0.055, 0.055, 0.045, 0.060, 0.055, 0.010, 0.050],  # forgotten
        [0.040, 0.055, 0.055, 0.035, 0.040, 0.030, 0.005, 0.035],  # none: pull-forward of purchases
    ],
    index=list(REASONS),
    columns=list(EFFECT_COLUMNS),
)
# Tier affinity M_k[tier] per kind (rows: kinds, columns: VALUE_TIERS best first).
TIER_AFFINITY = pd.DataFrame(
    [
        [1.0, 1.0, 1.0, 1.0],  # reminder
        [0.8, 0.9, 1.0, 1.1],  # percent_off
        [0.7, 0.9, 1.1, 1.2],  # amount_off: a fixed amount matters more to small baskets
        [1.8, 1.4, 0.9, 0.6],  # bonus_points: valuable to those who collect many points
        [0.4, 0.7, 1.2, 1.8],  # free_shipping: shipping is a large share of a small basket
        [1.3, 1.2, 1.0, 0.9],  # birthday_gift
        [1.0, 1.0, 1.0, 1.0],  # service_recovery
        [1.0, 1.0, 1.0, 1.0],  # call
    ],
    index=list(EFFECT_COLUMNS),
    columns=list(VALUE_TIERS),
)
# General responsiveness R[tier] to any win-back contact.
TIER_RESPONSIVENESS = pd.Series([1.25, 1.15, 1.0, 0.8], index=list(VALUE_TIERS))
BIRTHDAY_IN_WINDOW = 2.0
MAX_EFFECT = 0.15  # no single contact adds more than 15 points of 30-day return probability
BIRTHDAY_OUT_OF_WINDOW = 0.3
CALL_WITHOUT_MANAGER = 0.6
PROBABILITY_COLUMNS = tuple(f"p_{k}" for k in OFFER_KINDS) + ("p_call",)
TRUTH_COLUMNS = (
    "customer_id", "true_reason", "alive", "p_base", *PROBABILITY_COLUMNS, "return_order_value",
    "true_tier", "true_value", "purchase_rate", "dropout_p", "price_sensitivity", "birthday_window",
    "days_since_last_order", "favourite_category",
)


def baseline_probability(alive: np.ndarray, rate_eff: np.ndarray, days_since_last: np.ndarray,
                         has_orders: np.ndarray, days: int = 30) -> np.ndarray:
    """P(≥1 order within `days` without contact) from the latent state (see module docstring)."""
    d = np.nan_to_num(days_since_last, nan=9999.0)
    p_alive = 1.0 - np.exp(-days * rate_eff)
    p_dead = 0.004 + 0.03 * np.exp(-d / 120.0)
    p = np.where(alive, p_alive, p_dead)
    return np.where(has_orders, p, 0.01)


def incremental_effects(reason: np.ndarray, tier: np.ndarray, alive: np.ndarray,
                        days_since_last: np.ndarray, birthday_window: np.ndarray,
                        has_manager: np.ndarray) -> dict[str, np.ndarray]:
    """u_k per customer for every offer kind and for `call` (module docstring formula)."""
    r_idx = pd.Index(EFFECT.index).get_indexer(reason)
    t_idx = pd.Index(TIER_AFFINITY.columns).get_indexer(tier)
    if (r_idx < 0).any() or (t_idx < 0).any():
        raise DataError("unknown reason or tier in the latent state")
    d = np.nan_to_num(days_since_last, nan=730.0)
    freshness = np.where(alive, 1.0, 0.35 + 0.65 * np.exp(-d / 365.0))
    scale = TIER_RESPONSIVENESS.to_numpy()[t_idx] * freshness
    out: dict[str, np.ndarray] = {}
    effect = EFFECT.to_numpy()
    affinity = TIER_AFFINITY.to_numpy()
    for j, kind in enumerate(EFFECT_COLUMNS):
        u = effect[r_idx, j] * affinity[j, t_idx] * scale
        if kind == "birthday_gift":
            u = u * np.where(birthday_window, BIRTHDAY_IN_WINDOW, BIRTHDAY_OUT_OF_WINDOW)
        if kind == "call":
            u = u * np.where(has_manager, 1.0, CALL_WITHOUT_MANAGER)
        out[kind] = np.clip(u, 0.0, MAX_EFFECT)
    return out


def treated_probabilities(p_base: np.ndarray, effects: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """p_k = 1 − (1 − p_base)(1 − u_k) for every kind and `call`; column names `p_<kind>`."""
    return {f"p_{k}": 1.0 - (1.0 - p_base) * (1.0 - u) for k, u in effects.items()}


def contact_probability(truth: pd.DataFrame, offer_kind: pd.Series, channel: pd.Series) -> np.ndarray:
    """Per row: the truth's return probability when contacted with `offer_kind` over `channel`.

    `truth` must already be aligned row by row with the two series. `call_task` uses `p_call`;
    a message without an offer (kind NA) is treated as a `reminder`.
    """
    kind = offer_kind.astype("str").fillna("reminder").to_numpy(dtype=object)
    kind = np.where(pd.isna(offer_kind).to_numpy(), "reminder", kind)
    unknown = sorted(set(np.unique(kind)) - set(OFFER_KINDS))
    if unknown:
        raise DataError(f"unknown offer_kind {unknown[0]!r}; expected one of {', '.join(OFFER_KINDS)}",
                        column="offer_kind")
    is_call = (channel.astype("str").fillna("") == "call_task").to_numpy()
    columns = [f"p_{k}" for k in OFFER_KINDS]
    matrix = truth[columns].to_numpy(dtype=float)
    col_idx = pd.Index(OFFER_KINDS).get_indexer(kind)
    p = matrix[np.arange(len(truth)), col_idx]
    return np.where(is_call, truth["p_call"].to_numpy(dtype=float), p)


def true_uplift(truth: pd.DataFrame, assignments: pd.DataFrame, *, by: str | list[str] | None = None,
                days: int = 30):
    """True expected uplift of the 30-day return rate, mean(p_treated − p_base), for the assignments.

    `assignments`: `customer_id`, `offer_kind`, optional `channel` (call_task → p_call), optional
    `contacted` (False → p_base, intention to treat) and, for cadences, several rows per customer
    (steps): their incremental conversions combine as 1 − Π(1 − u_step). Returns a float, or with
    `by` (columns of `assignments`, taken from each customer's first row) a DataFrame with `n`,
    `p_base`, `p_treated`, `uplift` per group.
    """
    if days != 30:
        raise DataError("the demo world's truth is defined for a 30-day window", column="days")
    per_customer = treated_per_customer(truth, assignments)
    if by is None:
        return float((per_customer["p_treated"] - per_customer["p_base"]).mean()) if len(per_customer) else 0.0
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in per_customer.columns]
    if missing:
        raise DataError(f"column {missing[0]!r} not in the assignments", column=missing[0])
    per_customer["uplift"] = per_customer["p_treated"] - per_customer["p_base"]
    grouped = per_customer.groupby(keys, dropna=False, observed=True, sort=True)
    return grouped.agg(n=("customer_id", "size"), p_base=("p_base", "mean"),
                       p_treated=("p_treated", "mean"), uplift=("uplift", "mean")).reset_index()


def treated_per_customer(truth: pd.DataFrame, contacts: pd.DataFrame) -> pd.DataFrame:
    """One row per customer of `contacts`: its first row's columns plus `p_base` and `p_treated`."""
    for col in ("customer_id", "offer_kind"):
        if col not in contacts.columns:
            raise DataError(f"missing required column {col!r}", column=col)
    idx = pd.Index(truth["customer_id"]).get_indexer(contacts["customer_id"])
    if (idx < 0).any():
        unknown = contacts["customer_id"].to_numpy()[idx < 0][0]
        raise DataError(f"customer {unknown!r} is not in the demo world's truth", column="customer_id")
    aligned = truth.iloc[idx].reset_index(drop=True)
    channel = contacts["channel"] if "channel" in contacts.columns else pd.Series([""] * len(contacts))
    p_contact = contact_probability(aligned, contacts["offer_kind"].reset_index(drop=True),
                                    channel.reset_index(drop=True))
    p_base = aligned["p_base"].to_numpy(dtype=float)
    if "contacted" in contacts.columns:
        contacted = contacts["contacted"].fillna(False).astype(bool).to_numpy()
        p_contact = np.where(contacted, p_contact, p_base)
    # Incremental conversion of each contact, combined per customer: 1 − Π(1 − u).
    u = 1.0 - (1.0 - p_contact) / np.maximum(1.0 - p_base, 1e-12)
    frame = contacts.reset_index(drop=True).copy()
    frame["_log_miss"] = np.log1p(-np.clip(u, 0.0, 1.0 - 1e-12))
    frame["p_base"] = p_base
    first = frame.groupby("customer_id", sort=False).head(1).set_index("customer_id")
    log_miss = frame.groupby("customer_id", sort=False)["_log_miss"].sum()
    first = first.drop(columns="_log_miss")
    u_all = 1.0 - np.exp(log_miss.reindex(first.index).to_numpy())
    first["p_treated"] = 1.0 - (1.0 - first["p_base"].to_numpy()) * (1.0 - u_all)
    return first.reset_index()
