"""Replay protection for signed webhooks: a signed token is accepted once within its validity window.

A provider's signature proves who made a request, not that it is new: a captured Mailgun webhook
stays valid for the whole signature window (Mailgun signs only `timestamp + token`, not the event
data, so a replay may even carry altered data). Mailgun's guidance for securing webhooks is to cache
each token and refuse a later request with the same one; SendGrid's signed timestamp plays the same
part. Tokens live in the ledger's `webhook_tokens` table until the signature they came with would be
stale anyway (`expires_at`); expired rows are deleted as new tokens arrive.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import sqlalchemy as sa

from winback.errors import LedgerError
from winback.ledger import schema

_TOKEN_MAX = 255  # the column's width


def remember_token(ledger: Any, provider: str, token: str, expires_at: Any, now: Any) -> bool:
    """Store `(provider, token)` until `expires_at`; True the first time, False for a token already seen.

    One transaction on the ledger's engine: expired tokens are deleted, then an INSERT … ON CONFLICT
    DO NOTHING decides — so two concurrent deliveries of one token cannot both be first.
    """
    table = schema.webhook_tokens
    row = {"provider": provider, "token": _fit(token), "expires_at": _utc(expires_at)}
    insert = (ledger._insert(table).values(**row)
              .on_conflict_do_nothing(index_elements=["provider", "token"]).returning(table.c.token))
    try:
        with ledger.engine.connect() as conn, conn.begin():
            conn.execute(sa.delete(table).where(table.c.expires_at < _utc(now)))
            return conn.execute(insert).first() is not None
    except sa.exc.SQLAlchemyError as exc:
        raise LedgerError(f"cannot record a webhook token: {type(exc).__name__}") from None


def forget_token(ledger: Any, provider: str, token: str) -> None:
    """Drop a remembered token, so that the provider's retry of a request we failed to process is accepted."""
    table = schema.webhook_tokens
    try:
        with ledger.engine.connect() as conn, conn.begin():
            conn.execute(sa.delete(table).where(table.c.provider == provider, table.c.token == _fit(token)))
    except sa.exc.SQLAlchemyError as exc:
        raise LedgerError(f"cannot forget a webhook token: {type(exc).__name__}") from None


def _fit(token: str) -> str:
    # Mailgun's tokens are 50 characters; anything longer is stored by its digest, still one per token.
    return token if len(token) <= _TOKEN_MAX else "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
