"""Contact policy: consent, suppression, addresses, frequency caps, minimum gap, quiet hours, holdout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from winback.policy.contact import (
        apply_contact_policy,
        channel_block_reasons,
        ordered_since,
        route_to_call,
    )
    from winback.policy.holdout import assign_holdout, holdout_hash
    from winback.policy.quiet_hours import local_iso, next_allowed_send_time, valid_timezones

_HOME = {
    "apply_contact_policy": "contact",
    "channel_block_reasons": "contact",
    "ordered_since": "contact",
    "route_to_call": "contact",
    "assign_holdout": "holdout",
    "holdout_hash": "holdout",
    "local_iso": "quiet_hours",
    "next_allowed_send_time": "quiet_hours",
    "valid_timezones": "quiet_hours",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.policy.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.policy' has no attribute {name!r}")
