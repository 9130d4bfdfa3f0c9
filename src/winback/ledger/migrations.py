"""Versioned, transactional schema migrations for the ledger.

Why not Alembic: the ledger is one small schema owned by this package. Alembic would add an
`alembic.ini`, an env.py and a versions folder that every deployment must ship and configure,
and its main strength (autogenerate against models) is not needed here. A table
`schema_version` plus an ordered list of migrations — each a list of DDL statements run in ONE
transaction (both SQLite and PostgreSQL have transactional DDL) — gives the same guarantees:
a migration is applied entirely or not at all, exactly once, even when two processes open a
fresh database at the same moment (PostgreSQL: a transaction-scoped advisory lock; SQLite:
`BEGIN IMMEDIATE` takes the write lock before the version is read).

Adding a change: append a function returning the DDL of version N+1 (e.g. `ALTER TABLE … ADD
COLUMN …`), and copy the affected table's previous shape into the earlier migration so that
migration 1 keeps creating the version-1 tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable, DDLElement

from winback.ledger import schema

# Arbitrary constant identifying "winback ledger migration" for pg_advisory_xact_lock.
_PG_LOCK_ID = 0x77696E6261636B  # "winback"


def _v1_ledger(name: str = "ledger") -> sa.Table:
    """The version-1 ledger table (no send rules, gate reason or lease; no `skipped` state) with its indexes."""
    md = sa.MetaData()
    t = schema.ledger_table(md, name=name, exclude=schema.V2_COLUMNS, states=schema.V1_STATES)
    sa.Index("ix_ledger_due", t.c.campaign_id, t.c.state, t.c.send_at_utc)
    sa.Index("ix_ledger_contacts", t.c.customer_id, t.c.sent_at,
             sqlite_where=t.c.sent_at.isnot(None), postgresql_where=t.c.sent_at.isnot(None))
    sa.Index("ix_ledger_message", t.c.provider_message_id,
             sqlite_where=t.c.provider_message_id.isnot(None),
             postgresql_where=t.c.provider_message_id.isnot(None))
    return t


def _v1(dialect: sa.Dialect) -> list[DDLElement | str]:
    """Version 1: ledger, suppressions, events, offer_results with their indexes."""
    ddl: list[DDLElement | str] = []
    for table in (_v1_ledger(), schema.suppressions, schema.events, schema.offer_results):
        ddl.append(CreateTable(table))
        ddl.extend(CreateIndex(index) for index in sorted(table.indexes, key=lambda i: i.name))
    return ddl


def _v2(dialect: sa.Dialect) -> list[DDLElement | str]:
    """Version 2: send rules, gate reason, claim owner and lease on the ledger; state `skipped`; webhook tokens.

    SQLite cannot change a CHECK constraint in place, so there the ledger is rebuilt (the documented
    "make other kinds of table schema changes" procedure: new table, copy, drop, rename), inside
    this migration's transaction; PostgreSQL alters it.
    """
    t = _v2_ledger()
    ddl: list[DDLElement | str] = []
    if dialect.name == "sqlite":
        old = [c.name for c in _v1_ledger().columns]
        ddl += ["DROP INDEX IF EXISTS ix_ledger_due", "DROP INDEX IF EXISTS ix_ledger_contacts",
                "DROP INDEX IF EXISTS ix_ledger_message", "ALTER TABLE ledger RENAME TO ledger_v1",
                CreateTable(t),
                f"INSERT INTO ledger ({', '.join(old)}) SELECT {', '.join(old)} FROM ledger_v1",
                "DROP TABLE ledger_v1"]
        ddl.extend(CreateIndex(index) for index in sorted(t.indexes, key=lambda i: i.name))
    else:
        for name in schema.V2_COLUMNS:
            column = t.c[name]
            ddl.append(f"ALTER TABLE ledger ADD COLUMN {name} {column.type.compile(dialect=dialect)}")
        states = ",".join(f"'{s}'" for s in schema.LEDGER_STATES_V2)
        ddl += ["ALTER TABLE ledger DROP CONSTRAINT ck_ledger_state",
                f"ALTER TABLE ledger ADD CONSTRAINT ck_ledger_state CHECK (state in ({states}))",
                CreateIndex(next(i for i in t.indexes if i.name == "ix_ledger_open"))]
    ddl.append(CreateTable(schema.webhook_tokens))
    ddl.extend(CreateIndex(index) for index in schema.webhook_tokens.indexes)
    return ddl


def _v2_ledger() -> sa.Table:
    """The version-2 ledger table with its indexes (version 3 adds `ix_ledger_coupon`)."""
    md = sa.MetaData()
    t = schema.ledger_table(md)
    sa.Index("ix_ledger_due", t.c.campaign_id, t.c.state, t.c.send_at_utc)
    sa.Index("ix_ledger_contacts", t.c.customer_id, t.c.sent_at,
             sqlite_where=t.c.sent_at.isnot(None), postgresql_where=t.c.sent_at.isnot(None))
    open_ = t.c.state.in_(("planned", "sending"))
    sa.Index("ix_ledger_open", t.c.state, t.c.send_at_utc, sqlite_where=open_, postgresql_where=open_)
    sa.Index("ix_ledger_message", t.c.provider_message_id,
             sqlite_where=t.c.provider_message_id.isnot(None),
             postgresql_where=t.c.provider_message_id.isnot(None))
    return t


def _coupon_trigger(dialect: sa.Dialect) -> list[str]:
    """The trigger that registers each new ledger row's coupon code and refuses one given to someone else."""
    register = ("INSERT INTO coupon_codes (coupon_code, campaign_id, customer_id, step) "
                "VALUES (NEW.coupon_code, NEW.campaign_id, NEW.customer_id, NEW.step) "
                "ON CONFLICT (coupon_code) DO NOTHING")
    taken = ("SELECT 1 FROM coupon_codes WHERE coupon_code = NEW.coupon_code "
             "AND (campaign_id <> NEW.campaign_id OR customer_id <> NEW.customer_id)")
    if dialect.name == "sqlite":
        # SQLite serialises writers: the insert-then-check runs under the database write lock.
        return [f"CREATE TRIGGER trg_ledger_coupon AFTER INSERT ON ledger WHEN NEW.coupon_code IS NOT NULL "
                f"BEGIN {register}; SELECT RAISE(ABORT, '{schema.COUPON_TAKEN}') WHERE EXISTS ({taken}); END"]
    # PostgreSQL: a racing insert of the same code waits on the primary key until the first commits; the
    # check after it is a new statement (READ COMMITTED), so it sees the winner and aborts the loser.
    return [
        f"CREATE FUNCTION winback_register_coupon() RETURNS trigger AS $$ BEGIN {register}; "
        f"IF EXISTS ({taken}) THEN RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
        f"MESSAGE = '{schema.COUPON_TAKEN}: ' || NEW.coupon_code; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER trg_ledger_coupon AFTER INSERT ON ledger FOR EACH ROW WHEN (NEW.coupon_code IS NOT NULL) "
        "EXECUTE FUNCTION winback_register_coupon()",
    ]


def _v3(dialect: sa.Dialect) -> list[DDLElement | str]:
    """Version 3: the decision trail, call outcomes, and coupon codes unique across every campaign.

    No rebuild: new tables, an index and a trigger. The codes already in the ledger are registered first
    (the earliest row of each code; a code an older ledger gave twice stays with its first campaign).
    """
    ddl: list[DDLElement | str] = []
    for table in (schema.decisions, schema.call_outcomes, schema.coupon_codes):
        ddl.append(CreateTable(table))
        ddl.extend(CreateIndex(index) for index in sorted(table.indexes, key=lambda i: i.name))
    ddl += [
        CreateIndex(next(i for i in schema.ledger.indexes if i.name == "ix_ledger_coupon")),
        # `WHERE true`: SQLite needs it to tell an upsert from a join after INSERT … SELECT.
        "INSERT INTO coupon_codes (coupon_code, campaign_id, customer_id, step) "
        "SELECT coupon_code, campaign_id, customer_id, step FROM ledger WHERE coupon_code IS NOT NULL "
        "ORDER BY id ON CONFLICT (coupon_code) DO NOTHING",
        *_coupon_trigger(dialect),
    ]
    return ddl


MIGRATIONS: Sequence[Callable[[sa.Dialect], list[DDLElement | str]]] = (_v1, _v2, _v3)
LATEST_VERSION = len(MIGRATIONS)


def current_version(conn: sa.Connection) -> int:
    """The schema version recorded in `schema_version` (0 for an empty database)."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(schema.schema_version.c.version), 0)))
               .scalar_one())


def migrate(conn: sa.Connection, *, applied_at: datetime) -> list[int]:
    """Apply every pending migration inside the caller's (write) transaction; return the versions applied."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("select pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    schema.schema_version.create(conn, checkfirst=True)
    applied: list[int] = []
    version = current_version(conn)
    for number in range(version + 1, LATEST_VERSION + 1):
        for statement in MIGRATIONS[number - 1](conn.dialect):
            conn.execute(sa.text(statement) if isinstance(statement, str) else statement)
        conn.execute(sa.insert(schema.schema_version).values(version=number, applied_at=applied_at))
        applied.append(number)
    return applied
