"""The campaign ledger: one row per (campaign, customer, step) over SQLite or PostgreSQL, exactly-once verbs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DELIVERY_STATUSES", "OUTCOME_STATES", "SUPPRESSING_EVENTS", "Ledger", "Outcome"]

if TYPE_CHECKING:
    from winback.ledger.ledger import DELIVERY_STATUSES, OUTCOME_STATES, SUPPRESSING_EVENTS, Ledger, Outcome

_HOME = {
    "DELIVERY_STATUSES": "ledger",
    "OUTCOME_STATES": "ledger",
    "SUPPRESSING_EVENTS": "ledger",
    "Ledger": "ledger",
    "Outcome": "ledger",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.ledger.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.ledger' has no attribute {name!r}")
