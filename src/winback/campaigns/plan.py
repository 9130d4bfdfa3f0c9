"""The plan: who is contacted, on which channel, when, with which offer, template and coupon — and
why everyone else is not. Pure: frames, a campaign, an as-of time and the campaign's seed in, a
decision table out (docs/CONTRACTS.md "Campaigns and the plan")."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from winback.campaigns.model import CadenceStep, Campaign
from winback.campaigns.talking_points import call_history_line, talking_point
from winback.errors import DataError
from winback.offers.catalog import offer_eligible
from winback.offers.choice import apply_budget, choose_offers, offer_figures
from winback.offers.coupons import check_unique_codes, generate_coupon_codes
from winback.offers.learning import Learner
from winback.policy.contact import apply_contact_policy, ordered_since
from winback.policy.gate import rules_column
from winback.policy.holdout import assign_holdout
from winback.policy.quiet_hours import local_iso, next_allowed_send_time, valid_timezones

PLAN_COLUMNS = [
    "campaign_id", "customer_id", "step", "arm", "reason", "channel", "to_address", "send_at_utc",
    "send_at_local", "timezone", "locale", "offer", "offer_kind", "expected_cost", "expected_net_value",
    "p_return", "template", "coupon_code", "value_tier", "lapse_stage", "likely_reason", "account_manager",
    "context", "as_of", "send_rules",
]
# Beyond the contract: the audit trail behind the decision and the call-list fields.
EXTRA_COLUMNS = ["p_base", "policy_detail", "call_history", "talking_point"]
# The decision trail's own fields (winback.campaigns.decisions turns a plan into decision rows).
TRAIL_COLUMNS = ["policy_checks", "channel_reason", "human_followup", "runner_up", "runner_up_net_value",
                 "offer_guard", "budget_note", "manager_of_record"]

SEGMENT_REQUIRED = ("customer_id", "value_tier", "lapse_stage", "likely_reason")
KNOWN_CUSTOMER_COLUMNS = {
    "customer_id", "email", "phone", "locale", "timezone", "email_opt_in", "sms_opt_in", "first_name",
    "last_name", "birthday", "account_manager", "webhook_id",
}
PRIVATE_CUSTOMER_COLUMNS = {"email", "phone", "email_opt_in", "sms_opt_in", "webhook_id"}


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", file=what,
                        hint="see docs/CONTRACTS.md for the expected columns")


def _utc(ts: Any) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _join(customers: pd.DataFrame, segments: pd.DataFrame) -> pd.DataFrame:
    """Customers (contact data) with their segment row; duplicates and orphans are data errors."""
    _require(customers, ("customer_id",), "customers")
    _require(segments, SEGMENT_REQUIRED, "segments")
    cust = customers.assign(customer_id=customers["customer_id"].astype("string"))
    seg = segments.assign(customer_id=segments["customer_id"].astype("string"))
    for name, frame in (("customers", cust), ("segments", seg)):
        dup = frame["customer_id"].duplicated()
        if dup.any():
            first = frame.loc[dup, "customer_id"].iloc[0]
            raise DataError(f"customer_id {first!r} appears more than once ({int(dup.sum())} duplicates)",
                            file=name, column="customer_id")
    seg = seg[["customer_id", *[c for c in seg.columns if c not in cust.columns]]]
    # Nobody may silently disappear: both frames must describe the same customers (hash join, not isin,
    # which is a Python loop on Arrow strings).
    joined = cust.merge(seg, on="customer_id", how="outer", validate="one_to_one", indicator="_side", sort=False)
    for side, name, other in (("right_only", "segments", "customers"), ("left_only", "customers", "segments")):
        mask = joined["_side"] == side
        if mask.any():
            first = joined.loc[mask, "customer_id"].iloc[0]
            raise DataError(f"{int(mask.sum())} customer(s) are not in {other} (first: {first!r})",
                            file=name, column="customer_id",
                            hint="segment the same customers file the plan uses")
    return joined.drop(columns="_side")


def audience_rules(frame: pd.DataFrame, campaign: Campaign) -> pd.Series:
    """The first audience rule each customer fails (e.g. `lapse_stage active not in [at_risk, lapsing]`);
    NA for customers in the audience (stages, tiers, reasons, P(alive), days since the last order)."""
    aud = campaign.audience
    out = pd.Series(pd.NA, index=frame.index, dtype="string")

    def rule(fails: pd.Series, text: pd.Series | str) -> None:
        nonlocal out
        out = out.mask(fails.fillna(False).astype(bool) & out.isna(), text)

    for column, allowed in (("lapse_stage", aud.lapse_stages), ("value_tier", aud.value_tiers),
                            ("likely_reason", aud.reasons)):
        if allowed is None:
            continue
        values = frame[column].astype("string")
        rule(~values.isin(allowed).fillna(False), f"{column} " + values.fillna("(none)")
             + f" not in [{', '.join(allowed)}]")
    if "p_alive" in frame.columns and (aud.p_alive_min > 0 or aud.p_alive_max < 1):
        p = pd.to_numeric(frame["p_alive"], errors="coerce")
        rule(~(p.between(aud.p_alive_min, aud.p_alive_max) | p.isna()),
             "p_alive " + p.map(lambda v: f"{v:.3f}") + f" outside [{aud.p_alive_min:g}, {aud.p_alive_max:g}]")
    if "recency_days" in frame.columns:
        days = pd.to_numeric(frame["recency_days"], errors="coerce")
        shown = days.map(lambda v: f"{v:.0f}")
        # Customers without orders have no recency; the day limits only apply to those who have one.
        if aud.min_days_since_last_order is not None:
            rule(days < aud.min_days_since_last_order,
                 "days since last order " + shown + f" < {aud.min_days_since_last_order}")
        if aud.max_days_since_last_order is not None:
            rule(days > aud.max_days_since_last_order,
                 "days since last order " + shown + f" > {aud.max_days_since_last_order}")
    return out


def select_audience(frame: pd.DataFrame, campaign: Campaign) -> pd.Series:
    """True for customers in the campaign's audience (no audience rule fails: `audience_rules`)."""
    return audience_rules(frame, campaign).isna()


def _locales(frame: pd.DataFrame, campaign: Campaign) -> pd.Series:
    loc = frame["locale"].astype("string").str.strip() if "locale" in frame.columns else None
    if loc is None:
        return pd.Series(campaign.policy.default_locale, index=frame.index, dtype="string")
    loc = loc.str.replace("_", "-", regex=False)
    return loc.mask(loc.isna() | (loc == ""), campaign.policy.default_locale).astype("string")


def _windows(channel: pd.Series, campaign: Campaign) -> pd.Series:
    windows = {ch: (w.start, w.end) for ch in ("email", "sms", "webhook", "call_task")
               for w in [campaign.policy.window(ch)]}
    default = campaign.policy.window("default")
    return channel.astype("string").map(lambda c: windows.get(c, (default.start, default.end))
                                         if isinstance(c, str) else (default.start, default.end))


def schedule(due_utc: pd.Series, channel: pd.Series, timezones: pd.Series,
             campaign: Campaign, *, now: pd.Timestamp | None = None) -> tuple[pd.Series, pd.Series]:
    """(send_at_utc, send_at_local) in each customer's quiet-hours window for their channel; NaT where no due.

    With `now`, a time already due stays `now` (this very dispatch may send it)."""
    send = pd.Series(pd.NaT, index=due_utc.index, dtype="datetime64[ns, UTC]")
    has = due_utc.notna() & channel.notna()
    # Whole minutes: an as-of of 23:59:59.999999 should not produce a send time with odd seconds.
    due_utc = pd.to_datetime(due_utc, utc=True)
    rounded = due_utc.dt.ceil("min")
    due_utc = rounded if now is None else rounded.where(due_utc > now, now)
    if has.any():
        send.loc[has] = next_allowed_send_time(due_utc[has], timezones[has], _windows(channel[has], campaign))
    return send, local_iso(send, timezones)


def _title(offer_title: str | dict[str, str] | None, locale: str, fallback: dict[str, str]) -> str | None:
    if offer_title is None or isinstance(offer_title, str):
        return offer_title
    if locale in offer_title:
        return offer_title[locale]
    lang = locale.split("-")[0]
    for key, value in offer_title.items():
        if key.split("-")[0] == lang:
            return value
    for pattern, target in fallback.items():
        if (pattern == "*" or (pattern.endswith("-*") and lang == pattern[:-2]) or pattern == locale) \
                and target in offer_title:
            return offer_title[target]
    return next(iter(offer_title.values()), None)


def _py(value: Any) -> Any:
    """A JSON-safe Python value: NA → None, numpy scalars → Python, timestamps → ISO."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _py(value.item())
    return value


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
dumps = _ENCODER.encode


def _iso_utc(values: pd.Series) -> list[str | None]:
    """UTC timestamps as ISO strings (`2026-06-16T15:59:59+00:00`), None for NaT; vectorized with numpy."""
    ts = pd.to_datetime(values, utc=True)
    arr = ts.dt.tz_localize(None).to_numpy(dtype="datetime64[s]")
    text = np.char.add(np.datetime_as_string(arr, unit="s"), "+00:00").astype(object)
    text[np.isnat(arr)] = None
    return text.tolist()


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    """A column as JSON-safe Python values (NA → None, datetimes → ISO strings), vectorized."""
    if name not in frame.columns:
        return [None] * len(frame)
    values = frame[name]
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return _iso_utc(values)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return [None if pd.isna(t) else t.isoformat() for t in values]
    # astype(object) yields Python int/float/bool/str, so json needs no per-value conversion.
    obj = values.astype(object)
    return obj.where(values.notna(), None).tolist()


def _iso_dates(values: pd.Series) -> list[str | None]:
    dt = pd.to_datetime(values, errors="coerce")
    if getattr(dt.dt, "tz", None) is not None:
        dt = dt.dt.tz_convert("UTC")
    text = dt.dt.strftime("%Y-%m-%d")
    return [None if pd.isna(t) else str(t) for t in text]


def build_contexts(frame: pd.DataFrame, campaign: Campaign, *, as_of: pd.Timestamp, step: int,
                   extras: list[str]) -> pd.Series:
    """The render context JSON per row (docs/CONTRACTS.md "Render context"); NA where the row is excluded."""
    out = pd.Series(pd.NA, index=frame.index, dtype="string")
    rows = frame[frame["arm"] != "excluded"]
    if rows.empty:
        return out
    offers = {o.id: o for o in campaign.offers}
    brand = {"name": campaign.brand.name, "url": campaign.brand.url, "currency": campaign.brand.currency,
             "support_phone": campaign.brand.support_phone}
    last = pd.to_datetime(rows["last_order_at"], utc=True) if "last_order_at" in rows else \
        pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns, UTC]")
    days_since = ((as_of - last).dt.total_seconds() // 86400)
    history_cols = {
        "last_order_at": _iso_utc(last),
        "days_since_last_order": days_since.astype("Int64").astype(object).where(days_since.notna(), None).tolist(),
        "total_spend": _column(rows, "total_spend"),
        "orders": _column(rows, "n_orders"),
        "top_category": _column(rows, "top_category"),
    }
    send_day = pd.to_datetime(rows["send_at_local"].str.slice(0, 10), errors="coerce")
    customer_cols = {
        "customer_id": _column(rows, "customer_id"), "first_name": _column(rows, "first_name"),
        "last_name": _column(rows, "last_name"), "locale": _column(rows, "locale"),
        "timezone": _column(rows, "timezone"),
        "birthday": _iso_dates(rows["birthday"]) if "birthday" in rows else [None] * len(rows),
        "account_manager": _column(rows, "account_manager"),
    }
    extra_cols = {name: _column(rows, name) for name in extras}
    offer_ids = _column(rows, "offer")
    codes = _column(rows, "coupon_code")
    calls = list(zip(_column(rows, "call_history"), _column(rows, "talking_point"), _column(rows, "phone"),
                     _column(rows, "email"), strict=True)) \
        if "call_history" in rows else [(None, None, None, None)] * len(rows)
    # Expiry per (offer, local send day) and title per (offer, locale): few distinct values, cached.
    days = [None if pd.isna(d) else d for d in send_day]
    offer_cache: dict[tuple[str, Any, Any], dict[str, Any]] = {}
    default_locale = campaign.policy.default_locale
    texts: list[str] = []
    for i in range(len(rows)):
        customer = {k: v[i] for k, v in customer_cols.items()}
        for k, v in extra_cols.items():
            customer[k] = v[i]
        offer = offers.get(offer_ids[i]) if offer_ids[i] else None
        offer_ctx = None
        survey = None
        if offer is not None:
            key = (offer.id, days[i], customer["locale"])
            offer_ctx = offer_cache.get(key)
            if offer_ctx is None:
                day = days[i]
                expires = None if day is None else (day + pd.Timedelta(days=offer.valid_days)).strftime("%Y-%m-%d")
                offer_ctx = offer_cache[key] = {
                    "id": offer.id, "kind": offer.kind,
                    "title": _title(offer.title, customer["locale"] or default_locale, campaign.locale_fallback),
                    "percent": offer.percent, "amount": offer.amount, "min_spend": offer.min_spend,
                    "points": offer.points, "expires_at": expires, "currency": campaign.brand.currency,
                    # What a redemption really costs (winback.measure.money reads them from the ledger).
                    "max_discount": offer.max_discount, "point_value": offer.point_value if offer.points else None,
                    "shipping_cost": offer.shipping_cost, "gift_cost": offer.gift_cost,
                    "fixed_cost": offer.fixed_cost or None,
                }
            survey = offer.survey_url
        ctx = {
            "customer": customer, "offer": offer_ctx, "coupon_code": codes[i],
            "history": {k: v[i] for k, v in history_cols.items()}, "brand": brand,
            "survey_url": survey, "step": int(step),
        }
        if calls[i][0] is not None:
            # The call list's one-line history and talking point travel in the context too, with what the
            # manager needs to reach the customer (the only contexts that carry a phone or an e-mail).
            ctx["call"] = {"history": calls[i][0], "talking_point": calls[i][1], "phone": calls[i][2],
                           "email": calls[i][3],
                           "name": display_name(customer["first_name"], customer["last_name"], customer["locale"])}
        texts.append(dumps(ctx))
    out.loc[rows.index] = texts
    return out


def display_name(first: str | None, last: str | None, locale: str | None) -> str:
    """A customer's name in their locale's order: family name first without a space in Chinese, Japanese
    and Korean (王 + 芳 → 王芳), given name first otherwise (Karen Baker)."""
    parts = [p.strip() for p in (first, last) if isinstance(p, str) and p.strip()]
    if not parts:
        return ""
    lang = (locale or "").split("-")[0].lower()
    if lang in ("zh", "ja", "ko"):
        return "".join(p.strip() for p in (last, first) if isinstance(p, str) and p.strip())
    return " ".join(parts)


def _assign_codes(plan: pd.DataFrame, campaign: Campaign, existing: set[str]) -> pd.Series:
    codes = plan["coupon_code"].astype("string") if "coupon_code" in plan else \
        pd.Series(pd.NA, index=plan.index, dtype="string")
    coupon_offers = {o.id for o in campaign.offers if o.coupon}
    need = (plan["arm"] == "treatment") & plan["offer"].isin(coupon_offers).fillna(False) & codes.isna()
    if need.any():
        c = campaign.coupons
        new = generate_coupon_codes(int(need.sum()), length=c.length, prefix=c.prefix, group=c.group,
                                    existing=existing)
        codes.loc[need] = new
    # Defensive: a code is the proof of a single-use offer; two customers must never share one.
    dupes = check_unique_codes(codes[plan["arm"] == "treatment"].dropna().tolist()
                               + sorted(existing - set(codes.dropna())))
    if dupes:
        raise DataError(f"coupon code {dupes[0]!r} would be given twice", column="coupon_code")
    return codes


def _finish(frame: pd.DataFrame, campaign: Campaign, *, as_of: pd.Timestamp, step: int, extras: list[str],
            existing_codes: set[str]) -> pd.DataFrame:
    """Coupon codes, call-list fields, contexts and the contract's column order."""
    frame["coupon_code"] = _assign_codes(frame, campaign, existing_codes)
    calls = (frame["channel"] == "call_task").fillna(False) & (frame["arm"] != "excluded")
    # The call goes to whoever makes it (a departed manager's customers to the fallback), the record keeps both.
    frame["manager_of_record"] = frame["account_manager"].astype("string")
    frame["account_manager"] = frame["account_manager"].astype("string").mask(calls, frame["to_address"])
    frame["call_history"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    frame["talking_point"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    if calls.any():
        sub = frame[calls]
        frame.loc[calls, "call_history"] = call_history_line(sub, campaign, as_of=as_of)
        frame.loc[calls, "talking_point"] = talking_point(sub, campaign)
    frame["context"] = build_contexts(frame, campaign, as_of=as_of, step=step, extras=extras)
    frame["campaign_id"] = campaign.id
    frame["step"] = int(step)
    frame["as_of"] = as_of
    frame["as_of"] = frame["as_of"].astype("datetime64[ns, UTC]")
    # What the send-time gate checks when the row is claimed (quiet hours, caps, exit on return).
    frame["send_rules"] = rules_column(campaign, frame["channel"].astype("string"),
                                       if_not_returned=campaign.cadence[step - 1].if_not_returned
                                       ).where(frame["arm"] != "excluded")
    for name in TRAIL_COLUMNS:
        if name not in frame.columns:
            frame[name] = pd.NA
    out = frame[PLAN_COLUMNS + EXTRA_COLUMNS + TRAIL_COLUMNS].reset_index(drop=True)
    for name in ("expected_cost", "expected_net_value", "p_return", "p_base", "runner_up_net_value"):
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    out["step"] = out["step"].astype("int64")
    for name in ("campaign_id", "customer_id", "arm", "reason", "channel", "to_address", "send_at_local",
                 "timezone", "locale", "offer", "offer_kind", "template", "coupon_code", "value_tier",
                 "lapse_stage", "likely_reason", "account_manager", "context", "send_rules", *EXTRA_COLUMNS[1:],
                 *[c for c in TRAIL_COLUMNS if c != "runner_up_net_value"]):
        out[name] = out[name].astype("string")
    out["send_at_utc"] = pd.to_datetime(out["send_at_utc"], utc=True).astype("datetime64[ns, UTC]")
    return out


def cadence_weights(frame: pd.DataFrame, campaign: Campaign, *, as_of: pd.Timestamp) -> pd.Series:
    """Each customer's expected cost over the whole cadence, as if they reached every step: step 1's, plus
    per later message step its contact cost and, where the step brings a new offer the customer is eligible
    for, that offer's expected cost. What the budget reserves for a costly first step (a call has no
    message cadence)."""
    weight = pd.to_numeric(frame["expected_cost"], errors="coerce").fillna(0.0).to_numpy(dtype="float64").copy()
    channel = frame["channel"].astype("string")
    messages = (channel.notna() & (channel != "call_task")).fillna(False).to_numpy(dtype=bool)
    offer = frame["offer"].astype("string")
    rates = campaign.economics.contact_costs
    for spec in campaign.cadence[1:]:
        step_channel = pd.Series(spec.channel, index=frame.index, dtype="string") if spec.channel else channel
        step_cost = np.array(pd.to_numeric(step_channel.map(rates), errors="coerce").fillna(0.0), dtype="float64")
        if spec.offer:
            new = campaign.offer(spec.offer)
            ok = (offer_eligible(frame, new, as_of=as_of).to_numpy(dtype=bool)
                  & (offer != spec.offer).fillna(True).to_numpy(dtype=bool) & messages)
            if ok.any():
                figures = offer_figures(frame[ok], campaign, new, channel=step_channel[ok])
                step_cost[ok] = figures["expected_cost"].to_numpy(dtype="float64")
            offer = offer.mask(ok, spec.offer)
        weight += np.where(messages, step_cost, 0.0)
    return pd.Series(weight, index=frame.index)


def _budget_step_one(frame: pd.DataFrame, pool: pd.Series, held: pd.Series, campaign: Campaign, *,
                     as_of: pd.Timestamp) -> pd.Series:
    """Apply the budget to step 1; return who is dropped (`budget`). Rows that cost nothing stay; costly rows
    are chosen by a greedy knapsack on net value per unit of their whole cadence's cost (`cadence_weights`),
    the treatment arm spending it and the holdout taking the same decisions, so both arms lose the same kind
    of customer. Whoever does not fit moves to their best offer that costs nothing (`budget_free_offer`), else
    is dropped. Mutates `frame`'s offer columns for the moved customers."""
    dropped = pd.Series(False, index=frame.index)
    if campaign.budget is None or not pool.any():
        return dropped
    sub = frame[pool]
    weights = cadence_weights(sub, campaign, as_of=as_of)
    keep = apply_budget(sub["customer_id"], sub["expected_cost"], sub["expected_net_value"], campaign.budget,
                        counts=~held[pool], weights=weights)
    out = keep.index[~keep]
    free = frame.loc[out, "free_offer"].notna()
    moved, gone = out[free.to_numpy()], out[~free.to_numpy()]
    if len(moved):
        note = ("over budget: " + frame.loc[moved, "offer"].astype("string").fillna("(none)")
                + " (net " + frame.loc[moved, "expected_net_value"].map(lambda v: f"{v:.2f}")
                + " for a cadence cost of " + weights[moved].map(lambda v: f"{v:.2f}") + ")")
        frame.loc[moved, "budget_note"] = note
        for target, source in (("offer", "free_offer"), ("offer_kind", "free_offer_kind"),
                                ("p_return", "free_p_return"), ("expected_cost", "free_expected_cost"),
                                ("expected_net_value", "free_expected_net_value")):
            frame.loc[moved, target] = frame.loc[moved, source]
        frame.loc[moved, "choice_reason"] = "budget_free_offer"
    if len(gone):
        frame.loc[gone, "budget_note"] = "over budget, no offer that costs nothing"
        dropped.loc[gone] = True
    return dropped


def build_plan(campaign: Campaign, customers: pd.DataFrame, segments: pd.DataFrame, *, as_of: Any,
               suppressions: pd.DataFrame | None = None, contact_history: pd.DataFrame | None = None,
               learner: Learner | None = None, existing_codes: Any = ()) -> pd.DataFrame:
    """The step-1 decision table: one row per audience customer with arm, reason, channel, send time,
    offer, expected value and cost, template, coupon code and render context. Pure (seed from the
    campaign; coupon codes come from `secrets`, so they are the one column that differs between runs)."""
    as_of = _utc(as_of)
    joined = _join(customers, segments)
    outside = audience_rules(joined, campaign)
    frame = joined[outside.isna()].sort_values("customer_id", kind="stable")
    frame = frame.reset_index(drop=True)
    extras = [c for c in customers.columns if c not in KNOWN_CUSTOMER_COLUMNS | PRIVATE_CUSTOMER_COLUMNS]

    first = campaign.cadence[0]
    policy = apply_contact_policy(frame, campaign, as_of=as_of, suppressions=suppressions,
                                  contact_history=contact_history,
                                  channels=[first.channel] if first.channel else None, route_calls=True)
    frame = frame.join(policy)
    choice = choose_offers(frame, campaign, as_of=as_of, learner=learner, channel=frame["channel"])
    frame = frame.join(choice)

    reason = frame["policy_reason"].fillna(frame["offer_reason"])
    pool = reason.isna()
    strata_col = campaign.holdout.stratify_by
    held = assign_holdout(frame.loc[pool, "customer_id"], campaign.id, campaign.holdout.share,
                          frame.loc[pool, strata_col] if strata_col else None).reindex(frame.index, fill_value=False)
    frame["budget_note"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    dropped = _budget_step_one(frame, pool, held, campaign, as_of=as_of)
    held &= ~dropped
    reason = reason.mask(dropped, "budget")
    treated = pool & ~dropped & ~held
    frame["arm"] = np.where(treated, "treatment", np.where(held, "holdout", "excluded"))
    chosen_reason = frame["choice_reason"].mask(frame["route_call"] & (frame["channel"] == "call_task"),
                                                "human_followup")
    frame["reason"] = reason.mask(held, "holdout").fillna(chosen_reason).astype("string")

    step = campaign.cadence[0]
    frame["timezone"] = valid_timezones(frame.get("timezone", pd.Series(pd.NA, index=frame.index)),
                                        campaign.policy.default_timezone)
    frame["locale"] = _locales(frame, campaign)
    due = pd.Series(as_of + pd.Timedelta(days=step.day), index=frame.index).where(frame["arm"] != "excluded")
    frame["send_at_utc"], frame["send_at_local"] = schedule(due, frame["channel"], frame["timezone"], campaign)
    frame["template"] = _templates(frame, campaign, step)
    frame["account_manager"] = frame.get("account_manager", pd.Series(pd.NA, index=frame.index))
    frame["coupon_code"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    plan = _finish(frame, campaign, as_of=as_of, step=1, extras=extras,
                   existing_codes={c for c in existing_codes if isinstance(c, str)})
    # Customers outside the audience have no plan row; the decision trail still says why (`winback explain`).
    from winback.campaigns.decisions import DecisionTrail, outside_rows

    plan.attrs["decision_trail"] = DecisionTrail(outside_rows(joined[outside.notna()], outside, campaign, as_of=as_of))
    return plan


def _templates(frame: pd.DataFrame, campaign: Campaign, step: CadenceStep) -> pd.Series:
    by_offer = {o.id: o.template for o in campaign.offers}
    template = frame["offer"].astype("string").map(by_offer).astype("string")
    if step.template:
        template = template.mask(frame["offer"].notna(), step.template)
    return template.where(frame["arm"] != "excluded")


def plan_followup(campaign: Campaign, step: int, prior: pd.DataFrame, customers: pd.DataFrame,
                  orders: pd.DataFrame | None, *, now: Any, suppressions: pd.DataFrame | None = None,
                  contact_history: pd.DataFrame | None = None, segments: pd.DataFrame | None = None,
                  existing_codes: Any = ()) -> pd.DataFrame:
    """Rows for cadence step `step` (≥ 2) whose time has come (due ≤ now): treatment customers of step
    `step`−1 who have not ordered since that send (exit on return) and are still eligible, and the
    held-out rows of the same customers-to-be in the holdout. Customers not yet due are left for a later
    call; call-task customers have no message cadence. `prior` is the plan or ledger rows of earlier
    steps (`sent_at` is used over `send_at_utc` when present)."""
    now = _utc(now)
    if step < 2 or step > len(campaign.cadence):
        raise DataError(f"campaign {campaign.id!r} has no cadence step {step} "
                        f"(steps 1–{len(campaign.cadence)}; step 1 is build_plan)")
    spec = campaign.cadence[step - 1]
    prev_spec = campaign.cadence[step - 2]
    _require(prior, ("customer_id", "step", "arm"), "prior plan")
    prev = prior[(prior["step"].astype("int64") == step - 1) & prior["arm"].isin(["treatment", "holdout"])]
    prev = prev[(prev["channel"] != "call_task").fillna(True)]
    if "campaign_id" in prev.columns:
        prev = prev[prev["campaign_id"].astype("string") == campaign.id]
    already = prior.loc[prior["step"].astype("int64") == step, "customer_id"].astype("string")
    prev = prev[~prev["customer_id"].astype("string").isin(already)]
    existing = {c for c in existing_codes if isinstance(c, str)}
    existing |= {c for c in prior.get("coupon_code", pd.Series(dtype="string")).dropna().astype(str)}
    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in PLAN_COLUMNS + EXTRA_COLUMNS})
    if prev.empty:
        return empty
    prev = prev.copy()
    prev["customer_id"] = prev["customer_id"].astype("string")
    sent = pd.to_datetime(prev["send_at_utc"], utc=True)
    if "sent_at" in prev.columns:
        sent = pd.to_datetime(prev["sent_at"], utc=True).fillna(sent)
    prev["_prev_send"] = sent
    # "Day N" counts from the minute of the previous send: a dispatch at 11:00:00 three days after a
    # send at 11:00:04 is on time (sent_at carries the seconds the send took).
    prev["_due"] = sent.dt.floor("min") + pd.Timedelta(days=spec.day - prev_spec.day)
    prev = prev[prev["_due"].notna() & (prev["_due"] <= now)]
    if prev.empty:
        return empty

    cust = customers.assign(customer_id=customers["customer_id"].astype("string"))
    keep_prev = ["customer_id", "arm", "offer", "channel", "coupon_code", "value_tier", "lapse_stage",
                 "likely_reason", "_prev_send", "_due"] + (["state"] if "state" in prev.columns else [])
    frame = prev[[c for c in keep_prev if c in prev.columns]].rename(
        columns={"arm": "_prev_arm", "offer": "_prev_offer", "channel": "_prev_channel",
                 "coupon_code": "_prev_code", "state": "_prev_state"})
    if segments is not None:
        seg = segments.assign(customer_id=segments["customer_id"].astype("string"))
        seg = seg[["customer_id", *[c for c in seg.columns if c not in frame.columns and c not in cust.columns]]]
        frame = frame.merge(seg, on="customer_id", how="left")
    frame = frame.merge(cust[["customer_id", *[c for c in cust.columns if c not in frame.columns]]],
                        on="customer_id", how="left").sort_values("customer_id").reset_index(drop=True)
    # Up-to-date history: the minimum-gap rule, exit on return and the context look at current orders.
    if orders is not None and not orders.empty:
        upto = orders[pd.to_datetime(orders["ordered_at"], utc=True) <= now]
        by = upto.assign(_t=pd.to_datetime(upto["ordered_at"], utc=True),
                         _a=pd.to_numeric(upto.get("amount", 0.0), errors="coerce")
                         ).groupby(upto["customer_id"].astype("string"))
        fresh = frame["customer_id"].map(by["_t"].max())
        old = pd.to_datetime(frame["last_order_at"], utc=True) if "last_order_at" in frame else fresh
        frame["last_order_at"] = pd.concat([old, fresh], axis=1).max(axis=1)
        if segments is None:
            # Without a fresh segmentation, the order history itself gives the context's figures.
            frame["n_orders"] = frame["customer_id"].map(by.size()).fillna(0).astype("int64")
            frame["total_spend"] = frame["customer_id"].map(by["_a"].sum()).fillna(0.0)
            frame["monetary"] = frame["customer_id"].map(by["_a"].mean())
    extras = [c for c in customers.columns if c not in KNOWN_CUSTOMER_COLUMNS | PRIVATE_CUSTOMER_COLUMNS]

    # A step's own channel is strict (an SMS step sends SMS or nothing); else the preference order.
    channels = [spec.channel] if spec.channel else list(campaign.channels)
    policy = apply_contact_policy(frame, campaign, as_of=now, suppressions=suppressions,
                                  contact_history=contact_history, channels=channels)
    frame = frame.join(policy)

    # Only orders placed by `now` count: the future has not happened (a demo world or a replay may hold it).
    known = orders[pd.to_datetime(orders["ordered_at"], utc=True) <= now] if orders is not None and len(orders) \
        else orders
    returned = ordered_since(frame["customer_id"], frame["_prev_send"], known) if spec.if_not_returned \
        else pd.Series(False, index=frame.index)
    reason = pd.Series(pd.NA, index=frame.index, dtype="string")
    if "_prev_state" in frame.columns:
        not_sent = (frame["_prev_arm"] == "treatment") & ~frame["_prev_state"].isin(["sent"]).fillna(False)
        reason = reason.mask(not_sent, "previous_step_not_sent")
    reason = reason.fillna(pd.Series(np.where(returned, "returned", None), index=frame.index, dtype="string"))
    reason = reason.fillna(frame["policy_reason"])

    # The offer: the step's override when the customer is eligible for it, else the previous one.
    frame["offer"] = frame["_prev_offer"].astype("string")
    if spec.offer:
        ok = offer_eligible(frame, campaign.offer(spec.offer), as_of=now)
        frame["offer"] = frame["offer"].mask(ok, spec.offer)
    kinds = {o.id: o.kind for o in campaign.offers}
    frame["offer_kind"] = frame["offer"].map(kinds).astype("string")
    figures = _offer_figures(frame, campaign)
    for name in figures.columns:
        frame[name] = figures[name]
    frame["coupon_code"] = frame["_prev_code"].where(frame["offer"] == frame["_prev_offer"]).astype("string")

    held = frame["_prev_arm"] == "holdout"
    _followup_costs(frame, campaign)
    frame["budget_note"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    if campaign.budget is not None:
        reason = reason.mask(_budget_followup(frame, reason.isna(), held, prior, campaign), "budget")
        frame["coupon_code"] = frame["_prev_code"].where(frame["offer"] == frame["_prev_offer"]).astype("string")
    frame["arm"] = np.where(reason.notna(), "excluded", np.where(held, "holdout", "treatment"))
    frame["reason"] = reason.fillna(pd.Series(np.where(held, "holdout", f"cadence_step_{step}"),
                                              index=frame.index, dtype="string"))
    frame["timezone"] = valid_timezones(frame.get("timezone", pd.Series(pd.NA, index=frame.index)),
                                        campaign.policy.default_timezone)
    frame["locale"] = _locales(frame, campaign)
    due = pd.concat([frame["_due"], pd.Series(now, index=frame.index)], axis=1).max(axis=1)
    due = due.where(frame["arm"] != "excluded")
    frame["send_at_utc"], frame["send_at_local"] = schedule(due, frame["channel"], frame["timezone"], campaign,
                                                            now=now)
    frame["template"] = _templates(frame, campaign, spec)
    if "account_manager" not in frame:
        frame["account_manager"] = pd.NA
    return _finish(frame, campaign, as_of=now, step=step, extras=extras, existing_codes=existing)


def _followup_costs(frame: pd.DataFrame, campaign: Campaign) -> None:
    """A follow-up repeating the customer's offer and code commits no new offer cost (the earlier step did):
    its expected cost is the message's contact cost, its net value the offer's value less that. A new offer
    (the step's override) costs what it costs."""
    repeat = (frame["offer"] == frame["_prev_offer"]).fillna(False)
    if not repeat.any():
        return
    contact = frame["channel"].astype("string").map(campaign.economics.contact_costs).astype("float64").fillna(0.0)
    value = frame["expected_net_value"] + frame["expected_cost"]
    frame.loc[repeat, "expected_cost"] = contact[repeat]
    frame.loc[repeat, "expected_net_value"] = (value - contact)[repeat]


def committed_cost(prior: pd.DataFrame, campaign_id: str) -> float:
    """What a campaign's earlier rows have committed: the expected cost of its treatment rows, except those
    that will never cost anything (failed, skipped, suppressed)."""
    if prior is None or prior.empty or "expected_cost" not in prior.columns:
        return 0.0
    rows = prior[prior["arm"] == "treatment"]
    if "campaign_id" in rows.columns:
        rows = rows[rows["campaign_id"].astype("string") == campaign_id]
    if "state" in rows.columns:
        rows = rows[~rows["state"].isin(["failed", "skipped", "suppressed"]).fillna(False)]
    return float(pd.to_numeric(rows["expected_cost"], errors="coerce").clip(lower=0).fillna(0.0).sum())


def _budget_followup(frame: pd.DataFrame, pool: pd.Series, held: pd.Series, prior: pd.DataFrame,
                     campaign: Campaign) -> pd.Series:
    """The budget at a later step: what is left after the campaign's earlier rows (`committed_cost`), by the
    same knapsack, customers whose first step was costly (their cadence was reserved) first. A row whose new
    offer does not fit keeps the offer it had (same code, contact cost only) and is tried again; a message
    that costs nothing is never cut. Returns who is dropped (`budget`); mutates `frame`'s offer columns."""
    dropped = pd.Series(False, index=frame.index)
    if not pool.any():
        return dropped
    left = campaign.budget - committed_cost(prior, campaign.id)
    first = prior[(prior["step"].astype("int64") == 1) & (prior["arm"] == "treatment")] \
        if "expected_cost" in prior.columns else prior.iloc[0:0]
    costly = pd.to_numeric(first["expected_cost"], errors="coerce").fillna(0.0).to_numpy() > 0
    reserved_ids = set(first["customer_id"].astype(str).to_numpy()[costly])
    reserved = pd.Series(np.isin(frame["customer_id"].astype(str).to_numpy(), list(reserved_ids)).astype(float),
                         index=frame.index)
    for attempt in range(2):
        sub = frame[pool & ~dropped]
        keep = apply_budget(sub["customer_id"], sub["expected_cost"], sub["expected_net_value"], max(left, 0.0),
                            counts=~held[sub.index], priority=reserved[sub.index])
        out = keep.index[~keep]
        new = (frame.loc[out, "offer"] != frame.loc[out, "_prev_offer"]).fillna(False) & \
            frame.loc[out, "_prev_offer"].notna()
        back = out[new.to_numpy()] if attempt == 0 else out[:0]
        if len(back):
            # Keep the offer (and code) the customer already holds: the repeat costs its contact only.
            frame.loc[back, "budget_note"] = "over budget: " + frame.loc[back, "offer"].astype("string") + \
                " not given, kept " + frame.loc[back, "_prev_offer"].astype("string")
            frame.loc[back, "offer"] = frame.loc[back, "_prev_offer"]
            kinds = {o.id: o.kind for o in campaign.offers}
            frame.loc[back, "offer_kind"] = frame.loc[back, "offer"].map(kinds)
            figures = _offer_figures(frame.loc[back], campaign)
            for name in figures.columns:
                frame.loc[back, name] = figures[name]
            _followup_costs_rows(frame, back, campaign)
        rest = out.difference(back)
        dropped.loc[rest] = True
        frame.loc[rest, "budget_note"] = "over budget"
        if not len(back):
            break
    return dropped


def _followup_costs_rows(frame: pd.DataFrame, rows: pd.Index, campaign: Campaign) -> None:
    sub = frame.loc[rows].copy()
    _followup_costs(sub, campaign)
    frame.loc[rows, ["expected_cost", "expected_net_value"]] = sub[["expected_cost", "expected_net_value"]]


def _offer_figures(frame: pd.DataFrame, campaign: Campaign) -> pd.DataFrame:
    """p_base, p_return, expected cost and net value of each row's given offer (NaN where none)."""
    out = pd.DataFrame(np.nan, index=frame.index,
                       columns=["p_base", "p_return", "expected_cost", "expected_net_value"])
    for offer in campaign.offers:
        rows = (frame["offer"] == offer.id).fillna(False)
        if rows.any():
            sub = frame[rows]
            out.loc[rows, :] = offer_figures(sub, campaign, offer, channel=sub["channel"])[out.columns]
    return out


@dataclass
class PlanSummary:
    """Counts of a plan for the CLI and the Prefect artifacts."""

    campaign_id: str
    audience: int
    by_arm: dict[str, int]
    by_reason: pd.DataFrame
    offers_by_tier: pd.DataFrame
    by_channel: dict[str, int]
    expected_cost: float
    expected_net_value: float
    budget: float | None
    currency: str
    power: PowerCheck | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (frames as lists of records)."""
        return {
            "campaign_id": self.campaign_id, "audience": self.audience, "by_arm": self.by_arm,
            "by_reason": self.by_reason.to_dict("records"),
            "offers_by_tier": self.offers_by_tier.reset_index().to_dict("records"),
            "by_channel": self.by_channel, "expected_cost": self.expected_cost,
            "expected_net_value": self.expected_net_value, "budget": self.budget, "currency": self.currency,
            "power": None if self.power is None else self.power.__dict__,
        }

    def to_markdown(self) -> str:
        """A markdown report a CRM manager can read (used for the Prefect artifact)."""
        lines = [f"# Plan · {self.campaign_id}", "",
                 f"Audience **{self.audience:,}** · " + " · ".join(f"{k} **{v:,}**" for k, v in self.by_arm.items()),
                 "", f"Expected offer cost of step 1 (offers and contacts) **{self.expected_cost:,.2f} {self.currency}**"
                 + (f" of budget {self.budget:,.2f} ({self.expected_cost / self.budget:.0%}; the budget also holds "
                    "the later cadence steps)" if self.budget else "")
                 + f" · expected net value {self.expected_net_value:,.2f} {self.currency}", ""]
        if self.power is not None and not self.power.ok:
            lines += [f"> ⚠️ {self.power.message}", ""]
        lines += ["## Reasons", "", "| arm | reason | customers |", "|---|---|---:|"]
        lines += [f"| {r.arm} | {r.reason} | {r.customers:,} |" for r in self.by_reason.itertuples()]
        lines += ["", "## Offers by value tier (treatment)", ""]
        table = self.offers_by_tier
        if table.empty:
            lines.append("(none)")
        else:
            lines.append("| offer | " + " | ".join(map(str, table.columns)) + " |")
            lines.append("|---|" + "---:|" * len(table.columns))
            for offer, row in table.iterrows():
                lines.append(f"| {offer} | " + " | ".join(f"{int(v):,}" for v in row) + " |")
        return "\n".join(lines) + "\n"


def plan_summary(plan: pd.DataFrame, campaign: Campaign | None = None) -> PlanSummary:
    """Counts by arm, by (arm, reason), offers × tier in treatment, expected cost vs budget, power check."""
    arms = {arm: int((plan["arm"] == arm).sum()) for arm in ("treatment", "holdout", "excluded")}
    by_reason = (plan.groupby(["arm", "reason"], dropna=False).size().rename("customers").reset_index()
                 .sort_values(["arm", "customers"], ascending=[False, False]).reset_index(drop=True))
    treat = plan[plan["arm"] == "treatment"]
    offers_by_tier = pd.crosstab(treat["offer"].fillna("(none)"), treat["value_tier"]) if not treat.empty \
        else pd.DataFrame()
    if not offers_by_tier.empty:
        from winback.vocab import VALUE_TIERS

        cols = [t for t in VALUE_TIERS if t in offers_by_tier.columns]
        offers_by_tier = offers_by_tier[cols + [c for c in offers_by_tier.columns if c not in cols]]
    by_channel = {str(k): int(v) for k, v in treat["channel"].value_counts().items()}
    cid = str(plan["campaign_id"].iloc[0]) if len(plan) else (campaign.id if campaign else "")
    power = holdout_power_check(plan, campaign) if campaign is not None else None
    return PlanSummary(
        campaign_id=cid, audience=len(plan), by_arm=arms, by_reason=by_reason, offers_by_tier=offers_by_tier,
        by_channel=by_channel, expected_cost=float(treat["expected_cost"].fillna(0).sum()),
        expected_net_value=float(treat["expected_net_value"].fillna(0).sum()),
        budget=campaign.budget if campaign else None,
        currency=campaign.brand.currency if campaign else "", power=power)


@dataclass
class PowerCheck:
    """Whether the holdout can detect the campaign's minimum detectable effect."""

    ok: bool
    n_treatment: int
    n_holdout: int
    baseline: float
    mde_wanted: float
    mde_achievable: float
    holdout_needed: int | None
    message: str


def holdout_power_check(plan: pd.DataFrame, campaign: Campaign) -> PowerCheck:
    """Compare the detectable uplift of this plan's arms with `campaign.min_detectable_effect`."""
    from winback.measure.power import min_detectable_effect, required_sample_size

    step1 = plan[plan["step"] == 1] if "step" in plan else plan
    n_t = int((step1["arm"] == "treatment").sum())
    n_h = int((step1["arm"] == "holdout").sum())
    in_test = step1[step1["arm"] != "excluded"]
    baseline = float(in_test["p_base"].mean()) if len(in_test) and "p_base" in in_test else 0.1
    baseline = min(max(baseline if not math.isnan(baseline) else 0.1, 0.001), 0.95)
    mde = campaign.min_detectable_effect
    alpha, power = campaign.power_alpha, campaign.power
    achievable = min_detectable_effect(n_t, n_h, baseline, alpha, power)
    ok = achievable <= mde
    needed = None
    share = campaign.holdout.share
    if share > 0 and baseline + mde < 1:
        needed = required_sample_size(baseline, mde, alpha, power, share).n_holdout
    if ok:
        message = (f"holdout of {n_h:,} can detect an uplift of {achievable:.1%} "
                   f"(wanted {mde:.1%}) at α={alpha}, power {power:.0%}")
    else:
        shown = "any uplift" if math.isinf(achievable) else f"only an uplift of {achievable:.1%} or more"
        message = (f"holdout too small: {n_h:,} held out vs {n_t:,} treated can detect {shown}, "
                   f"the campaign wants {mde:.1%} on a baseline return rate of {baseline:.1%}"
                   + (f"; needs about {needed:,} held out at share {share:.0%} (larger audience or share)"
                      if needed else ""))
    return PowerCheck(ok, n_t, n_h, baseline, mde, float(achievable), needed, message)
