"""Contact policy: consent, suppression, addresses, frequency caps, minimum gap, quiet hours, holdout."""

from winback.policy.contact import apply_contact_policy, channel_block_reasons, ordered_since, route_to_call
from winback.policy.holdout import assign_holdout, holdout_hash
from winback.policy.quiet_hours import local_iso, next_allowed_send_time, valid_timezones

__all__ = [
    "apply_contact_policy",
    "assign_holdout",
    "channel_block_reasons",
    "holdout_hash",
    "local_iso",
    "next_allowed_send_time",
    "ordered_since",
    "route_to_call",
    "valid_timezones",
]
