"""The edge of the sources step: read the given sources, validate them, write the quarantine."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from winback.config import DEFAULT_TIMEZONE
from winback.sources.files import write_table
from winback.sources.readers import read_source
from winback.sources.validate import DEFAULT_LOCALE, QUARANTINE_COLUMNS, Inputs, validate_inputs

Source = str | Path | pd.DataFrame


def load_inputs(
    customers: Source,
    orders: Source,
    complaints: Source | None = None,
    *,
    encoding: str = "utf-8-sig",
    strict: bool = False,
    quarantine_path: str | Path | None = None,
    departed_managers: Iterable[str] | str | None = None,
    default_timezone: str = DEFAULT_TIMEZONE,
    default_locale: str = DEFAULT_LOCALE,
) -> Inputs:
    """Read and validate customers, orders and optional complaints; bad rows go to the quarantine.

    Each source is a CSV/Parquet path, `duckdb:///file.duckdb?table=T|query=…`, a SQLAlchemy URL
    with `table=`/`query=`, or a DataFrame. `strict=True` raises `DataError` on the first bad row
    instead. With `quarantine_path` (CSV or Parquet) the quarantine is written there (also when empty).
    """
    raw_customers = read_source(customers, encoding=encoding, name="customers")
    raw_orders = read_source(orders, encoding=encoding, name="orders")
    raw_complaints = read_source(complaints, encoding=encoding, name="complaints") if complaints is not None else None
    files = {"customers": raw_customers.label, "orders": raw_orders.label}
    if raw_complaints is not None:
        files["complaints"] = raw_complaints.label
    inputs = validate_inputs(
        raw_customers.frame,
        raw_orders.frame,
        raw_complaints.frame if raw_complaints is not None else None,
        files=files,
        strict=strict,
        default_timezone=default_timezone,
        default_locale=default_locale,
        departed_managers=departed_managers,
    )
    if quarantine_path is not None:
        write_quarantine(inputs.quarantine, quarantine_path)
    return inputs


def write_quarantine(quarantine: pd.DataFrame, path: str | Path) -> Path:
    """Write the quarantine (table, file, row, column, value, code, reason) as CSV or Parquet by extension."""
    columns = [c for c in QUARANTINE_COLUMNS if c in quarantine.columns]
    return write_table(quarantine[columns], path)
