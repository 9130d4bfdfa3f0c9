"""Offer choice: per customer the eligible offer with the highest expected net value, caps, and budget.

Expected net value is incremental, so a discount given to someone who would have returned anyway
counts as a cost:  ENV = margin × (P(return | offer) − P(return | no contact)) × spend_with_offer
− P(return | offer) × redemption_rate × cost_if_redeemed − contact_cost(channel),
with spend_with_offer = max(EOV, min_spend) and the offer's uplift scaled by min(1, EOV / min_spend).
Customers whose best ENV is not positive are not spent on: excluded (`negative_value`) or, when the
campaign says so, sent a plain reminder. Customers who buy almost only with a discount (share of
discounted orders at or above `offer_guard.max_discount_share`) are offered no discount (`coupon_abuse`).

Under a budget (`apply_budget`) the costly offers go to the customers with the most expected net value
per unit of cost — a greedy knapsack by ratio (not the exact optimum: an item that does not fit is
skipped and smaller ones after it may still fit) — and offers that cost nothing are never cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from winback.offers.catalog import (
    baseline_return,
    cost_if_redeemed,
    expected_order_value,
    offer_eligible,
    prior_uplift,
    spend_with_offer,
)
from winback.offers.learning import Learner
from winback.policy.holdout import holdout_hash

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign, Offer

def _no_offer():
    from winback.campaigns.model import Offer

    return Offer(id="no_offer", kind="reminder", template="call_task", prior_uplift=0.0)


CHOICE_COLUMNS = ["offer", "offer_kind", "p_base", "p_return", "expected_cost", "expected_net_value",
                  "offer_reason", "choice_reason", "runner_up", "runner_up_net_value", "offer_guard",
                  "free_offer", "free_offer_kind", "free_p_return", "free_expected_cost", "free_expected_net_value"]
# Offer kinds that give money off an order: what the coupon-abuse guard withholds.
DISCOUNT_KINDS = frozenset({"percent_off", "amount_off"})


def coupon_abuse(frame: pd.DataFrame, campaign: Campaign) -> pd.Series:
    """The guard's reason per customer (NA when not triggered): a share of discounted orders at or above the
    campaign's `offer_guard.max_discount_share`, over at least `offer_guard.min_orders` orders."""
    out = pd.Series(pd.NA, index=frame.index, dtype="string")
    guard = campaign.offer_guard
    if guard.max_discount_share is None or "discount_share" not in frame.columns:
        return out
    share = pd.to_numeric(frame["discount_share"], errors="coerce").astype("float64")
    orders = pd.to_numeric(frame["n_orders"], errors="coerce").fillna(0) if "n_orders" in frame.columns else \
        pd.Series(guard.min_orders, index=frame.index)
    hit = (share >= guard.max_discount_share) & (orders >= guard.min_orders)
    text = "coupon_abuse: " + share.map(lambda v: f"{v:.0%}") + \
        f" of orders discounted (limit {guard.max_discount_share:.0%})"
    return out.mask(hit.fillna(False), text)


def _learned_uplift(frame: pd.DataFrame, campaign: Campaign, kind: str, learner: Learner,
                    rng: np.random.Generator, buckets: np.ndarray) -> pd.Series:
    """Thompson draws per (value tier, bucket): probability matching without one call per customer."""
    out = pd.Series(np.nan, index=frame.index, dtype="float64")
    tiers = frame["value_tier"].astype("string").to_numpy()
    for tier in sorted({t for t in tiers if isinstance(t, str)}):
        in_tier = tiers == tier
        for bucket in np.unique(buckets[in_tier]):
            draw = learner.sample_uplift(kind, tier, rng)
            if draw is not None:
                out.iloc[np.flatnonzero(in_tier & (buckets == bucket))] = float(draw)
    return out


def offer_figures(frame: pd.DataFrame, campaign: Campaign, offer: Offer, *, channel: pd.Series,
                  uplift: pd.Series | None = None, eov: pd.Series | None = None,
                  p_base: pd.Series | None = None) -> pd.DataFrame:
    """p_base, p_return, expected_cost and expected_net_value of giving `offer` to every row (no eligibility).

    `uplift` (aligned, NaN = use the prior) carries learned draws; `channel` prices the contact and adds
    the account manager's call uplift on `call_task` rows.
    """
    eov = expected_order_value(frame) if eov is None else eov
    p_base = baseline_return(frame, campaign) if p_base is None else p_base
    channel = channel.astype("string").reindex(frame.index)
    is_call = (channel == "call_task").fillna(False).to_numpy(dtype=bool)
    call_up = frame["likely_reason"].astype("string").map(campaign.priors.call_uplift)
    call_up = call_up.astype("float64").fillna(0.0).to_numpy()
    contact = channel.map(campaign.economics.contact_costs).astype("float64").fillna(0.0).to_numpy()
    up = prior_uplift(frame, offer, campaign)
    if uplift is not None:
        up = uplift.fillna(up)
    base = p_base.to_numpy(dtype="float64")
    eov_a = eov.to_numpy(dtype="float64")
    stretch = 1.0
    if offer.min_spend:
        # A minimum spend far above what the customer usually spends makes the offer less tempting.
        stretch = np.clip(eov_a / offer.min_spend, 0.0, 1.0)
    p = np.clip(base + up.to_numpy() * stretch + np.where(is_call, call_up, 0.0), 0.0, 1.0)
    spend = np.asarray(spend_with_offer(offer, eov), dtype="float64")
    c = p * offer.redemption_rate * cost_if_redeemed(offer, pd.Series(spend, index=frame.index)).to_numpy()
    c = c + contact
    # Only the incremental returners add revenue; those who would have come back anyway are assumed to
    # spend as usual (no credit for a minimum-spend stretch), but they still redeem the offer (cost).
    value = campaign.economics.gross_margin * (p - base) * spend
    return pd.DataFrame({"p_base": base, "p_return": p, "expected_cost": c, "expected_net_value": value - c},
                        index=frame.index)


def choose_offers(frame: pd.DataFrame, campaign: Campaign, *, as_of: pd.Timestamp, seed: int | None = None,
                  learner: Learner | None = None, channel: pd.Series | None = None) -> pd.DataFrame:
    """Choose each customer's offer by expected net value under eligibility and per-offer caps.

    `frame` needs `customer_id`, `value_tier`, `lapse_stage`, `likely_reason` and ideally
    `expected_order_value`/`monetary`, `birthday`. `channel` (aligned) prices the contact and adds the
    account manager's call uplift on `call_task` rows. Returns CHOICE_COLUMNS on `frame.index`;
    `offer_reason` is NA when an offer was chosen, else `no_eligible_offer`, `offer_cap` or `negative_value`.
    """
    n = len(frame)
    offers = list(campaign.offers)
    k = len(offers)
    index = frame.index
    if channel is None:
        channel = pd.Series(campaign.channels[0], index=index, dtype="string")
    channel = channel.astype("string").reindex(index)
    rng = np.random.default_rng(campaign.seed if seed is None else seed)
    eov = expected_order_value(frame)
    p_base = baseline_return(frame, campaign)
    is_call = (channel == "call_task").fillna(False).to_numpy(dtype=bool)
    buckets = None
    if learner is not None:
        u = holdout_hash(f"{campaign.id}:learning", frame["customer_id"]).to_numpy()
        buckets = np.floor(u * campaign.learning.thompson_buckets).astype(int)

    env = np.full((n, k), -np.inf)
    p_ret = np.zeros((n, k))
    cost = np.zeros((n, k))
    eligible = np.zeros((n, k), dtype=bool)
    guard = coupon_abuse(frame, campaign)
    guarded = guard.notna().to_numpy(dtype=bool)
    for j, offer in enumerate(offers):
        ok = offer_eligible(frame, offer, as_of=as_of).to_numpy(dtype=bool, copy=True)
        if offer.kind in DISCOUNT_KINDS:
            ok &= ~guarded
        if is_call.any() and not campaign.human_followup.with_offer:
            ok &= ~is_call
        up = None
        if learner is not None:
            up = _learned_uplift(frame, campaign, offer.kind, learner, rng, buckets)
        fig = offer_figures(frame, campaign, offer, channel=channel, uplift=up, eov=eov, p_base=p_base)
        eligible[:, j] = ok
        p_ret[:, j] = fig["p_return"].to_numpy()
        cost[:, j] = fig["expected_cost"].to_numpy()
        env[:, j] = np.where(ok, fig["expected_net_value"].to_numpy(), -np.inf)

    had_positive = (env > 0).any(axis=1)
    candidate = np.where(env > 0, env, -np.inf)
    ids = frame["customer_id"].astype("string").to_numpy()
    # Per-offer caps: keep the cap's best customers (ties by id), move the rest to their next best offer.
    caps = [(j, o.cap) for j, o in enumerate(offers) if o.cap is not None]
    for _ in range(k + 1):
        best = np.argmax(candidate, axis=1)
        has = np.isfinite(candidate[np.arange(n), best])
        changed = False
        for j, cap in caps:
            rows = np.flatnonzero(has & (best == j))
            if len(rows) <= cap:
                continue
            order = np.lexsort((ids[rows], -candidate[rows, j]))
            candidate[rows[order[cap:]], j] = -np.inf
            changed = True
        if not changed:
            break
    best = np.argmax(candidate, axis=1) if k else np.zeros(n, dtype=int)
    has = np.isfinite(candidate[np.arange(n), best]) if k else np.zeros(n, dtype=bool)

    chosen = np.where(has, best, -1)
    offer_reason = np.full(n, None, dtype=object)
    choice_reason = np.where(has, "best_net_value", None).astype(object)
    reminders = [j for j, o in enumerate(offers) if o.kind == "reminder"]
    if campaign.policy.negative_value == "reminder" and reminders:
        for j in reminders:
            take = (chosen < 0) & eligible[:, j]
            chosen[take] = j
            choice_reason[take] = "reminder_for_negative_value"
    none = chosen < 0
    any_eligible = eligible.any(axis=1)
    offer_reason[none & ~any_eligible] = "no_eligible_offer"
    offer_reason[none & any_eligible & had_positive] = "offer_cap"
    offer_reason[none & any_eligible & ~had_positive] = "negative_value"
    # For excluded rows keep the best eligible offer's figures so the audit shows why (e.g. negative).
    shown = np.where(none, np.argmax(env, axis=1) if k else 0, chosen)
    rows = np.arange(n)
    shown_ok = eligible[rows, shown] if k else np.zeros(n, dtype=bool)
    ids_of = np.array([o.id for o in offers], dtype=object)
    kinds_of = np.array([o.kind for o in offers], dtype=object)
    p_show = np.where(shown_ok, p_ret[rows, shown], np.nan)
    cost_show = np.where(shown_ok, cost[rows, shown], np.nan)
    env_show = np.where(shown_ok, env[rows, shown], np.nan)
    bare_call = is_call & ~campaign.human_followup.with_offer
    if bare_call.any():
        # A call without an offer: the manager's call is the treatment; its value is the call uplift.
        fig = offer_figures(frame, campaign, _no_offer(), channel=channel, eov=eov, p_base=p_base)
        none = none & ~bare_call
        chosen = np.where(bare_call, -1, chosen)
        offer_reason[bare_call] = None
        choice_reason[bare_call] = "human_followup"
        p_show = np.where(bare_call, fig["p_return"].to_numpy(), p_show)
        cost_show = np.where(bare_call, fig["expected_cost"].to_numpy(), cost_show)
        env_show = np.where(bare_call, fig["expected_net_value"].to_numpy(), env_show)
    has_offer = ~none & (chosen >= 0)
    # The runner-up: the best other eligible offer (what the customer would have had instead).
    if k:
        others = np.where(eligible, env, -np.inf)
        others[rows[chosen >= 0], chosen[chosen >= 0]] = -np.inf
        second = np.argmax(others, axis=1)
        has_second = np.isfinite(others[rows, second]) & (has_offer | bare_call)
    else:
        second, has_second = np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
    # The best offer that costs nothing (contact included), for customers a budget leaves out of a costly one.
    free = np.where(eligible & (cost <= 0) & ((env > 0) | (campaign.policy.negative_value == "reminder")),
                    env, -np.inf) if k else np.zeros((n, 0))
    best_free = np.argmax(free, axis=1) if k else np.zeros(n, dtype=int)
    has_free = np.isfinite(free[rows, best_free]) & ~bare_call if k else np.zeros(n, dtype=bool)
    out = pd.DataFrame({
        "offer": pd.array(np.where(has_offer, ids_of[shown] if k else None, None), dtype="string"),
        "offer_kind": pd.array(np.where(has_offer, kinds_of[shown] if k else None, None), dtype="string"),
        "p_base": p_base.to_numpy(),
        "p_return": p_show,
        "expected_cost": cost_show,
        "expected_net_value": env_show,
        "offer_reason": pd.array(offer_reason, dtype="string"),
        "choice_reason": pd.array(choice_reason, dtype="string"),
        "runner_up": pd.array(np.where(has_second, ids_of[second] if k else None, None), dtype="string"),
        "runner_up_net_value": np.where(has_second, env[rows, second] if k else np.nan, np.nan),
        "offer_guard": guard,
        "free_offer": pd.array(np.where(has_free, ids_of[best_free] if k else None, None), dtype="string"),
        "free_offer_kind": pd.array(np.where(has_free, kinds_of[best_free] if k else None, None), dtype="string"),
        "free_p_return": np.where(has_free, p_ret[rows, best_free] if k else np.nan, np.nan),
        "free_expected_cost": np.where(has_free, cost[rows, best_free] if k else np.nan, np.nan),
        "free_expected_net_value": np.where(has_free, env[rows, best_free] if k else np.nan, np.nan),
    }, index=index)
    return out


def apply_budget(customer_ids: pd.Series, expected_cost: pd.Series, expected_net_value: pd.Series,
                 budget: float | None, *, counts: pd.Series | None = None, weights: pd.Series | None = None,
                 priority: pd.Series | None = None) -> pd.Series:
    """True for customers kept within `budget`. A greedy knapsack by expected net value per unit of cost.

    Rows that cost nothing (`expected_cost` ≤ 0) are always kept. Costly rows are taken by `priority`
    (higher first, default none), then net value per unit of `weights` (default the cost; e.g. the cost of
    the whole cadence), ties by id; each is kept when its weight fits in what is left, and then, if it is a
    counted row (`counts`, e.g. the treatment arm), uses it up. Uncounted rows (the holdout) take the same
    decision without spending, so both arms lose the same kind of customer. Order-independent.
    """
    keep = pd.Series(True, index=customer_ids.index)
    if budget is None or customer_ids.empty:
        return keep
    cost = expected_cost.fillna(0.0).astype("float64")
    weight = cost if weights is None else weights.reindex(cost.index).fillna(cost).astype("float64")
    counted = pd.Series(True, index=customer_ids.index) if counts is None else counts.astype(bool)
    costly = (cost > 0).to_numpy()
    if not costly.any():
        return keep
    env = expected_net_value.fillna(-np.inf).astype("float64").to_numpy()[costly]
    w = np.maximum(weight.to_numpy()[costly], cost.to_numpy()[costly])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ratio = np.where(w > 0, env / np.where(w > 0, w, 1.0), np.inf)
    prio = np.zeros(len(w)) if priority is None else priority.reindex(cost.index).fillna(0).to_numpy()[costly]
    ids = customer_ids.astype("string").to_numpy()[costly]
    order = np.lexsort((ids, -ratio, -prio))
    left = float(budget)
    kept = np.zeros(len(w), dtype=bool)
    spends = counted.to_numpy()[costly]
    for i in order:
        if w[i] <= left + 1e-9:
            kept[i] = True
            if spends[i]:
                left -= w[i]
    keep.iloc[np.flatnonzero(costly)] = kept
    return keep
