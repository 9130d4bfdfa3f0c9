"""One error tree for winback; library exceptions are translated where they enter."""

from __future__ import annotations


class WinbackError(Exception):
    """Base of every error winback reports to a user (printed as `Error: …` by the CLI)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(WinbackError):
    """A campaign file, provider config or option is wrong; names the file and the field path."""

    def __init__(
        self, message: str, *, path: str | None = None, field: str | None = None, hint: str | None = None
    ) -> None:
        self.path = path
        self.field = field
        self.reason = message
        prefix = ": ".join(p for p in (path, field) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message, hint=hint)


class DataError(WinbackError):
    """Input data is unusable; names the file, the row (1-based, header excluded) and the column."""

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.reason = reason
        where = [str(file)] if file else []
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason, hint=hint)


class ChannelError(WinbackError):
    """A provider refused or failed a send."""


class RetryableChannelError(ChannelError):
    """Worth trying again later (429, 5xx, timeouts, dropped connections)."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PermanentChannelError(ChannelError):
    """Will fail again if retried (bad address, unsubscribed recipient, rejected payload, bad key)."""


class LedgerError(WinbackError):
    """The ledger cannot be opened, migrated or updated."""
