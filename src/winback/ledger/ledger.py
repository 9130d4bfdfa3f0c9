"""The ledger: one row per (campaign, customer, step), and the verbs that make sending exactly-once.

Protocol (used by `winback send`):
1. `plan(frame)` persists the whole plan before anything is sent (new keys only; re-running is a no-op).
2. `claim(now=…, limit=…)` atomically moves a batch of due `planned` rows to `sending` under a fresh
   claim token (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: `BEGIN IMMEDIATE` + conditional update),
   so two processes never get the same row.
3. After each provider answer, `record(outcomes, claim_token=…)` moves the row to its final state
   (`sent`, `failed`, `suppressed`, `uncertain`) or back to `planned` (retry later) in one transaction.
4. A claim carries an owner (`claim_owner`) and a lease (`lease_until`, on the run's clock) that the
   owner renews while it works (`renew`). After a crash, rows whose lease has lapsed (or whose owner is
   known dead) are taken over with `reclaim()`; the sender looks each one up at the provider and
   records `sent` when found, otherwise `uncertain` (`mark_uncertain`) or `planned` (`release`)
   according to its policy, each conditional on its own claim token. Rows under a live lease belong
   to a sender still at work and are left alone. Nothing in `sending` is ever resent blindly.

All SQL is SQLAlchemy Core with bound parameters; the same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from winback.clock import Clock, SystemClock
from winback.errors import DataError, LedgerError
from winback.ledger import schema
from winback.ledger.migrations import migrate
from winback.vocab import LEDGER_STATES

# States `record()` may move a claimed row to; `planned` means "not sent, try again later".
OUTCOME_STATES = ("sent", "failed", "suppressed", "uncertain", "planned")
# Delivery statuses reported by providers' events, weakest first: a later, weaker event (a late
# `delivered` after `clicked`) never overwrites a stronger one. `opened`/`failed` extend the
# contract's five (delivered, bounced, complained, unsubscribed, clicked).
DELIVERY_STATUSES = ("delivered", "opened", "clicked", "failed", "bounced", "complained", "unsubscribed")
_STATUS_RANK = {status: rank for rank, status in enumerate(DELIVERY_STATUSES)}
# Events that also put the address on the suppression list, with the suppression reason.
SUPPRESSING_EVENTS = {"bounced": "bounced", "complained": "complained", "unsubscribed": "unsubscribed"}

_CHUNK = 5_000  # ids per claim UPDATE: well under both databases' bound-parameter limits
_BULK_CHUNK = 50_000  # rows per driver-level executemany in plan()
_ANALYZE_AFTER = 10_000  # PostgreSQL: refresh planner statistics after a plan() this large
_KEY_CHUNK = 5_000  # keys per VALUES list (3 bound parameters each: under both databases' limits)
_PG_CLAIM_LOCK = 0x77626B636C61696D  # "wbkclaim": pg_advisory_xact_lock id that serialises gated claims
# How long a claim holds its rows without a renewal. The owner renews every third of it, so a live
# sender never loses its rows; a crashed one frees them (for reconciliation) this long after its last renewal.
DEFAULT_LEASE_S = 120.0



@functools.lru_cache(maxsize=32)
def _key_lookup_sql(dialect: sa.Dialect, n: int) -> tuple[str, tuple[str, ...] | None]:
    """`SELECT id, key FROM (VALUES n keys) JOIN ledger ON the unique key`, compiled once per dialect and length.

    Returns the driver SQL and, for positional drivers (SQLite), the parameter names in order. SQLAlchemy
    does not cache statements holding a VALUES list, so building it per call compiled 500 rows of
    parameters on every flush (7 % of `winback send`'s time); the SQL text is the same as before.
    """
    t = schema.ledger
    rows = [(sa.bindparam(f"c{i}", type_=sa.String()), sa.bindparam(f"u{i}", type_=sa.String()),
             sa.bindparam(f"s{i}", type_=sa.Integer())) for i in range(n)]
    v = sa.values(sa.column("k_campaign_id", sa.String()), sa.column("k_customer_id", sa.String()),
                  sa.column("k_step", sa.Integer()), name="v").data(rows).cte("v")
    stmt = sa.select(t.c.id, v.c.k_campaign_id, v.c.k_customer_id, v.c.k_step).select_from(
        v.join(t, sa.and_(t.c.campaign_id == v.c.k_campaign_id, t.c.customer_id == v.c.k_customer_id,
                          t.c.step == v.c.k_step)))
    compiled = stmt.compile(dialect=dialect)
    return compiled.string, (tuple(compiled.positiontup) if compiled.positional else None)

@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one send attempt for one ledger key, as `record()` stores it."""

    campaign_id: str
    customer_id: str
    step: int
    state: str
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    row_id: int | None = None  # the ledger row's id when known (from `claim`): no key lookup needed


Key = tuple[str, str, int]


def _utc(ts: Any) -> datetime:
    """A timestamp parameter as an aware UTC datetime."""
    value = pd.Timestamp(ts)
    if value is pd.NaT:
        raise DataError("a timestamp parameter is NaT")
    value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
    return value.to_pydatetime()


def _keys(keys: Iterable[Key] | pd.DataFrame) -> list[tuple[str, str, int]]:
    """Normalise keys given as (campaign_id, customer_id, step) tuples or a frame with those columns."""
    if isinstance(keys, pd.DataFrame):
        missing = [c for c in schema.KEY_COLUMNS if c not in keys.columns]
        if missing:
            raise DataError(f"key frame lacks column(s) {missing}")
        rows = zip(keys["campaign_id"], keys["customer_id"], keys["step"], strict=True)
    else:
        rows = keys
    return [(str(c), str(u), int(s)) for c, u, s in rows]


class Ledger:
    """The campaign ledger over SQLite or PostgreSQL; `Ledger(url_or_engine)` migrates on open."""

    def __init__(self, url_or_engine: str | sa.Engine | None = None, *, clock: Clock | None = None) -> None:
        from winback.config import ledger_url

        self.clock = clock or SystemClock()
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
            self._owns_engine = False
        else:
            self.engine = _create_engine(ledger_url(url_or_engine))
            self._owns_engine = True
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise LedgerError(f"unsupported ledger database {self.dialect!r}", hint="use sqlite:/// or postgresql://")
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        try:
            with self._write() as conn:
                self.migrations_applied = migrate(conn, applied_at=self.clock.now_datetime())
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot open the ledger at {self.url}: {_short(exc)}") from None

    # -- plumbing ---------------------------------------------------------------------------------

    def _when(self, now: Any | None) -> datetime:
        """`now` as an aware UTC datetime; the ledger's clock when not given (never the wall clock)."""
        return _utc(now) if now is not None else self.clock.now_datetime()

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release the connection pool (when the ledger created the engine)."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; on SQLite it starts with BEGIN IMMEDIATE (takes the write lock first)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(winback_immediate=True) if self.dialect == "sqlite" else conn
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _insert(self, table: sa.Table):
        return (pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert)(table)

    # -- planning ---------------------------------------------------------------------------------

    def plan(self, frame: pd.DataFrame, *, now: Any | None = None) -> int:
        """Store a plan frame's new keys (treatment → planned, holdout → held_out, excluded skipped); return rows inserted."""
        columns, rows = _plan_rows(frame, self.dialect, self._when(now))
        if not rows:
            return 0
        # The bulk path goes straight to the driver's executemany (sqlite3 / psycopg pipeline): a
        # Core insert spends most of its time building per-row parameter dicts (~10x slower on 1M
        # rows). Still one parameterised statement; names come from the schema, never from input.
        placeholder = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = (
            f"INSERT INTO {schema.ledger.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join([placeholder] * len(columns))}) "
            f"ON CONFLICT ({', '.join(schema.KEY_COLUMNS)}) DO NOTHING"
        )
        inserted = 0
        try:
            with self._write() as conn:
                if self.dialect == "postgresql":
                    return self._plan_by_copy(conn, columns, rows)
                for start in range(0, len(rows), _BULK_CHUNK):
                    # Both drivers sum rowcount over an executemany; a key already present counts 0.
                    inserted += max(conn.exec_driver_sql(sql, rows[start : start + _BULK_CHUNK]).rowcount, 0)
        except (sa.exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise LedgerError(f"cannot store the plan: {_short(exc)}") from None
        return inserted

    @staticmethod
    def _plan_by_copy(conn: sa.Connection, columns: list[str], rows: list[tuple]) -> int:
        """PostgreSQL: COPY the rows into a temporary table, then one INSERT … SELECT … ON CONFLICT DO NOTHING.

        COPY is several times faster than an executemany of a million INSERTs (psycopg spends its
        time per statement); the temporary table lives only for this transaction.
        """
        cols = ", ".join(columns)
        staging = "winback_plan_staging"
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.execute(f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "
                        f"SELECT {cols} FROM {schema.ledger.name} WITH NO DATA")
            with cur.copy(f"COPY {staging} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO {schema.ledger.name} ({cols}) SELECT {cols} FROM {staging} "
                f"ON CONFLICT ({', '.join(schema.KEY_COLUMNS)}) DO NOTHING"
            )
            inserted = max(cur.rowcount, 0)
            cur.execute(f"DROP TABLE {staging}")
            if inserted >= _ANALYZE_AFTER:
                # Fresh statistics now, not whenever autovacuum gets to it: without them the planner
                # believes `planned` rows are rare and claim() sorts / filters every due row.
                cur.execute(f"ANALYZE {schema.ledger.name}")
        finally:
            cur.close()
        return inserted

    # -- sending ----------------------------------------------------------------------------------

    def _due(self, when: datetime, campaign_id: str | None = None, channel: str | Sequence[str] | None = None,
             step: int | None = None) -> list[sa.ColumnElement[bool]]:
        """The due rule, the one place it is written: `planned` and its send time has come."""
        t = schema.ledger
        where = [t.c.state == "planned", t.c.send_at_utc <= when]
        if campaign_id is not None:
            where.append(t.c.campaign_id == campaign_id)
        if channel is not None:
            channels = [channel] if isinstance(channel, str) else list(channel)
            where.append(t.c.channel.in_(channels))
        if step is not None:
            where.append(t.c.step == int(step))
        return where

    def count_due(self, campaign_id: str | None = None, *, now: Any | None = None,
                  by: str | None = None) -> int | dict[str, int]:
        """Rows due now (the claim's own rule); with `by="channel"`, counts per channel."""
        t = schema.ledger
        where = self._due(self._when(now), campaign_id)
        with self._read() as conn:
            if by is None:
                return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one())
            col = t.c[by]
            rows = conn.execute(sa.select(col, sa.func.count()).where(*where).group_by(col).order_by(col)).all()
        return {str(k): int(n) for k, n in rows}

    def claim(
        self,
        campaign_id: str | None = None,
        *,
        now: Any | None = None,
        limit: int,
        channel: str | Sequence[str] | None = None,
        step: int | None = None,
        gate: bool = True,
        last_orders: Mapping[str, Any] | None = None,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> pd.DataFrame:
        """Atomically move up to `limit` due `planned` rows to `sending`; return them with their `claim_token`.

        With `gate` (the default) each due row first passes the send-time gate
        (`winback.policy.gate.decide`): outside its local send window it is deferred (stays `planned`,
        its send time moved to the next opening); over a frequency cap counted across every campaign,
        or an if_not_returned step of a customer who ordered since (`last_orders`), it is `skipped`.
        The count and the claim are one transaction, serialised across senders (SQLite's write lock,
        a PostgreSQL advisory lock), so the cap holds as a reservation. The frame's attrs carry
        `claim_token` and `gate` (a Counter of deferred/skipped reasons). The rows are held by `owner`
        (default: the claim token) until `now + lease_s`, which the owner extends with `renew`.
        """
        from collections import Counter

        from winback.ledger.decisions import committed_costs
        from winback.policy import gate as send_gate

        token = uuid.uuid4().hex
        if limit <= 0:
            frame = self._frame([])
            frame.attrs.update(claim_token=token, gate=Counter())
            return frame
        t = schema.ledger
        when = self._when(now)
        # When each step was decided matters only for the ordered-since check (orders given).
        decided = (t.c.as_of, t.c.planned_at) if last_orders else ()
        due = sa.select(t.c.id, t.c.customer_id, t.c.campaign_id, t.c.channel, t.c.timezone, t.c.send_rules,
                        t.c.expected_cost, *decided).where(*self._due(when, campaign_id, channel, step))
        due = due.order_by(t.c.send_at_utc, t.c.id).limit(int(limit))
        if self.dialect == "postgresql":
            # Rows another claimer holds are skipped rather than waited for; the update below stays
            # conditional on `planned` all the same.
            due = due.with_for_update(skip_locked=True)
        # Two statements, not `UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`: PostgreSQL
        # may plan that as a nested-loop semi-join that re-runs the subquery per row, ignoring the limit.
        lease = when + pd.Timedelta(seconds=lease_s).to_pytimedelta()
        stmt = (
            sa.update(t)
            .where(t.c.id.in_(sa.bindparam("ids", expanding=True)), t.c.state == "planned")
            .values(state="sending", claim_token=token, claimed_at=when, updated_at=when, attempts=t.c.attempts + 1,
                    claim_owner=owner or token, lease_until=lease, gate_reason=None)
            .returning(*t.c)
        )
        defer = (sa.update(t).where(t.c.id == sa.bindparam("b_id"), t.c.state == "planned")
                 .values(send_at_utc=sa.bindparam("b_until", type_=schema.UTCDateTime()),
                         gate_reason=sa.bindparam("b_reason", type_=sa.Text()), updated_at=when))
        skip = (sa.update(t).where(t.c.id == sa.bindparam("b_id"), t.c.state == "planned")
                .values(state="skipped", gate_reason=sa.bindparam("b_reason", type_=sa.Text()), updated_at=when))
        rows = []
        gated: Counter = Counter()
        try:
            # SQLite: the IMMEDIATE transaction holds the database write lock from the first
            # statement, so a second claimer waits (busy_timeout) and then sees these rows as sending.
            with self._write() as conn:
                if gate and self.dialect == "postgresql":
                    # The cap count below must see every other claimer's grants: one claim at a time.
                    conn.execute(sa.text("select pg_advisory_xact_lock(:id)"), {"id": _PG_CLAIM_LOCK})
                candidates = conn.execute(due).all()
                ids = [r.id for r in candidates]
                if gate and candidates:
                    frame = pd.DataFrame(candidates, columns=list(candidates[0]._fields))
                    history = self._cap_history(conn, frame, when)
                    # The budget: what each campaign has committed (sent + in flight), read under the same lock.
                    committed = committed_costs(conn, frame)
                    decisions = send_gate.decide(frame, history, pd.Timestamp(when), last_orders, committed)
                    ids, deferred, skipped = [], [], []
                    for row_id, d in zip(frame["id"].tolist(), decisions, strict=True):
                        if d.action == send_gate.SEND:
                            ids.append(row_id)
                        elif d.action == send_gate.DEFER:
                            deferred.append({"b_id": row_id, "b_until": d.until, "b_reason": d.reason})
                            gated[f"deferred: {d.reason}"] += 1
                        else:
                            skipped.append({"b_id": row_id, "b_reason": d.reason})
                            gated[f"skipped: {d.reason}"] += 1
                    if deferred:
                        conn.execute(defer, deferred)
                    if skipped:
                        conn.execute(skip, skipped)
                for start in range(0, len(ids), _CHUNK):
                    rows.extend(conn.execute(stmt, {"ids": ids[start : start + _CHUNK]}).all())
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot claim rows: {_short(exc)}") from None
        frame = self._frame(rows)
        frame = frame.sort_values(["send_at_utc", "id"], kind="stable").reset_index(drop=True)
        frame.attrs["claim_token"] = token
        frame.attrs["gate"] = gated
        return frame

    def _cap_history(self, conn: sa.Connection, candidates: pd.DataFrame, when: datetime) -> pd.DataFrame:
        """Messages of the candidates' customers that count against frequency caps: sent in the longest
        cap window, or in flight (`sending`), of every campaign."""
        from winback.policy.gate import SendRules

        days = [d for v in candidates["send_rules"].dropna().unique() for _, _, d in SendRules.parse(v).caps]
        columns = ["customer_id", "campaign_id", "channel", "at"]
        if not days:
            return pd.DataFrame(columns=columns)
        t = schema.ledger
        since = when - pd.Timedelta(days=max(days)).to_pytimedelta()
        customers = sorted(set(candidates["customer_id"].astype(str)))
        out = []
        for start in range(0, len(customers), _CHUNK):
            chunk = customers[start:start + _CHUNK]
            out += conn.execute(sa.select(t.c.customer_id, t.c.campaign_id, t.c.channel, t.c.sent_at).where(
                t.c.customer_id.in_(chunk), t.c.sent_at.isnot(None), t.c.sent_at > since,
                t.c.state == "sent")).all()
            out += conn.execute(sa.select(t.c.customer_id, t.c.campaign_id, t.c.channel, t.c.claimed_at).where(
                t.c.state == "sending", t.c.customer_id.in_(chunk))).all()
        return pd.DataFrame([tuple(r) for r in out], columns=columns)

    def record(
        self,
        outcomes: Iterable[Outcome],
        *,
        claim_token: str | None = None,
        now: Any | None = None,
        from_states: Sequence[str] = ("sending",),
    ) -> int:
        """Store send outcomes in one transaction, only for rows in `from_states` (and that claim); return rows updated."""
        when = self._when(now)
        latest: dict[tuple[str, str, int], dict[str, Any]] = {}
        ids: dict[tuple[str, str, int], int] | None = {}
        for o in outcomes:
            if o.state not in OUTCOME_STATES:
                raise DataError(f"outcome state {o.state!r} is not one of {OUTCOME_STATES}")
            key = (str(o.campaign_id), str(o.customer_id), int(o.step))
            # The last outcome given for a key wins (one row can only take one new state).
            latest[key] = {"v_state": o.state, "v_provider": o.provider, "v_message_id": o.provider_message_id,
                           "v_error": o.error, "v_sent_at": when if o.state == "sent" else None,
                           "v_keep_claim": o.state != "planned", "v_keep_owner": o.state != "planned"}
            if ids is not None:
                if o.row_id is None:
                    ids = None
                else:
                    ids[key] = int(o.row_id)
        if not latest:
            return 0
        t = schema.ledger
        assignments = {
            "state": sa.bindparam("v_state", type_=sa.String()),
            "provider": sa.func.coalesce(sa.bindparam("v_provider", type_=sa.String()), t.c.provider),
            "provider_message_id": sa.func.coalesce(sa.bindparam("v_message_id", type_=sa.String()),
                                                    t.c.provider_message_id),
            "error": sa.bindparam("v_error", type_=sa.Text()),
            "sent_at": sa.func.coalesce(sa.bindparam("v_sent_at", type_=schema.UTCDateTime()), t.c.sent_at),
            # A row going back to planned gives up its claim; final states keep it for audit.
            "claim_token": sa.case((sa.bindparam("v_keep_claim", type_=sa.Boolean()), t.c.claim_token),
                                   else_=sa.null()),
            "claim_owner": sa.case((sa.bindparam("v_keep_owner", type_=sa.Boolean()), t.c.claim_owner),
                                   else_=sa.null()),
            "lease_until": sa.null(),  # a recorded row is nobody's to hold any more
            "updated_at": when,
        }
        where = [_state_in(from_states)]
        if claim_token is not None:
            where.append(t.c.claim_token == claim_token)
        return self._update_by_keys(latest, assignments, where, "record outcomes", ids=ids)

    def in_flight(self, campaign_id: str | None = None, *, claimed_before: Any | None = None,
                  lapsed_at: Any | None = None) -> pd.DataFrame:
        """Rows in `sending` (by a crashed or a still-running sender).

        `lapsed_at`: only rows whose lease had lapsed by then (no lease at all — rows claimed before
        leases existed — counts as lapsed); `claimed_before`: only rows claimed before that instant.
        """
        t = schema.ledger
        query = sa.select(t).where(t.c.state == "sending")
        if campaign_id is not None:
            query = query.where(t.c.campaign_id == campaign_id)
        if claimed_before is not None:
            query = query.where(t.c.claimed_at < _utc(claimed_before))
        if lapsed_at is not None:
            query = query.where(sa.or_(t.c.lease_until.is_(None), t.c.lease_until <= _utc(lapsed_at)))
        return self._select(query.order_by(t.c.id))

    def renew(self, owner: str, *, until: Any, now: Any | None = None) -> int:
        """Extend the lease of every row `owner` holds in `sending` to `until`; return the rows renewed.

        A row another sender has taken over (after this owner's lease lapsed) has another owner and is
        not renewed: it is no longer this owner's to record.
        """
        t = schema.ledger
        stmt = (sa.update(t).where(t.c.state == "sending", t.c.claim_owner == owner)
                .values(lease_until=_utc(until)))
        try:
            with self._write() as conn:
                return max(conn.execute(stmt).rowcount, 0)
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot renew leases: {_short(exc)}") from None

    def reclaim(self, campaign_id: str | None = None, *, owner: str, now: Any | None = None,
                lease_s: float = DEFAULT_LEASE_S, lapsed_at: Any | None = None,
                dead_owners: Sequence[str] = (), ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Take over `sending` rows whose lease lapsed by `lapsed_at` (default `now`; no lease = lapsed) or
        whose owner is in `dead_owners`: a fresh claim token, `owner` and lease, atomically.

        Returns the rows taken (`attrs["claim_token"]`); a row another reconciler took first, or whose
        owner renewed it meanwhile, is not returned. Outcomes are then recorded under that token, so a
        stalled former owner that wakes up cannot overwrite them.
        """
        t = schema.ledger
        when = self._when(now)
        lapsed = _utc(lapsed_at) if lapsed_at is not None else when
        token = uuid.uuid4().hex
        free = [t.c.lease_until.is_(None), t.c.lease_until <= lapsed]
        dead = [str(o) for o in dict.fromkeys(dead_owners) if o]
        if dead:
            free.append(t.c.claim_owner.in_(dead))
        where = [t.c.state == "sending", sa.or_(*free)]
        if campaign_id is not None:
            where.append(t.c.campaign_id == campaign_id)
        lease = when + pd.Timedelta(seconds=lease_s).to_pytimedelta()
        values = {"claim_token": token, "claim_owner": owner, "lease_until": lease, "updated_at": when}
        rows = []
        try:
            with self._write() as conn:
                if ids is None:
                    rows = conn.execute(sa.update(t).where(*where).values(**values).returning(*t.c)).all()
                else:
                    wanted = [int(i) for i in ids]
                    for start in range(0, len(wanted), _CHUNK):
                        stmt = (sa.update(t).where(t.c.id.in_(wanted[start:start + _CHUNK]), *where)
                                .values(**values).returning(*t.c))
                        rows.extend(conn.execute(stmt).all())
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot take over lapsed rows: {_short(exc)}") from None
        frame = self._frame(rows).sort_values("id", kind="stable").reset_index(drop=True)
        frame.attrs["claim_token"] = token
        return frame

    def release(
        self, keys: Iterable[Key] | pd.DataFrame, *, now: Any | None = None, from_states: Sequence[str] = ("sending",),
        claim_token: str | None = None,
    ) -> int:
        """Put rows back to `planned` (not sent; e.g. a provider outage, or a person's `uncertain resend`).

        With `claim_token`, only rows still held under that claim move."""
        return self._move(keys, "planned", from_states, now, clear_claim=True, claim_token=claim_token)

    def defer(self, keys: Iterable[Key] | pd.DataFrame, *, until: Any, reason: str, now: Any | None = None) -> int:
        """Put `sending` rows back to `planned`, due again at `until`, with the reason (e.g. throttled)."""
        rows = list(dict.fromkeys(_keys(keys)))
        if not rows:
            return 0
        values = {"state": "planned", "updated_at": self._when(now), "claim_token": None, "claim_owner": None,
                  "lease_until": None, "send_at_utc": _utc(until), "gate_reason": reason}
        return self._update_by_keys({key: {} for key in rows}, values, [_state_in(("sending",))], "defer rows")

    def mark_uncertain(
        self, keys: Iterable[Key] | pd.DataFrame, *, error: str | None = None, now: Any | None = None,
        claim_token: str | None = None,
    ) -> int:
        """Mark `sending` rows `uncertain`: the provider cannot tell whether the message went out. They are
        held for a person (`winback uncertain list|resend|drop`), never resent on their own."""
        return self._move(keys, "uncertain", ("sending",), now, clear_claim=False, error=error,
                          claim_token=claim_token, drop_lease=True)

    def uncertain(self, campaign_id: str | None = None) -> pd.DataFrame:
        """Rows held as `uncertain` (sent or not, nobody could tell), oldest first."""
        t = schema.ledger
        query = sa.select(t).where(t.c.state == "uncertain")
        if campaign_id is not None:
            query = query.where(t.c.campaign_id == campaign_id)
        return self._select(query.order_by(t.c.updated_at, t.c.id))

    def drop_uncertain(self, keys: Iterable[Key] | pd.DataFrame, *, now: Any | None = None,
                       note: str = "dropped by a person") -> int:
        """A person decided not to resend these `uncertain` rows: they become `failed`, their reason kept."""
        rows = list(dict.fromkeys(_keys(keys)))
        if not rows:
            return 0
        t = schema.ledger
        error = sa.func.substr(sa.literal(f"uncertain_dropped: {note}; ") + sa.func.coalesce(t.c.error, ""), 1, 500)
        values = {"state": "failed", "updated_at": self._when(now), "error": error}
        return self._update_by_keys({key: {} for key in rows}, values, [_state_in(("uncertain",))],
                                    "drop uncertain rows")

    def _move(self, keys, state, from_states, now, *, clear_claim, error=None, claim_token=None,
              drop_lease=False) -> int:
        rows = list(dict.fromkeys(_keys(keys)))
        if not rows:
            return 0
        values: dict[str, Any] = {"state": state, "updated_at": self._when(now)}
        if clear_claim:
            values.update(claim_token=None, claim_owner=None, lease_until=None)
        elif drop_lease:
            values["lease_until"] = None
        if error is not None:
            values["error"] = error
        where = [_state_in(from_states)]
        if claim_token is not None:
            where.append(schema.ledger.c.claim_token == claim_token)
        return self._update_by_keys({key: {} for key in rows}, values, where, f"move rows to {state}")

    def _update_by_keys(self, params: dict[tuple[str, str, int], dict[str, Any]], assignments: dict[str, Any],
                        where: list, what: str, ids: dict[tuple[str, str, int], int] | None = None) -> int:
        """UPDATE ledger rows given by key, each with its own bound values, in one transaction.

        Keys are first resolved to ids (a join of a VALUES list on the unique key, no other filter),
        then one executemany updates by primary key. Updating by key directly lets PostgreSQL's
        planner pick the (campaign, state) index or a nested loop over the VALUES list when it
        underestimates the `sending` rows — measured at seconds per thousand rows. With `ids` (every
        key's row id, known from `claim`) the lookup is skipped; the `where` conditions still hold.
        """
        t = schema.ledger
        keys = list(params)
        stmt = sa.update(t).where(t.c.id == sa.bindparam("b_id"), *where).values(**assignments)
        changed = 0
        try:
            with self._write() as conn:
                if ids is not None:
                    batch = [{"b_id": ids[key], **params[key]} for key in keys]
                    for start in range(0, len(batch), _KEY_CHUNK):
                        changed += max(conn.execute(stmt, batch[start:start + _KEY_CHUNK]).rowcount, 0)
                    return changed
                for start in range(0, len(keys), _KEY_CHUNK):
                    chunk = keys[start : start + _KEY_CHUNK]
                    values = {}
                    for i, (c, u, st) in enumerate(chunk):
                        values[f"c{i}"], values[f"u{i}"], values[f"s{i}"] = c, u, st
                    sql, order = _key_lookup_sql(conn.dialect, len(chunk))
                    found = conn.exec_driver_sql(sql, tuple(values[k] for k in order) if order else values).all()
                    batch = [{"b_id": row_id, **params[(c, u, int(st))]} for row_id, c, u, st in found]
                    if batch:
                        # Both drivers sum rowcount over an executemany of UPDATEs.
                        changed += max(conn.execute(stmt, batch).rowcount, 0)
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot {what}: {_short(exc)}") from None
        return changed

    # -- reading ----------------------------------------------------------------------------------

    def status(self, campaign_id: str | None = None) -> dict[str, int]:
        """Row counts per ledger state (every state present, zero when none)."""
        t = schema.ledger
        query = sa.select(t.c.state, sa.func.count()).group_by(t.c.state)
        if campaign_id is not None:
            query = query.where(t.c.campaign_id == campaign_id)
        counts = dict.fromkeys(LEDGER_STATES, 0)
        with self._read() as conn:
            counts.update({state: int(n) for state, n in conn.execute(query)})
        return counts

    def rows(self, campaign_id: str | None = None, step: int | None = None) -> pd.DataFrame:
        """Every ledger row of a campaign (all campaigns when None), optionally one step, ordered by key."""
        t = schema.ledger
        query = sa.select(t)
        if campaign_id is not None:
            query = query.where(t.c.campaign_id == campaign_id)
        if step is not None:
            query = query.where(t.c.step == int(step))
        return self._select(query.order_by(t.c.campaign_id, t.c.customer_id, t.c.step))

    def campaigns(self) -> list[str]:
        """The campaign ids present in the ledger, sorted."""
        t = schema.ledger
        with self._read() as conn:
            return list(conn.execute(sa.select(t.c.campaign_id).distinct().order_by(t.c.campaign_id)).scalars())

    def contact_history(self, since: Any, channels: Sequence[str] | None = None) -> pd.DataFrame:
        """Messages really sent since `since`: customer_id, channel, sent_at (UTC), campaign_id."""
        t = schema.ledger
        query = (
            sa.select(t.c.customer_id, t.c.channel, t.c.sent_at, t.c.campaign_id)
            .where(t.c.state == "sent", t.c.sent_at >= _utc(since))
            .order_by(t.c.sent_at, t.c.id)
        )
        if channels is not None:
            query = query.where(t.c.channel.in_(list(channels)))
        return self._select(query, columns=["customer_id", "channel", "sent_at", "campaign_id"])

    def _select(self, query, columns: list[str] | None = None) -> pd.DataFrame:
        try:
            with self._read() as conn:
                rows = conn.execute(query).all()
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot read the ledger: {_short(exc)}") from None
        return self._frame(rows, columns)

    @staticmethod
    def _frame(rows, columns: list[str] | None = None) -> pd.DataFrame:
        columns = columns or schema.LEDGER_COLUMNS
        # Column by column: a dict per row handed to the DataFrame constructor was 28 µs a row,
        # most of a claim of 2,000 rows. A column the rows lack is all missing, as before.
        # `rows`: SQLAlchemy Row objects (tuples with field names).
        values = dict(zip(rows[0]._fields, zip(*rows, strict=True), strict=True)) if rows else {}
        frame = pd.DataFrame({c: list(values[c]) if c in values else [None] * len(rows) for c in columns},
                             columns=columns)
        return _typed(frame)

    # -- suppressions and delivery events --------------------------------------------------------

    def suppressions(self, channel: str | None = None) -> pd.DataFrame:
        """The suppression list: customer_id, channel, address, reason, source, created_at (UTC)."""
        s = schema.suppressions
        query = sa.select(s.c.customer_id, s.c.channel, s.c.address, s.c.reason, s.c.source, s.c.created_at)
        if channel is not None:
            query = query.where(s.c.channel == channel)
        with self._read() as conn:
            rows = conn.execute(query.order_by(s.c.id)).mappings().all()
        return _typed(
            pd.DataFrame([dict(r) for r in rows],
                         columns=["customer_id", "channel", "address", "reason", "source", "created_at"])
        )

    def add_suppression(
        self,
        customer_id: str,
        channel: str,
        address: str | None,
        reason: str,
        source: str | None = None,
        *,
        now: Any | None = None,
    ) -> bool:
        """Suppress a customer on a channel (idempotent: the first suppression stays); True if it was new."""
        with self._write() as conn:
            return self._add_suppression(conn, customer_id, channel, address, reason, source, self._when(now))

    def _add_suppression(self, conn, customer_id, channel, address, reason, source, when) -> bool:
        from winback.vocab import SUPPRESSION_REASONS

        if reason not in SUPPRESSION_REASONS:
            raise DataError(f"suppression reason {reason!r} is not one of {SUPPRESSION_REASONS}")
        if not customer_id or not channel:
            raise DataError("a suppression needs a customer_id and a channel")
        s = schema.suppressions
        stmt = self._insert(s).on_conflict_do_nothing(index_elements=["customer_id", "channel"]).returning(s.c.id)
        result = conn.execute(
            stmt,
            {"customer_id": str(customer_id), "channel": channel, "address": address, "reason": reason,
             "source": source, "created_at": when},
        )
        return result.first() is not None

    def record_event(
        self,
        provider: str,
        provider_event_id: str,
        event: str,
        *,
        occurred_at: Any | None = None,
        campaign_id: str | None = None,
        customer_id: str | None = None,
        step: int | None = None,
        channel: str | None = None,
        provider_message_id: str | None = None,
        address: str | None = None,
        payload: Any | None = None,
        now: Any | None = None,
    ) -> bool:
        """Store a provider's delivery event once (dedup by its event id), update the row, suppress; True if new.

        The ledger row is found by our key (`campaign_id`, `customer_id`, `step`; without a step the
        latest step of that campaign and channel) or else by `provider_message_id`. Events that are not
        delivery statuses (processed, deferred…) are stored but change nothing.
        """
        when = self._when(now)
        occurred = _utc(occurred_at) if occurred_at is not None else when
        t = schema.ledger
        text = payload if isinstance(payload, str) or payload is None else json.dumps(payload, default=str)
        try:
            with self._write() as conn:
                row = self._match_event_row(conn, campaign_id, customer_id, step, channel, provider_message_id)
                if row is not None:
                    campaign_id, customer_id, step = row["campaign_id"], row["customer_id"], row["step"]
                    channel = channel or row["channel"]
                    address = address or row["to_address"]
                    provider_message_id = provider_message_id or row["provider_message_id"]
                e = schema.events
                stmt = self._insert(e).on_conflict_do_nothing(
                    index_elements=["provider", "provider_event_id"]
                ).returning(e.c.id)
                result = conn.execute(
                    stmt,
                    {"provider": provider, "provider_event_id": str(provider_event_id), "campaign_id": campaign_id,
                     "customer_id": customer_id, "step": step, "channel": channel,
                     "provider_message_id": provider_message_id, "event": event, "occurred_at": occurred,
                     "received_at": when, "payload": text},
                )
                if result.first() is None:
                    return False  # a replay of an event already stored
                if row is not None and event in _STATUS_RANK:
                    current = row["delivery_status"]
                    if current is None or _STATUS_RANK.get(current, -1) <= _STATUS_RANK[event]:
                        conn.execute(sa.update(t).where(t.c.id == row["id"]).values(delivery_status=event,
                                                                                    updated_at=when))
                if event in SUPPRESSING_EVENTS and customer_id and channel:
                    self._add_suppression(conn, customer_id, channel, address, SUPPRESSING_EVENTS[event],
                                          provider, when)
                return True
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot record a {provider} event: {_short(exc)}") from None

    def _match_event_row(self, conn, campaign_id, customer_id, step, channel, provider_message_id):
        t = schema.ledger
        cols = [t.c.id, t.c.campaign_id, t.c.customer_id, t.c.step, t.c.channel, t.c.to_address,
                t.c.provider_message_id, t.c.delivery_status]
        if campaign_id and customer_id:
            query = sa.select(*cols).where(t.c.campaign_id == str(campaign_id), t.c.customer_id == str(customer_id))
            if step is not None:
                query = query.where(t.c.step == int(step))
            elif channel is not None:
                query = query.where(t.c.channel == channel)
            row = conn.execute(query.order_by(t.c.step.desc()).limit(1)).mappings().first()
            if row is not None:
                return row
        if provider_message_id:
            query = sa.select(*cols).where(t.c.provider_message_id == str(provider_message_id))
            return conn.execute(query.order_by(t.c.id.desc()).limit(1)).mappings().first()
        return None

    def find_row(
        self, campaign_id: str, customer_id: str, *, step: int | None = None, channel: str | None = None
    ) -> dict[str, Any] | None:
        """One ledger row by key (without a step: the latest step, optionally of a channel), or None."""
        t = schema.ledger
        query = sa.select(t).where(t.c.campaign_id == str(campaign_id), t.c.customer_id == str(customer_id))
        if step is not None:
            query = query.where(t.c.step == int(step))
        if channel is not None:
            query = query.where(t.c.channel == channel)
        with self._read() as conn:
            row = conn.execute(query.order_by(t.c.step.desc()).limit(1)).mappings().first()
        return dict(row) if row is not None else None

    def ping(self) -> None:
        """Check that the database answers (raises LedgerError otherwise)."""
        try:
            with self._read() as conn:
                conn.execute(sa.select(sa.literal(1)))
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"the ledger does not answer: {_short(exc)}") from None

    def events(self, campaign_id: str | None = None) -> pd.DataFrame:
        """Stored delivery events (optionally of one campaign), oldest first."""
        e = schema.events
        query = sa.select(e).order_by(e.c.id)
        if campaign_id is not None:
            query = query.where(e.c.campaign_id == campaign_id)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return _typed(pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in e.columns]))

    # -- offer results (the learner's memory) -----------------------------------------------------

    def save_offer_results(self, frame: pd.DataFrame, *, now: Any | None = None) -> int:
        """Upsert measured results per (campaign_id, offer_kind, value_tier); return rows written."""
        needed = ["campaign_id", "offer_kind", "value_tier", "n_treated", "returned_treated", "n_holdout",
                  "returned_holdout"]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"offer results lack column(s) {missing}")
        default_when = self._when(now)
        rows = []
        for i, rec in enumerate(frame.to_dict("records"), start=1):
            try:
                row = {c: str(rec[c]) for c in needed[:3]}
                row.update({c: int(rec[c]) for c in needed[3:]})
            except (TypeError, ValueError):
                raise DataError("counts must be integers and keys present", row=i) from None
            measured = rec.get("measured_at")
            row["measured_at"] = default_when if measured is None or pd.isna(measured) else _utc(measured)
            rows.append(row)
        if not rows:
            return 0
        o = schema.offer_results
        stmt = self._insert(o)
        stmt = stmt.on_conflict_do_update(
            index_elements=["campaign_id", "offer_kind", "value_tier"],
            set_={c: stmt.excluded[c] for c in needed[3:] + ["measured_at"]},
        )
        with self._write() as conn:
            conn.execute(stmt, rows)
        return len(rows)

    def offer_results(self) -> pd.DataFrame:
        """Every stored offer result, ordered by campaign, offer kind and value tier."""
        o = schema.offer_results
        with self._read() as conn:
            rows = conn.execute(sa.select(o).order_by(o.c.campaign_id, o.c.offer_kind, o.c.value_tier)).mappings()
            frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in o.columns])
        for col in ("n_treated", "returned_treated", "n_holdout", "returned_holdout"):
            frame[col] = frame[col].astype("int64")
        return _typed(frame)


# -- module helpers ---------------------------------------------------------------------------------


def _state_in(states: Sequence[str]) -> sa.ColumnElement[bool]:
    """`state IN (…)` written as ORs of bound values: expanding IN parameters are not allowed in executemany."""
    bad = [s for s in states if s not in LEDGER_STATES]
    if bad:
        raise DataError(f"unknown ledger state(s) {bad}")
    return sa.or_(*(schema.ledger.c.state == s for s in states))


def _create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise LedgerError(f"not a database URL: {url!r}", hint="e.g. sqlite:///ledger.db or "
                          "postgresql+psycopg://user@host/db") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(f"unsupported ledger database {parsed.get_backend_name()!r}",
                          hint="use sqlite:///path.db or postgresql+psycopg://user@host/db")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = os.path.dirname(os.path.abspath(database))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"cannot create the ledger folder {parent}: {exc.strerror}") from None
        if not database or database == ":memory:":
            # One shared connection, otherwise every pooled connection would see its own empty database.
            return sa.create_engine(url, poolclass=sa.pool.StaticPool,
                                    connect_args={"check_same_thread": False})
        return sa.create_engine(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise LedgerError(f"cannot use the ledger URL {parsed.render_as_string(hide_password=True)}: {exc}") from None


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL, busy timeout, foreign keys, and explicit BEGIN / BEGIN IMMEDIATE (the pysqlite recipe)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's implicit BEGIN is deferred and
        # would be skipped before SELECTs, which breaks the isolation we rely on).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        _enable_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        # 64 MiB page cache (default 2 MiB): the key index of a million-row plan stays in memory,
        # which keeps ON CONFLICT lookups of a re-plan from thrashing.
        cur.execute("PRAGMA cache_size=-65536")
        # FULL: a `sent` record must survive power loss too, or a resume would send again.
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("winback_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enable_wal(cur) -> None:
    """Switch to WAL; the switch bypasses the busy handler, so retry while another opener holds a lock."""
    import sqlite3
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
            if mode in ("wal", "memory"):
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _plan_rows(frame: pd.DataFrame, dialect: str, when: datetime) -> tuple[list[str], list[tuple]]:
    """Validate a plan frame and turn its treatment/holdout rows into insert parameters (vectorised)."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"plan must be a DataFrame, got {type(frame).__name__}")
    missing = [c for c in (*schema.KEY_COLUMNS, "arm") if c not in frame.columns]
    if missing:
        raise DataError(f"plan lacks column(s) {missing}", hint="see docs/CONTRACTS.md, the plan frame")
    arms = frame["arm"].astype("object")
    unknown = ~arms.isin(["treatment", "holdout", "excluded"])
    if unknown.any():
        first = int(unknown.to_numpy().nonzero()[0][0])
        raise DataError(f"unknown arm {arms.iloc[first]!r}", row=first + 1, column="arm")
    keep = arms.isin(["treatment", "holdout"]).to_numpy()
    positions = keep.nonzero()[0]  # to name rows by their position in the caller's frame
    plan = frame.loc[keep]
    if plan.empty:
        return [], []
    cols = [c for c in schema.PLAN_COLUMNS if c in plan.columns]
    data = pd.DataFrame(index=plan.index)
    for col in cols:
        series = plan[col]
        if isinstance(schema.PLAN_COLUMNS[col], schema.UTCDateTime):
            series = _utc_series(series, col)
            if dialect == "sqlite":
                # Vectorised formatting in C (Series.dt.strftime is ~20x slower on a million rows).
                text = np.datetime_as_string(series.dt.tz_localize(None).to_numpy("datetime64[us]"), unit="us")
                data[col] = pd.Series(text, index=plan.index, dtype=object)
            else:
                data[col] = series.astype(object)
            data.loc[series.isna().to_numpy(), col] = None
        elif col == "step":
            if series.isna().any():
                raise DataError("step is missing", row=_first_row(positions, series.isna()), column="step")
            try:
                data[col] = series.astype("int64").astype(object)
            except (TypeError, ValueError):
                raise DataError("step must be an integer", column="step") from None
        elif col == "context":
            data[col] = series.map(lambda v: v if v is None or isinstance(v, str) or _isna(v)
                                   else json.dumps(v, ensure_ascii=False, default=str)).astype(object)
        elif isinstance(schema.PLAN_COLUMNS[col], sa.Float):
            data[col] = pd.to_numeric(series, errors="coerce").astype(object)
        else:
            data[col] = series.astype(object)
        data[col] = data[col].where(pd.notna(data[col]), None)
    for col in ("campaign_id", "customer_id"):
        bad = data[col].isna()
        if bad.any():
            raise DataError(f"{col} is missing", row=_first_row(positions, bad), column=col)
        data[col] = data[col].map(str)
    treatment = (plan["arm"].astype("object") == "treatment").to_numpy()
    if "send_at_utc" not in data.columns:
        raise DataError("plan lacks column 'send_at_utc' (needed to know when a treatment row is due)")
    no_time = data["send_at_utc"].isna().to_numpy() & treatment
    if no_time.any():
        raise DataError("a treatment row has no send_at_utc", row=_first_row(positions, no_time), column="send_at_utc")
    dup = data.duplicated(list(schema.KEY_COLUMNS))
    if dup.any():
        raise DataError("duplicate (campaign_id, customer_id, step) in the plan",
                        row=_first_row(positions, dup), column="customer_id")
    stamp = when.strftime(schema.SQLITE_TS_FORMAT) if dialect == "sqlite" else when
    data["state"] = ["planned" if t else "held_out" for t in treatment]
    data["attempts"] = 0
    data["planned_at"] = stamp
    data["updated_at"] = stamp
    columns = list(data.columns)
    # Column-wise tolist() yields native Python values fast (to_dict boxes value by value).
    return columns, list(zip(*(data[c].tolist() for c in columns), strict=True))


def _utc_series(series: pd.Series, col: str) -> pd.Series:
    try:
        out = pd.to_datetime(series, utc=True)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read timestamps: {exc}", column=col) from None
    return out


def _first_row(positions, mask) -> int:
    """1-based position in the caller's plan frame of the first kept row where `mask` holds."""
    return int(positions[np.asarray(mask).nonzero()[0][0]]) + 1


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as datetime64[ns, UTC]; integer columns as int64 where complete."""
    for col in frame.columns:
        if col in schema.TIMESTAMP_COLUMNS or col in ("created_at", "occurred_at", "received_at", "measured_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[ns, UTC]")
    for col in ("step", "attempts", "id"):
        if col in frame.columns and not frame[col].isna().any():
            frame[col] = frame[col].astype("int64")
    return frame


def _short(exc: BaseException) -> str:
    """A one-line database error without the SQL statement or parameters (they may hold addresses)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0] if text else ''}"
