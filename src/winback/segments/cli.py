"""`winback segment`, `winback fit` and `winback fit-bgnbd`: thin wrappers over `winback.segments`."""

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

    @app.command("fit")
    def fit_command(
        orders: str = _FIT_ORDERS,
        model: str = typer.Option(..., "--model", help="bgnbd, mbgnbd or pareto-nbd"),
        until: str | None = _FIT_UNTIL,
        holdout_until: str | None = _FIT_HOLDOUT_UNTIL,
        unit: str = _FIT_UNIT,
        as_json: bool = _FIT_JSON,
        encoding: str = _FIT_ENCODING,
        timezone: str = _FIT_TIMEZONE,
    ) -> None:
        """Fit a purchase model (BG/NBD, MBG/NBD or Pareto/NBD); with --holdout-until, check it against the holdout."""
        _fit(orders, model, until, holdout_until, unit, as_json, encoding, timezone)

    @app.command("fit-bgnbd")
    def fit_bgnbd_command(
        orders: str = _FIT_ORDERS,
        until: str | None = _FIT_UNTIL,
        holdout_until: str | None = _FIT_HOLDOUT_UNTIL,
        unit: str = _FIT_UNIT,
        as_json: bool = _FIT_JSON,
        encoding: str = _FIT_ENCODING,
        timezone: str = _FIT_TIMEZONE,
    ) -> None:
        """Fit the BG/NBD model (`winback fit --model bgnbd`): r, alpha, a, b, the log-likelihood and the customer count."""
        _fit(orders, "bgnbd", until, holdout_until, unit, as_json, encoding, timezone)


# The options `winback fit` and `winback fit-bgnbd` share.
_FIT_ORDERS = typer.Option(..., "--orders", help="orders (customer_id, ordered_at, amount) or a CDNOW .txt log")
_FIT_UNTIL = typer.Option(None, "--until", help="end of the calibration period (default: last order)")
_FIT_HOLDOUT_UNTIL = typer.Option(
    None, "--holdout-until", help="end of a holdout period after --until: actual vs predicted repeat transactions")
_FIT_UNIT = typer.Option("day", "--unit", help="time unit of t_x, T and the scale parameters: day or week")
_FIT_JSON = typer.Option(False, "--json", help="print JSON instead of tables")
_FIT_ENCODING = typer.Option("utf-8-sig", "--encoding", help="CSV encoding")
_FIT_TIMEZONE = typer.Option("UTC", "--timezone", help="time zone of calendar days (same-day orders = one transaction)")


def _fit(orders: str, model: str, until: str | None, holdout_until: str | None, unit: str, as_json: bool,
         encoding: str, timezone: str) -> None:
    """`winback fit`: read, summarise, fit, check against the holdout, print."""
    from winback.segments.model_check import MODEL_NAMES

    if model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {model!r}; use one of {', '.join(MODEL_NAMES)}", field="--model")
    if unit not in ("day", "week"):
        raise ConfigError(f"unknown unit {unit!r}; use day or week", field="--unit")
    if holdout_until and not until:
        raise ConfigError("a holdout check needs the end of the calibration period", field="--until",
                          hint="add --until DATE (the holdout runs from the day after it to --holdout-until)")
    from winback.config import parse_timestamp
    from winback.segments.model_check import check_holdout, fit_purchase_model
    from winback.segments.models import holdout_summary, rfm_summary

    frame = _read_fit_orders(orders, encoding=encoding, timezone=timezone)
    end = parse_timestamp(until, option="--until", tz=timezone) if until else None
    check = None
    if holdout_until:
        holdout_end = parse_timestamp(holdout_until, option="--holdout-until", tz=timezone)
        summary, horizon = holdout_summary(frame, until=end, holdout_until=holdout_end, unit=unit, timezone=timezone)
    else:
        summary = rfm_summary(frame, until=end, unit=unit, timezone=timezone)
    params = fit_purchase_model(model, summary["frequency"], summary["recency"], summary["T"], unit=unit)
    if holdout_until:
        check = check_holdout(params, summary["frequency"], summary["recency"], summary["T"],
                              summary["holdout_transactions"], horizon)
    aic = 2.0 * 4 - 2.0 * params.log_likelihood
    if as_json:
        result = {"model": model, **params.to_dict(), "aic": aic}
        if check is not None:
            result["holdout"] = {"from": str((end + _one_day()).date()), "until": str(holdout_end.date()),
                                 **{k: v for k, v in check.to_dict().items()
                                    if k not in ("model", "log_likelihood", "aic", "n_customers", "unit")}}
        typer.echo(json.dumps(result))
        return
    _print_fit(orders, params, aic, check, (end, holdout_end) if check is not None else None)


def _one_day():
    import pandas as pd

    return pd.Timedelta(days=1)


def _print_fit(source: str, params, aic: float, check, window) -> None:
    from rich.console import Console
    from rich.table import Table

    from winback.segments.model_check import MODEL_LABELS

    result = params.to_dict()
    names = [k for k in result if k not in ("log_likelihood", "n_customers", "unit")]
    table = Table(title=f"{MODEL_LABELS[params.model]} fit, time in {params.unit}s", title_justify="left",
                  caption=source)
    table.add_column("parameter")
    table.add_column("estimate", justify="right")
    for name in names:
        table.add_row(name, f"{result[name]:.4f}")
    table.add_row("log-likelihood", f"{result['log_likelihood']:.2f}")
    table.add_row("AIC", f"{aic:.2f}")
    table.add_row("customers", f"{result['n_customers']:,}")
    console = Console()
    console.print(table)
    if check is None:
        return
    start, end = window
    error = f"{check.error:+.1%}" if check.actual else "n/a"
    console.print(
        f"Holdout {(start + _one_day()):%Y-%m-%d} to {end:%Y-%m-%d} ({check.horizon:g} {params.unit}s): "
        f"repeat transactions actual {check.actual:,.0f}, predicted {check.predicted:,.1f} ({error}); "
        f"per customer: Poisson deviance {check.deviance:.4f}, MSE {check.mse:.4f}", highlight=False)
    by_x = Table(title="Holdout repeat transactions per customer, by calibration frequency (FHL 2005 fig. 4)",
                 title_justify="left")
    for column in ("x", "customers", "actual", "predicted"):
        by_x.add_column(column, justify="right")
    for row in check.by_frequency.itertuples(index=False):
        by_x.add_row(row.frequency, f"{row.customers:,}", f"{row.actual:.3f}", f"{row.predicted:.3f}")
    console.print(by_x)


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
    """Orders for `winback fit`: a CDNOW .txt log, or a table with customer_id, ordered_at and amount."""
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
