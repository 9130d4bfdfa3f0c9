"""The contact policy: per customer and channel, consent → suppression → address → frequency cap →
minimum gap since the last order; the first allowed channel in preference order wins, else the
reason of the first channel tried is recorded (all of them in `policy_detail`).

Human follow-up (定期回访) comes first for customers its rules route to a call: the call goes to their
account manager — or, when that manager has left, to `human_followup.fallback_manager` or the team
queue — and needs a phone or an e-mail to call back on (`no_phone_or_email` otherwise). A routed customer
whose call cannot be made for want of a manager or of contact details gets the normal message when the
campaign says so (`no_manager: message`); if that is blocked too, the message channel's reason is the
one recorded (e.g. `no_consent:email`), not the call's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from winback.vocab import SUPPRESSION_REASONS

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign

# Deliberately simple checks: the sources package validates addresses properly on the way in;
# this only catches what would certainly bounce (empty, no @, no dot in the domain, not E.164).
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
E164_RE = r"^\+[1-9]\d{6,14}$"
ALL_CHANNELS = ("*", "all", "any", "")

POLICY_COLUMNS = ["channel", "to_address", "policy_reason", "policy_detail", "route_call", "policy_checks",
                  "channel_reason", "human_followup"]
# Why a routed call cannot be made at all (as opposed to a cap or a suppression): the message fallback applies.
CALL_UNREACHABLE = ("no_account_manager", "no_phone_or_email")


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    values = frame[column].astype("string").str.strip()
    return values.mask(values == "")


def _flag(frame: pd.DataFrame, column: str | None) -> pd.Series:
    if column is None:
        return pd.Series(True, index=frame.index)
    if column not in frame.columns:
        return pd.Series(False, index=frame.index)
    values = frame[column]
    if values.dtype == bool:
        return values
    text = values.astype("string").str.strip().str.lower()
    return text.isin(["true", "1", "yes", "y", "t"]).fillna(False).astype(bool)


def route_to_call(frame: pd.DataFrame, campaign: Campaign) -> pd.Series:
    """True where a human follow-up rule (tiers, reasons, stages, open complaint) sends the customer to a call."""
    routed = pd.Series(False, index=frame.index)
    for rule in campaign.human_followup.rules:
        match = pd.Series(True, index=frame.index)
        if rule.value_tiers is not None:
            match &= frame["value_tier"].isin(rule.value_tiers).fillna(False)
        if rule.reasons is not None:
            match &= frame["likely_reason"].isin(rule.reasons).fillna(False)
        if rule.lapse_stages is not None:
            match &= frame["lapse_stage"].isin(rule.lapse_stages).fillna(False)
        if rule.complaint_open is not None:
            open_ = _flag(frame, "complaint_open") if "complaint_open" in frame.columns else False
            match &= open_ if rule.complaint_open else ~open_
        routed |= match.astype(bool)
    return routed


def channel_addresses(frame: pd.DataFrame, channel: str) -> tuple[pd.Series, pd.Series]:
    """(address, valid) per customer for a channel: email, E.164 phone, webhook id or account manager."""
    if channel == "email":
        address = _text(frame, "email").str.lower()
        valid = address.str.match(EMAIL_RE).fillna(False).astype(bool)
    elif channel == "sms":
        address = _text(frame, "phone").str.replace(r"[\s\-()]", "", regex=True)
        valid = address.str.match(E164_RE).fillna(False).astype(bool)
    elif channel == "webhook":
        address = _text(frame, "webhook_id").fillna(_text(frame, "customer_id"))
        valid = address.notna()
    elif channel == "call_task":
        address = _text(frame, "account_manager")
        valid = address.notna()
    else:
        raise ValueError(f"unknown channel {channel!r}")
    return address, valid


def call_assignee(frame: pd.DataFrame, campaign: Campaign) -> pd.Series:
    """Who makes each customer's call: their account manager, unless that manager has left
    (`manager_departed`) — then the campaign's fallback manager, else its team queue. NA without a manager."""
    manager = _text(frame, "account_manager")
    departed = _flag(frame, "manager_departed") & manager.notna()
    followup = campaign.human_followup
    return manager.mask(departed, followup.fallback_manager or followup.team_queue)


def _suppression_reason(frame: pd.DataFrame, channel: str, address: pd.Series,
                        suppressions: pd.DataFrame | None) -> pd.Series:
    """The suppression reason per customer on this channel (by customer id or by address), else NA."""
    out = pd.Series(pd.NA, index=frame.index, dtype="string")
    if suppressions is None or suppressions.empty:
        return out
    sup = suppressions.copy()
    sup_channel = sup["channel"].astype("string").fillna("*").str.strip().str.lower() if "channel" in sup else "*"
    sup = sup.assign(_ch=sup_channel)
    sup = sup[sup["_ch"].isin([channel, *ALL_CHANNELS])]
    if sup.empty:
        return out
    # Rank reasons so a customer both unsubscribed and bounced reports the stronger one (consent first).
    rank = {r: i for i, r in enumerate(SUPPRESSION_REASONS)}
    sup = sup.assign(_rank=sup["reason"].astype("string").map(rank).fillna(len(rank)))
    sup = sup.sort_values("_rank", kind="stable")
    by_id = sup.dropna(subset=["customer_id"]).drop_duplicates("customer_id")
    by_id = by_id.set_index(by_id["customer_id"].astype("string"))["reason"].astype("string")
    out = frame["customer_id"].astype("string").map(by_id)
    if "address" in sup.columns and channel != "call_task":
        addr = sup["address"].astype("string").str.strip()
        if channel == "email":
            addr = addr.str.lower()
        elif channel == "sms":
            addr = addr.str.replace(r"[\s\-()]", "", regex=True)
        by_addr = sup.assign(_addr=addr).dropna(subset=["_addr"]).drop_duplicates("_addr")
        by_addr = by_addr.set_index("_addr")["reason"].astype("string")
        out = out.fillna(address.map(by_addr).astype("string"))
    return out.astype("string").reindex(frame.index)


def _recent_contacts(frame: pd.DataFrame, history: pd.DataFrame | None, channel: str | None, days: int,
                     as_of: pd.Timestamp, exclude_campaign: str | None) -> pd.Series:
    """How many contacts each customer had on `channel` (None = any) in the `days` before as_of."""
    zero = pd.Series(0, index=frame.index, dtype="int64")
    if history is None or history.empty:
        return zero
    sent = pd.to_datetime(history["sent_at"], utc=True)
    keep = (sent > as_of - pd.Timedelta(days=days)) & (sent <= as_of)
    if channel is not None:
        keep &= history["channel"].astype("string") == channel
    if exclude_campaign is not None and "campaign_id" in history.columns:
        keep &= history["campaign_id"].astype("string") != exclude_campaign
    counts = history.loc[keep.fillna(False), "customer_id"].astype("string").value_counts()
    return frame["customer_id"].astype("string").map(counts).fillna(0).astype("int64")


def channel_block_reasons(frame: pd.DataFrame, campaign: Campaign, channel: str, *, as_of: pd.Timestamp,
                          suppressions: pd.DataFrame | None = None,
                          contact_history: pd.DataFrame | None = None) -> tuple[pd.Series, pd.Series]:
    """(address, reason) for one channel: reason is NA where the customer may be contacted on it."""
    policy = campaign.policy
    reason = pd.Series(pd.NA, index=frame.index, dtype="string")

    def block(mask: pd.Series, why: str | pd.Series) -> None:
        nonlocal reason
        mask = mask.fillna(False).astype(bool) & reason.isna()
        if isinstance(why, pd.Series):
            reason = reason.mask(mask, why)
        else:
            reason = reason.mask(mask, why)

    consent_col = policy.consent.get(channel, f"{channel}_opt_in" if channel in ("email", "sms") else None)
    block(~_flag(frame, consent_col), f"no_consent:{channel}")
    address, valid = channel_addresses(frame, channel)
    if channel == "call_task":
        address = call_assignee(frame, campaign)
    sup = _suppression_reason(frame, channel, address, suppressions)
    block(sup.notna(), "suppressed:" + sup.fillna(""))
    if channel == "call_task":
        block(address.isna(), "no_account_manager")
        phone_ok = channel_addresses(frame, "sms")[1]
        email_ok = channel_addresses(frame, "email")[1]
        block(~phone_ok & ~email_ok, "no_phone_or_email")
    else:
        block(address.isna(), f"no_address:{channel}")
        block(~valid, f"invalid_address:{channel}")
    own = None if policy.cap_includes_own_cadence else campaign.id
    for scope in (channel, "any"):
        cap = policy.frequency_caps.get(scope)
        if cap is None:
            continue
        recent = _recent_contacts(frame, contact_history, None if scope == "any" else channel,
                                  cap.per_days, as_of, own)
        block(recent >= cap.max_messages, "frequency_cap")
    if policy.min_days_since_last_order and "last_order_at" in frame.columns:
        last = pd.to_datetime(frame["last_order_at"], utc=True)
        block(last > as_of - pd.Timedelta(days=policy.min_days_since_last_order), "ordered_recently")
    return address, reason


def apply_contact_policy(audience: pd.DataFrame, campaign: Campaign, *, as_of: pd.Timestamp,
                         suppressions: pd.DataFrame | None = None,
                         contact_history: pd.DataFrame | None = None,
                         channels: list[str] | None = None, route_calls: bool | None = None) -> pd.DataFrame:
    """Choose each customer's channel under the contact policy, or record why nobody may be contacted.

    Returns a frame on `audience.index` with `channel` and `to_address` (NA when excluded),
    `policy_reason` (NA when allowed, else e.g. `no_consent:email`), `policy_detail`
    (`email=no_consent:email; sms=frequency_cap`) and `route_call` (human follow-up routing).
    `channels` overrides the campaign's preference order (a cadence step's channel); `route_calls`
    (default: only when `channels` is None) applies the human follow-up rules first.
    """
    as_of = pd.Timestamp(as_of).tz_convert("UTC")
    order = list(channels or campaign.channels)
    # Human follow-up routing applies to step 1; later cadence steps are messages only.
    if route_calls is None:
        route_calls = channels is None
    index = audience.index
    routed = route_to_call(audience, campaign) if route_calls else pd.Series(False, index=index)
    fallback = campaign.human_followup.no_manager == "message"
    checks: dict[str, pd.Series] = {}
    call_address = call_reason = None
    if routed.any():
        call_address, call_reason = channel_block_reasons(audience, campaign, "call_task", as_of=as_of,
                                                          suppressions=suppressions, contact_history=contact_history)
        call_reason = call_reason.where(routed)
    unreachable = call_reason.isin(CALL_UNREACHABLE).fillna(False) if call_reason is not None else \
        pd.Series(False, index=index)
    message_candidate = ~routed | (routed & unreachable & fallback)

    chosen = pd.Series(pd.NA, index=index, dtype="string")
    to_address = pd.Series(pd.NA, index=index, dtype="string")
    first_reason = pd.Series(pd.NA, index=index, dtype="string")
    if call_reason is not None:
        allowed = routed & call_reason.isna()
        chosen = chosen.mask(allowed, "call_task")
        to_address = to_address.mask(allowed, call_address)
        checks["call_task"] = call_reason.fillna("ok").where(routed)
    for channel in order:
        address, reason = channel_block_reasons(audience, campaign, channel, as_of=as_of,
                                                suppressions=suppressions, contact_history=contact_history)
        reason = reason.where(message_candidate)
        allowed = message_candidate & reason.isna() & chosen.isna()
        chosen = chosen.mask(allowed, channel)
        to_address = to_address.mask(allowed, address)
        first_reason = first_reason.mask(message_candidate & first_reason.isna() & reason.notna(), reason)
        checks[channel] = reason.fillna("ok").where(message_candidate)
    # The blocker reported is the first channel the customer could really have had: a routed customer
    # falling back to a message reports the message's reason, one held to a call reports the call's.
    if call_reason is not None:
        first_reason = first_reason.mask(routed & ~message_candidate, call_reason)
        first_reason = first_reason.fillna(call_reason.where(routed & first_reason.isna()))
    policy_reason = first_reason.where(chosen.isna())
    detail = pd.Series("", index=index, dtype="string")
    for channel, verdict in checks.items():
        part = (channel + "=" + verdict).where(verdict.notna() & (verdict != "ok"))
        detail = detail.str.cat(part.fillna(""), sep="; ")
    detail = detail.str.replace(r"(^(; )+)|((; )+$)", "", regex=True).str.replace(r"(; )+", "; ", regex=True)
    detail = detail.mask(detail == "")
    return pd.DataFrame({"channel": chosen, "to_address": to_address, "policy_reason": policy_reason,
                         "policy_detail": detail, "route_call": routed.astype(bool),
                         "policy_checks": _checks_json(checks, index),
                         "channel_reason": _channel_reasons(chosen, checks, order, routed, index),
                         "human_followup": _followup_text(audience, campaign, routed, call_reason, call_address,
                                                          chosen, fallback, route_calls)},
                        index=index)


def _checks_json(checks: dict[str, pd.Series], index: pd.Index) -> pd.Series:
    """Each channel's verdict as one JSON object per customer: {"email": "ok", "sms": "no_consent:sms"}."""
    import json

    names = list(checks)
    columns = [checks[c].astype(object).where(checks[c].notna(), None).tolist() for c in names]
    out = [json.dumps({n: v for n, v in zip(names, values, strict=True) if v is not None}, ensure_ascii=False)
           for values in zip(*columns, strict=True)] if names else ["{}"] * len(index)
    return pd.Series(out, index=index, dtype="string")


def _channel_reasons(chosen: pd.Series, checks: dict[str, pd.Series], order: list[str], routed: pd.Series,
                     index: pd.Index) -> pd.Series:
    """Why each customer's channel: a follow-up call, the first allowed in preference order, or what blocked
    the channels before it."""
    out = pd.Series(pd.NA, index=index, dtype="string")
    out = out.mask(chosen.eq("call_task").fillna(False), "human follow-up: a call by the account manager")
    skipped = pd.Series("", index=index, dtype="string")
    for channel in order:
        verdict = checks.get(channel)
        if verdict is None:
            continue
        here = chosen.eq(channel).fillna(False) & out.isna()
        text = (f"first allowed of {', '.join(order)}" + skipped.where(skipped == "", " (" + skipped + ")"))
        out = out.mask(here, text)
        blocked = verdict.notna() & (verdict != "ok")
        add = (channel + " " + verdict).where(blocked, "")
        skipped = skipped.where(~blocked, skipped.where(skipped == "", skipped + ", ") + add)
    if "call_task" in checks:
        fell = routed & chosen.notna() & ~chosen.eq("call_task").fillna(False)
        out = out.mask(fell, "call not possible (" + checks["call_task"].fillna("") + "); " + out.fillna(""))
    return out


def _followup_text(audience: pd.DataFrame, campaign: Campaign, routed: pd.Series, call_reason: pd.Series | None,
                   assignee: pd.Series | None, chosen: pd.Series, fallback: bool, route_calls: bool) -> pd.Series:
    """Human follow-up or why not: routed to whom, or which rule did not match, or why the call fell through."""
    index = audience.index
    if not route_calls:
        return pd.Series("not at this step (later cadence steps are messages)", index=index, dtype="string")
    if not campaign.human_followup.rules:
        return pd.Series("no human follow-up rules in the campaign", index=index, dtype="string")
    out = pd.Series("no rule matched (tier, reason, stage or open complaint)", index=index, dtype="string")
    if call_reason is None:
        return out
    manager = _text(audience, "account_manager")
    departed = _flag(audience, "manager_departed") & manager.notna()
    call = chosen.eq("call_task").fillna(False)
    to = assignee.fillna("")
    out = out.mask(routed & call & ~departed, "call by account manager " + to)
    out = out.mask(routed & call & departed, "call by " + to + " (account manager " + manager.fillna("") + " left)")
    blocked = routed & ~call & call_reason.notna()
    then = " → message instead" if fallback else " → not contacted (no_manager: exclude)"
    unreachable = call_reason.isin(CALL_UNREACHABLE).fillna(False)
    out = out.mask(blocked & unreachable, "routed, but " + call_reason.fillna("") + then)
    out = out.mask(blocked & ~unreachable, "routed, but the call is blocked: " + call_reason.fillna(""))
    return out


def ordered_since(customer_ids: pd.Series, since: pd.Series, orders: pd.DataFrame | None) -> pd.Series:
    """True where the customer has an order strictly after their own `since` time (exit on return)."""
    out = pd.Series(False, index=customer_ids.index)
    if orders is None or orders.empty:
        return out
    last = (orders.assign(_t=pd.to_datetime(orders["ordered_at"], utc=True))
            .groupby(orders["customer_id"].astype("string"))["_t"].max())
    last_for = customer_ids.astype("string").map(last)
    since = pd.to_datetime(since, utc=True)
    return pd.Series(np.asarray((last_for > since).fillna(False), dtype=bool), index=customer_ids.index)
