"""Ledger verbs of schema version 3: the decision trail, call outcomes, and the budget's committed cost.

Functions over a `Ledger` (same engine, clock and error handling), kept apart from ledger.py so that the
send protocol's module stays about sending:

- `record_decisions(ledger, frame)` stores one decision row per evaluated customer and step (also those
  outside the audience or excluded, who have no ledger row); `decisions(ledger, …)` reads them back for
  `winback explain`. A stored decision that put the customer in the experiment (treatment or holdout) is
  never replaced — the ledger row it explains is never replaced either; a decision that left them out is
  replaced by a later run's.
- `record_call_outcomes(ledger, frame)` stores what account managers report from their call lists (the
  latest outcome per task wins); `call_outcomes(ledger, …)` reads them.
- `committed_costs(conn, campaign_ids)` is the send-time gate's view of what a campaign has spent: the
  expected cost of its rows sent or being sent, read inside the claim's transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from winback.errors import DataError, LedgerError
from winback.ledger import schema

if TYPE_CHECKING:
    from winback.ledger.ledger import Ledger

CALL_OUTCOMES = schema.CALL_OUTCOMES
DECISION_COLUMNS = [c.name for c in schema.decisions.columns if c.name != "id"]
CALL_OUTCOME_COLUMNS = [c.name for c in schema.call_outcomes.columns if c.name != "id"]
COMMITTED_STATES = ("sent", "sending")
_ROWS_PER_STATEMENT = 2_000


def committed_costs(conn: sa.Connection, candidates: pd.DataFrame) -> dict[str, float]:
    """Per campaign of the claim's `candidates` that has a budget and a row with a cost, the expected cost
    of its rows `sent` or `sending` (what the budget has committed). Others are not summed (nothing to check)."""
    from winback.policy.gate import SendRules

    if candidates.empty or "expected_cost" not in candidates.columns:
        return {}
    costly = pd.to_numeric(candidates["expected_cost"], errors="coerce").fillna(0.0) > 0
    budgeted = candidates["send_rules"].map(lambda v: SendRules.parse(v if isinstance(v, str) else None).budget
                                            is not None)
    ids = sorted({str(c) for c in candidates.loc[costly & budgeted, "campaign_id"]})
    if not ids:
        return {}
    t = schema.ledger
    query = (sa.select(t.c.campaign_id, sa.func.coalesce(sa.func.sum(t.c.expected_cost), 0.0))
             .where(t.c.campaign_id.in_(ids), t.c.state.in_(COMMITTED_STATES), t.c.expected_cost > 0)
             .group_by(t.c.campaign_id))
    return {str(k): float(v) for k, v in conn.execute(query)}


def _py(value: Any) -> Any:
    """A value the database driver takes: NA → None, numpy scalars → Python."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    return value.item() if hasattr(value, "item") else value


def record_decisions(ledger: Ledger, frame: pd.DataFrame, *, now: Any | None = None) -> int:
    """Store decision rows (`winback.campaigns.decisions.decision_rows`); return the rows written.

    `decided_at` defaults to the ledger's clock. A customer's stored treatment/holdout decision for a
    step is kept; any other stored decision for that key is replaced.
    """
    if frame is None or len(frame) == 0:
        return 0
    missing = [c for c in ("campaign_id", "customer_id", "step", "in_audience") if c not in frame.columns]
    if missing:
        raise DataError(f"decision rows lack column(s) {missing}")
    when = ledger._when(now)
    data = frame.reindex(columns=DECISION_COLUMNS)
    data["decided_at"] = pd.to_datetime(data["decided_at"], utc=True).astype(object) \
        if data["decided_at"].notna().any() else None
    records = []
    for rec in data.to_dict("records"):
        row = {k: _py(v) for k, v in rec.items()}
        row["campaign_id"], row["customer_id"] = str(row["campaign_id"]), str(row["customer_id"])
        row["step"] = int(row["step"])
        row["in_audience"] = bool(row["in_audience"])
        row["decided_at"] = row["decided_at"] or when
        for name in ("decided_at", "as_of"):
            if row[name] is not None:
                row[name] = pd.Timestamp(row[name]).tz_convert("UTC").to_pydatetime() \
                    if pd.Timestamp(row[name]).tzinfo else pd.Timestamp(row[name]).tz_localize("UTC").to_pydatetime()
        records.append(row)
    d = schema.decisions
    stmt = ledger._insert(d)
    keep = [c for c in DECISION_COLUMNS if c not in ("campaign_id", "customer_id", "step")]
    stmt = stmt.on_conflict_do_update(
        index_elements=["campaign_id", "customer_id", "step"],
        set_={c: stmt.excluded[c] for c in keep},
        # The decision behind a ledger row stays with it (a re-run does not replace the row either).
        where=sa.or_(d.c.arm.is_(None), sa.and_(d.c.arm != "treatment", d.c.arm != "holdout")),
    )
    written = 0
    try:
        with ledger._write() as conn:
            for start in range(0, len(records), _ROWS_PER_STATEMENT):
                written += max(conn.execute(stmt, records[start:start + _ROWS_PER_STATEMENT]).rowcount, 0)
    except sa.exc.SQLAlchemyError as exc:
        raise LedgerError(f"cannot store decisions: {_short(exc)}") from None
    return written


def decisions(ledger: Ledger, campaign_id: str | None = None, customer_id: str | None = None) -> pd.DataFrame:
    """Stored decision rows (of a campaign, of a customer), by campaign, customer and step."""
    d = schema.decisions
    query = sa.select(*[d.c[c] for c in DECISION_COLUMNS])
    if campaign_id is not None:
        query = query.where(d.c.campaign_id == str(campaign_id))
    if customer_id is not None:
        query = query.where(d.c.customer_id == str(customer_id))
    return ledger._select(query.order_by(d.c.campaign_id, d.c.customer_id, d.c.step), columns=DECISION_COLUMNS)


def record_call_outcomes(ledger: Ledger, frame: pd.DataFrame, *, now: Any | None = None,
                         source: str | None = None) -> int:
    """Store call outcomes (campaign_id, customer_id, step, outcome, note, account_manager, called_at);
    the latest report per task replaces an earlier one. Outcomes outside CALL_OUTCOMES are a DataError."""
    if frame is None or len(frame) == 0:
        return 0
    missing = [c for c in ("campaign_id", "customer_id", "outcome") if c not in frame.columns]
    if missing:
        raise DataError(f"call outcomes lack column(s) {missing}")
    when = ledger._when(now)
    data = frame.reindex(columns=CALL_OUTCOME_COLUMNS)
    records = []
    for i, rec in enumerate(data.to_dict("records"), start=1):
        row = {k: _py(v) for k, v in rec.items()}
        if row["outcome"] not in CALL_OUTCOMES:
            raise DataError(f"unknown call outcome {row['outcome']!r} (one of {', '.join(CALL_OUTCOMES)})",
                            row=i, column="outcome")
        row["campaign_id"], row["customer_id"] = str(row["campaign_id"]), str(row["customer_id"])
        row["step"] = int(row["step"]) if row["step"] is not None else 1
        row["recorded_at"] = when
        row["source"] = row["source"] or source
        if row["called_at"] is not None:
            called = pd.Timestamp(row["called_at"])
            row["called_at"] = (called.tz_localize("UTC") if called.tzinfo is None else called.tz_convert("UTC")
                                ).to_pydatetime()
        records.append(row)
    c = schema.call_outcomes
    stmt = ledger._insert(c)
    stmt = stmt.on_conflict_do_update(
        index_elements=["campaign_id", "customer_id", "step"],
        set_={name: stmt.excluded[name] for name in CALL_OUTCOME_COLUMNS
              if name not in ("campaign_id", "customer_id", "step")})
    try:
        with ledger._write() as conn:
            conn.execute(stmt, records)
    except sa.exc.SQLAlchemyError as exc:
        raise LedgerError(f"cannot store call outcomes: {_short(exc)}") from None
    return len(records)


def call_outcomes(ledger: Ledger, campaign_id: str | None = None) -> pd.DataFrame:
    """Stored call outcomes (of a campaign), by campaign, customer and step."""
    c = schema.call_outcomes
    query = sa.select(*[c.c[name] for name in CALL_OUTCOME_COLUMNS])
    if campaign_id is not None:
        query = query.where(c.c.campaign_id == str(campaign_id))
    return ledger._select(query.order_by(c.c.campaign_id, c.c.customer_id, c.c.step),
                          columns=CALL_OUTCOME_COLUMNS)


def _short(exc: BaseException) -> str:
    from winback.ledger.ledger import _short as short

    return short(exc)


SUPPRESSION_COLUMNS = ["customer_id", "channel", "address", "reason", "source"]


def import_suppressions(ledger: Ledger, frame: pd.DataFrame, *, now: Any | None = None) -> int:
    """Add suppression rows (customer_id, channel, address, reason, source) in one transaction; a (customer,
    channel) already suppressed keeps its first entry. Returns the rows that were new."""
    from winback.vocab import SUPPRESSION_REASONS

    if frame is None or len(frame) == 0:
        return 0
    data = frame.reindex(columns=SUPPRESSION_COLUMNS)
    bad = ~data["reason"].isin(SUPPRESSION_REASONS)
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"suppression reason {data['reason'].iloc[first]!r} is not one of {SUPPRESSION_REASONS}",
                        row=first + 1, column="reason")
    if data["customer_id"].isna().any() or data["channel"].isna().any():
        raise DataError("a suppression needs a customer_id (or an address) and a channel")
    when = ledger._when(now)
    records = [{k: _py(v) for k, v in rec.items()} | {"created_at": when} for rec in data.to_dict("records")]
    s = schema.suppressions
    stmt = ledger._insert(s).on_conflict_do_nothing(index_elements=["customer_id", "channel"])
    try:
        with ledger._write() as conn:
            return sum(max(conn.execute(stmt, records[i:i + _ROWS_PER_STATEMENT]).rowcount, 0)
                       for i in range(0, len(records), _ROWS_PER_STATEMENT))
    except sa.exc.SQLAlchemyError as exc:
        raise LedgerError(f"cannot store suppressions: {_short(exc)}") from None
