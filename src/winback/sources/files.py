"""Read and write tables by file extension: `.csv` or `.parquet` (CSV copies for spreadsheets)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from winback.errors import ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def table_format(path: str | Path) -> str:
    """`csv` or `parquet` from the path's extension; a ConfigError names anything else."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ConfigError(f"unsupported file type {suffix or '(none)'!r}; use .csv or .parquet", path=str(path))


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` as CSV (UTF-8 with BOM so Excel shows Chinese correctly) or Parquet by extension."""
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False, encoding="utf-8-sig")
    else:
        frame.to_parquet(path, index=False)
    return path


def read_table(path: str | Path, *, encoding: str = "utf-8-sig") -> pd.DataFrame:
    """Read a CSV or Parquet table as it is (no validation); errors name the file."""
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    try:
        if fmt == "csv":
            return pd.read_csv(path, encoding=encoding, dtype=str, keep_default_na=False, na_values=[""])
        return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot decode as {encoding} at byte {exc.start}",
            file=str(path),
            hint="pass --encoding gb18030 for GBK/GB18030 exports",
        ) from None
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read: {exc}", file=str(path)) from None
