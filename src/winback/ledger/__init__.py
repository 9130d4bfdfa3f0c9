"""The campaign ledger: one row per (campaign, customer, step) over SQLite or PostgreSQL, exactly-once verbs."""

from winback.ledger.ledger import DELIVERY_STATUSES, OUTCOME_STATES, SUPPRESSING_EVENTS, Ledger, Outcome

__all__ = ["DELIVERY_STATUSES", "OUTCOME_STATES", "SUPPRESSING_EVENTS", "Ledger", "Outcome"]
