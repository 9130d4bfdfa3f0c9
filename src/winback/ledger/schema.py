"""The ledger's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Timestamps are UTC everywhere: `timestamptz` on PostgreSQL; on SQLite a fixed-width ISO text
(`YYYY-MM-DDTHH:MM:SS.ffffff`, UTC, no offset) so that string order is time order and
comparisons such as `send_at_utc <= :now` work in SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

SQLITE_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"  # numpy.datetime_as_string(unit="us") writes the same


class UTCDateTime(TypeDecorator):
    """A UTC timestamp: aware `timestamptz` on PostgreSQL, fixed-width UTC ISO text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(26))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            # Already formatted by the bulk path (vectorised in pandas); trusted internal input.
            if dialect.name == "sqlite":
                return value
            value = pd.Timestamp(value)
        if value is pd.NaT:
            return None
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        if not isinstance(value, datetime):
            raise TypeError(f"expected a timestamp, got {type(value).__name__}")
        # A naive timestamp is taken to be UTC already (the contracts keep every frame in UTC).
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.strftime(SQLITE_TS_FORMAT)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

# The plan frame's columns (docs/CONTRACTS.md "Campaigns and the plan"), in contract order,
# with the SQL type each is stored as. `context` is the render context as JSON text.
PLAN_COLUMNS: dict[str, sa.types.TypeEngine] = {
    "campaign_id": sa.String(200),
    "customer_id": sa.String(200),
    "step": sa.Integer(),
    "arm": sa.String(20),
    "reason": sa.Text(),
    "channel": sa.String(20),
    "to_address": sa.Text(),
    "send_at_utc": UTCDateTime(),
    "send_at_local": sa.String(40),
    "timezone": sa.String(64),
    "locale": sa.String(35),
    "offer": sa.String(200),
    "offer_kind": sa.String(40),
    "expected_cost": sa.Float(),
    "expected_net_value": sa.Float(),
    "p_return": sa.Float(),
    "template": sa.String(200),
    "coupon_code": sa.String(200),
    "value_tier": sa.String(20),
    "lapse_stage": sa.String(20),
    "likely_reason": sa.String(40),
    "account_manager": sa.Text(),
    "context": sa.Text(),
    "as_of": UTCDateTime(),
}
KEY_COLUMNS = ("campaign_id", "customer_id", "step")

# Columns the ledger adds to every plan row.
STATE_COLUMNS: dict[str, sa.types.TypeEngine] = {
    "state": sa.String(20),
    "attempts": sa.Integer(),
    "planned_at": UTCDateTime(),
    "claimed_at": UTCDateTime(),
    "sent_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
    "provider": sa.String(40),
    "provider_message_id": sa.String(255),
    "error": sa.Text(),
    "delivery_status": sa.String(20),
    "claim_token": sa.String(64),
}

ledger = sa.Table(
    "ledger",
    metadata,
    # A surrogate id keeps claim/record statements short; the business key is the unique constraint.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    *[
        sa.Column(name, type_, nullable=name not in KEY_COLUMNS + ("arm",))
        for name, type_ in PLAN_COLUMNS.items()
    ],
    *[
        sa.Column(name, type_, nullable=name not in ("state", "attempts", "planned_at", "updated_at"))
        for name, type_ in STATE_COLUMNS.items()
    ],
    sa.UniqueConstraint(*KEY_COLUMNS, name="uq_ledger_key"),
    sa.CheckConstraint(
        "state in ('planned','sending','sent','failed','suppressed','held_out','uncertain')",
        name="ck_ledger_state",
    ),
)
sa.Index("ix_ledger_due", ledger.c.campaign_id, ledger.c.state, ledger.c.send_at_utc)
# Partial indexes: rows enter them only once sent, so planning a million rows does not pay for them.
# (`sent_at >= :since` and `provider_message_id = :id` imply the NOT NULL conditions, so both
# SQLite and PostgreSQL use them.)
sa.Index("ix_ledger_contacts", ledger.c.customer_id, ledger.c.sent_at,
         sqlite_where=ledger.c.sent_at.isnot(None), postgresql_where=ledger.c.sent_at.isnot(None))
sa.Index("ix_ledger_message", ledger.c.provider_message_id,
         sqlite_where=ledger.c.provider_message_id.isnot(None),
         postgresql_where=ledger.c.provider_message_id.isnot(None))

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("address", sa.Text()),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("source", sa.String(80)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # One suppression per person and channel: whoever asked first (link, provider, import) wins.
    sa.UniqueConstraint("customer_id", "channel", name="uq_suppressions_customer_channel"),
)
sa.Index("ix_suppressions_address", suppressions.c.channel, suppressions.c.address)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("provider_event_id", sa.String(255), nullable=False),
    sa.Column("campaign_id", sa.String(200)),
    sa.Column("customer_id", sa.String(200)),
    sa.Column("step", sa.Integer()),
    sa.Column("channel", sa.String(20)),
    sa.Column("provider_message_id", sa.String(255)),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("occurred_at", UTCDateTime()),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("payload", sa.Text()),
    # Providers retry webhooks; the (provider, event id) pair makes a replay a no-op.
    sa.UniqueConstraint("provider", "provider_event_id", name="uq_events_provider_event"),
)
sa.Index("ix_events_key", events.c.campaign_id, events.c.customer_id, events.c.step)

offer_results = sa.Table(
    "offer_results",
    metadata,
    sa.Column("campaign_id", sa.String(200), nullable=False),
    sa.Column("offer_kind", sa.String(40), nullable=False),
    sa.Column("value_tier", sa.String(20), nullable=False),
    sa.Column("n_treated", sa.Integer(), nullable=False),
    sa.Column("returned_treated", sa.Integer(), nullable=False),
    sa.Column("n_holdout", sa.Integer(), nullable=False),
    sa.Column("returned_holdout", sa.Integer(), nullable=False),
    sa.Column("measured_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("campaign_id", "offer_kind", "value_tier", name="pk_offer_results"),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
)

LEDGER_COLUMNS = [c.name for c in ledger.columns]
TIMESTAMP_COLUMNS = ("send_at_utc", "as_of", "planned_at", "claimed_at", "sent_at", "updated_at")
