"""Reader for the raw CDNOW transaction logs (`CDNOW_master.txt`, `CDNOW_sample.txt`).

Whitespace-separated columns without a header: master customer id, sample id (the 1/10 sample
only), date YYYYMMDD, number of CDs, dollar value. Used by `winback fit-bgnbd` and the tests that
reproduce the published BG/NBD and Gamma-Gamma estimates.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from winback.errors import DataError


def read_cdnow(path: str | Path, *, timezone: str = "UTC") -> pd.DataFrame:
    """Read a CDNOW .txt log into orders (`order_id`, `customer_id`, `ordered_at` UTC, `amount`, `quantity`,
    and `sample_id` for the 1/10 sample).

    Dates are calendar days; they are placed at midnight in `timezone` so that day-level grouping in
    the same timezone gives back exactly the dates of the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    try:
        raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, engine="python")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read as a CDNOW log: {exc}", file=str(path)) from None
    if raw.shape[1] == 5:  # the 1/10 sample: master id, sample id, date, CDs, dollars
        raw.columns = ["master_id", "sample_id", "date", "quantity", "amount"]
    elif raw.shape[1] == 4:  # the master file: id, date, CDs, dollars
        raw.columns = ["master_id", "date", "quantity", "amount"]
    else:
        raise DataError(f"expected 4 or 5 whitespace-separated columns, found {raw.shape[1]}", file=str(path))
    dates = pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce")
    amount = pd.to_numeric(raw["amount"], errors="coerce")
    bad = dates.isna() | amount.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0]) + 1
        column = "date" if dates.isna().iloc[row - 1] else "amount"
        raise DataError(f"cannot read {raw[column].iloc[row - 1]!r}", file=str(path), row=row, column=column)
    frame = pd.DataFrame({
        "order_id": [f"{i + 1}" for i in range(len(raw))],
        "customer_id": raw["master_id"].str.lstrip("0").replace("", "0").to_numpy(),
        "ordered_at": dates.dt.tz_localize(timezone).dt.tz_convert("UTC").to_numpy(),
        "amount": amount.astype(float).to_numpy(),
        "quantity": pd.to_numeric(raw["quantity"], errors="coerce").to_numpy(),
    })
    if "sample_id" in raw.columns:  # the id used by the published summaries of the 1/10 sample
        frame["sample_id"] = raw["sample_id"].astype(int).to_numpy()
    return frame
