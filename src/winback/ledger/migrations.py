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
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable, DDLElement

from winback.ledger import schema

# Arbitrary constant identifying "winback ledger migration" for pg_advisory_xact_lock.
_PG_LOCK_ID = 0x77696E6261636B  # "winback"


def _v1(dialect: sa.Dialect) -> list[DDLElement]:
    """Version 1: ledger, suppressions, events, offer_results with their indexes."""
    ddl: list[DDLElement] = []
    for table in (schema.ledger, schema.suppressions, schema.events, schema.offer_results):
        ddl.append(CreateTable(table))
        ddl.extend(CreateIndex(index) for index in sorted(table.indexes, key=lambda i: i.name))
    return ddl


MIGRATIONS: Sequence[Callable[[sa.Dialect], list[DDLElement]]] = (_v1,)
LATEST_VERSION = len(MIGRATIONS)


def current_version(conn: sa.Connection) -> int:
    """The schema version recorded in `schema_version` (0 for an empty database)."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(schema.schema_version.c.version), 0)))
               .scalar_one())


def migrate(conn: sa.Connection) -> list[int]:
    """Apply every pending migration inside the caller's (write) transaction; return the versions applied."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("select pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    schema.schema_version.create(conn, checkfirst=True)
    applied: list[int] = []
    version = current_version(conn)
    for number in range(version + 1, LATEST_VERSION + 1):
        for statement in MIGRATIONS[number - 1](conn.dialect):
            conn.execute(statement)
        conn.execute(sa.insert(schema.schema_version).values(version=number, applied_at=datetime.now(UTC)))
        applied.append(number)
    return applied
