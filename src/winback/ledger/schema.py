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
    # What the send-time gate checks, as compact JSON (winback.policy.gate.SendRules): the local send
    # window of the row's channel, the campaign's frequency caps, whether it is an if_not_returned
    # step, how long a throttled message may wait. Carried by the row so that any sender — `winback
    # send --plan`, `winback dispatch`, a Prefect worker — gates it the same way from the ledger alone.
    "send_rules": sa.Text(),
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
    # Why the send-time gate deferred (quiet hours, throttled) or skipped (frequency cap, ordered
    # since planned) the row, last time it looked at it.
    "gate_reason": sa.Text(),
    "claim_owner": sa.String(64),
    "lease_until": UTCDateTime(),
}

def ledger_table(md: sa.MetaData, *, name: str = "ledger", exclude: tuple[str, ...] = (),
                 states: tuple[str, ...] | None = None) -> sa.Table:
    """The ledger table on `md`; `exclude`/`states` rebuild an earlier version's shape for migrations."""
    from winback.vocab import LEDGER_STATES

    allowed = ",".join(f"'{s}'" for s in (states or LEDGER_STATES))
    return sa.Table(
        name,
        md,
        # A surrogate id keeps claim/record statements short; the business key is the unique constraint.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        *[
            sa.Column(col, type_, nullable=col not in KEY_COLUMNS + ("arm",))
            for col, type_ in PLAN_COLUMNS.items() if col not in exclude
        ],
        *[
            sa.Column(col, type_, nullable=col not in ("state", "attempts", "planned_at", "updated_at"))
            for col, type_ in STATE_COLUMNS.items() if col not in exclude
        ],
        sa.UniqueConstraint(*KEY_COLUMNS, name="uq_ledger_key"),
        sa.CheckConstraint(f"state in ({allowed})", name="ck_ledger_state"),
    )


ledger = ledger_table(metadata)
sa.Index("ix_ledger_due", ledger.c.campaign_id, ledger.c.state, ledger.c.send_at_utc)
# Partial indexes: rows enter them only once sent, so planning a million rows does not pay for them.
# (`sent_at >= :since` and `provider_message_id = :id` imply the NOT NULL conditions, so both
# SQLite and PostgreSQL use them.)
sa.Index("ix_ledger_contacts", ledger.c.customer_id, ledger.c.sent_at,
         sqlite_where=ledger.c.sent_at.isnot(None), postgresql_where=ledger.c.sent_at.isnot(None))
# Claims over every campaign (`winback dispatch`) and the gate's look at rows in flight: only the rows
# still to send or being sent are in it, so sent history does not grow it.
sa.Index("ix_ledger_open", ledger.c.state, ledger.c.send_at_utc,
         sqlite_where=ledger.c.state.in_(("planned", "sending")),
         postgresql_where=ledger.c.state.in_(("planned", "sending")))
sa.Index("ix_ledger_message", ledger.c.provider_message_id,
         sqlite_where=ledger.c.provider_message_id.isnot(None),
         postgresql_where=ledger.c.provider_message_id.isnot(None))
sa.Index("ix_ledger_coupon", ledger.c.coupon_code, sqlite_where=ledger.c.coupon_code.isnot(None),
         postgresql_where=ledger.c.coupon_code.isnot(None))

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

# Webhook tokens seen (Mailgun's `token`, SendGrid's signed timestamp + signature): a replay of a
# captured, validly signed request inside its validity window is refused, not processed twice.
webhook_tokens = sa.Table(
    "webhook_tokens",
    metadata,
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("token", sa.String(255), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("provider", "token", name="pk_webhook_tokens"),
)
sa.Index("ix_webhook_tokens_expiry", webhook_tokens.c.expires_at)

# The decision trail (schema version 3): one row per customer a run evaluated, per campaign and step —
# also those outside the audience or excluded, who have no ledger row. `winback explain` reads it.
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.String(200), nullable=False),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=False),
    sa.Column("as_of", UTCDateTime()),
    sa.Column("in_audience", sa.Boolean(), nullable=False),
    sa.Column("audience_rule", sa.Text()),  # the rule that kept the customer out (or "in audience")
    sa.Column("policy", sa.Text()),  # JSON: each channel's check, e.g. {"email": "ok", "sms": "no_consent:sms"}
    sa.Column("arm", sa.String(20)),  # treatment / holdout / excluded; NULL outside the audience
    sa.Column("reason", sa.Text()),
    sa.Column("offer", sa.String(200)),
    sa.Column("expected_net_value", sa.Float()),
    sa.Column("expected_cost", sa.Float()),
    sa.Column("runner_up", sa.String(200)),
    sa.Column("runner_up_net_value", sa.Float()),
    sa.Column("channel", sa.String(20)),
    sa.Column("channel_reason", sa.Text()),
    sa.Column("human_followup", sa.Text()),
    sa.Column("detail", sa.Text()),  # JSON: segment figures and the checks not given a column
    sa.UniqueConstraint("campaign_id", "customer_id", "step", name="uq_decisions_key"),
)
sa.Index("ix_decisions_customer", decisions.c.customer_id, decisions.c.campaign_id)

CALL_OUTCOMES = ("reached", "no_answer", "declined", "won_back")

# Every coupon code the ledger ever gave, and to whom (schema version 3). A trigger on the ledger fills
# it: a code already given to another customer or campaign aborts the insert (and with it the plan), so a
# code is unique across every campaign, also when two plans race — its primary key decides. A cadence
# step repeating its customer's code is the same issue, not a new one. Written by the database itself, so
# no writer can skip it.
coupon_codes = sa.Table(
    "coupon_codes",
    metadata,
    sa.Column("coupon_code", sa.String(200), primary_key=True),
    sa.Column("campaign_id", sa.String(200), nullable=False),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
)
COUPON_TAKEN = "coupon code already given to another customer or campaign"

# What the account managers report back from their call lists (`winback calls import`): the latest
# outcome per call task, with the manager's note.
call_outcomes = sa.Table(
    "call_outcomes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.String(200), nullable=False),
    sa.Column("customer_id", sa.String(200), nullable=False),
    sa.Column("step", sa.Integer(), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("note", sa.Text()),
    sa.Column("account_manager", sa.Text()),
    sa.Column("called_at", UTCDateTime()),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.Text()),
    sa.UniqueConstraint("campaign_id", "customer_id", "step", name="uq_call_outcomes_key"),
    sa.CheckConstraint("outcome in ({})".format(",".join(f"'{o}'" for o in CALL_OUTCOMES)),
                       name="ck_call_outcomes_outcome"),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("applied_at", UTCDateTime(), nullable=False),
)

LEDGER_COLUMNS = [c.name for c in ledger.columns]
TIMESTAMP_COLUMNS = ("send_at_utc", "as_of", "planned_at", "claimed_at", "sent_at", "updated_at", "lease_until",
                     "decided_at", "called_at", "recorded_at")
# Columns and states added by schema version 2 (migrations rebuild the version-1 shape without them).
V2_COLUMNS = ("send_rules", "gate_reason", "claim_owner", "lease_until")

LEDGER_STATES_V2 = ("planned", "sending", "sent", "failed", "suppressed", "held_out", "uncertain", "skipped")
V1_STATES = ("planned", "sending", "sent", "failed", "suppressed", "held_out", "uncertain")
