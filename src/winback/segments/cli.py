"""`winback segment` and `winback fit-bgnbd`: thin wrappers over `winback.segments`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from winback.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the segmentation commands to the winback app."""

    @app.command("segment")
    def segment(
        customers: str = typer.Option(..., "--customers", help="customers: CSV, Parquet, duckdb:/// or SQLAlchemy URL"),
        orders: str = typer.Option(..., "--orders", help="orders: CSV, Parquet, duckdb:/// or SQLAlchemy URL"),
        out: Path = typer.Option(..., "--out", help="output table, .csv or .parquet"),
        complaints: str | None = typer.Option(None, "--complaints", help="optional complaints source"),
        as_of: str | None = typer.Option(None, "--as-of", help="date or timestamp (default: now)"),
        departed_managers: str | None = typer.Option(
            None, "--departed-managers",
            help="account managers who left, each `name` or `name,YYYY-MM-DD` (the day they left): "
                 "comma-separated, or a file with one per line",
        ),
        encoding: str = typer.Option("utf-8-sig", "--encoding", help="CSV encoding, e.g. gb18030"),
        strict: bool = typer.Option(False, "--strict", help="fail on the first bad row instead of quarantining"),
        quarantine: Path | None = typer.Option(None, "--quarantine", help="write quarantined rows here"),
    ) -> None:
        """Segment customers: rhythm, P(alive), CLV, value tier, lapse stage and likely reason per customer."""
        from rich.console import Console

        from winback.config import parse_timestamp, utc_now
        from winback.segments.core import segment_customers
        from winback.segments.summary import render_segment_summary
        from winback.sources import load_inputs, render_validation_summary
        from winback.sources.files import table_format, write_table

        table_format(out)  # reject an unsupported output extension before any work
        when = parse_timestamp(as_of) if as_of else utc_now()
        managers = _departed_managers(departed_managers)
        inputs = load_inputs(
            customers, orders, complaints, encoding=encoding, strict=strict,
            quarantine_path=quarantine, departed_managers=managers,
        )
        segments = segment_customers(
            inputs.customers, inputs.orders, inputs.complaints, as_of=when,
            departed_managers=inputs.departed_managers or managers,
        )
        write_table(segments, out)
        console = Console()
        console.print(render_validation_summary(inputs))
        console.print(render_segment_summary(segments, title=f"Customers by lapse stage × value tier, as of {when:%Y-%m-%d %H:%M} UTC"))
        console.print(f"Wrote {len(segments):,} customers to {out}"
                      + (f"; quarantine in {quarantine}" if quarantine else ""), highlight=False)

    @app.command("fit-bgnbd")
    def fit_bgnbd_command(
        orders: str = typer.Option(..., "--orders", help="orders (customer_id, ordered_at, amount) or a CDNOW .txt log"),
        until: str | None = typer.Option(None, "--until", help="end of the calibration period (default: last order)"),
        unit: str = typer.Option("day", "--unit", help="time unit of t_x, T and alpha: day or week"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
        encoding: str = typer.Option("utf-8-sig", "--encoding", help="CSV encoding"),
        timezone: str = typer.Option("UTC", "--timezone", help="time zone of calendar days (same-day orders = one transaction)"),
    ) -> None:
        """Fit the BG/NBD model on an orders file and print r, alpha, a, b, the log-likelihood and the customer count."""
        if unit not in ("day", "week"):
            raise ConfigError(f"unknown unit {unit!r}; use day or week", field="--unit")
        from winback.config import parse_timestamp
        from winback.segments.models import fit_bgnbd, rfm_summary

        frame = _read_fit_orders(orders, encoding=encoding, timezone=timezone)
        end = parse_timestamp(until, option="--until", tz=timezone) if until else None
        summary = rfm_summary(frame, until=end, unit=unit, timezone=timezone)
        params = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"], unit=unit)
        result = params.to_dict()
        if as_json:
            typer.echo(json.dumps(result))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"BG/NBD fit, time in {unit}s", title_justify="left", caption=orders)
        table.add_column("parameter")
        table.add_column("estimate", justify="right")
        for name in ("r", "alpha", "a", "b"):
            table.add_row(name, f"{result[name]:.4f}")
        table.add_row("log-likelihood", f"{result['log_likelihood']:.2f}")
        table.add_row("customers", f"{result['n_customers']:,}")
        Console().print(table)


def _departed_managers(value: str | None) -> tuple[str, ...]:
    """Entries from `--departed-managers`: a file (one `name` or `name,YYYY-MM-DD` per line, `#` comments)
    or comma-separated names, each optionally followed by its date (`王芳,2025-08-20,李雷`)."""
    from winback.sources.validate import departed_entries

    if not value:
        return ()
    path = Path(value)
    if not path.is_file():
        return departed_entries(value)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read departed managers: {exc}", path=str(path)) from None
    return departed_entries(line for line in lines if not line.lstrip().startswith("#"))


def _read_fit_orders(source: str, *, encoding: str, timezone: str):
    """Orders for fit-bgnbd: a CDNOW .txt log, or a table with customer_id, ordered_at and amount."""
    import pandas as pd

    from winback.errors import DataError
    from winback.segments.cdnow import read_cdnow
    from winback.sources.files import read_table

    if source.lower().endswith(".txt"):
        return read_cdnow(source, timezone=timezone)
    raw = read_table(source, encoding=encoding)
    raw = raw.set_axis([str(c).strip().lower() for c in raw.columns], axis=1)
    for column in ("customer_id", "ordered_at", "amount"):
        if column not in raw.columns:
            raise DataError("missing required column", file=source, column=column)
    ordered_at = pd.to_datetime(raw["ordered_at"], errors="coerce", format="mixed")
    if not isinstance(ordered_at.dtype, pd.DatetimeTZDtype) and ordered_at.dtype == object:
        ordered_at = pd.to_datetime(raw["ordered_at"], errors="coerce", format="mixed", utc=True)  # mixed offsets
    amount = pd.to_numeric(raw["amount"], errors="coerce")
    for column, values in (("ordered_at", ordered_at), ("amount", amount)):
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(bad.nonzero()[0][0]) + 1
            raise DataError(f"cannot read {raw[column].iloc[row - 1]!r}", file=source, row=row, column=column)
    if ordered_at.dt.tz is None:
        ordered_at = ordered_at.dt.tz_localize(timezone)
    return pd.DataFrame({
        "customer_id": raw["customer_id"].astype("str").to_numpy(),
        "ordered_at": ordered_at.dt.tz_convert("UTC"),
        "amount": amount.astype(float).to_numpy(),
    })
