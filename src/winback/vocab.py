"""The shared vocabularies: tiers, stages, reasons, offer kinds, channels, arms and ledger states."""

from __future__ import annotations

VALUE_TIERS = ("platinum", "gold", "iron", "lead")
LAPSE_STAGES = ("active", "at_risk", "lapsing", "lapsed", "lost", "no_orders")
REASONS = ("service", "price", "manager_left", "competitor", "forgotten", "none")
OFFER_KINDS = (
    "reminder",
    "percent_off",
    "amount_off",
    "bonus_points",
    "free_shipping",
    "birthday_gift",
    "service_recovery",
)
CHANNELS = ("email", "sms", "webhook", "call_task")
MESSAGE_CHANNELS = ("email", "sms", "webhook")
ARMS = ("treatment", "holdout", "excluded")
# `skipped`: the send-time gate decided not to send (frequency cap, ordered since planned, budget),
# with the reason in `gate_reason`.
LEDGER_STATES = ("planned", "sending", "sent", "failed", "suppressed", "held_out", "uncertain", "skipped")
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complained", "invalid_address")
