"""Readers for every kind of source: CSV (any encoding), Parquet, DuckDB databases and SQLAlchemy URLs.

Each reader returns the table as it is (text columns as strings, never type-guessed: `007` stays
`007`) plus a label for reports; passwords in URLs are hidden in labels and errors.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pandas as pd

from winback.errors import ConfigError, DataError


@dataclass(frozen=True)
class RawTable:
    """A table read from a source, before validation."""

    frame: pd.DataFrame
    label: str  # file path or URL (password hidden), used in quarantine rows and errors


def read_source(source: str | Path | pd.DataFrame, *, encoding: str = "utf-8-sig", name: str = "table") -> RawTable:
    """Read a CSV/Parquet path, a `duckdb:///file?table=T|query=…` or a SQLAlchemy URL with `table=`/`query=`.

    A DataFrame is passed through (labelled `name`), so callers holding frames validate the same way.
    """
    if isinstance(source, pd.DataFrame):
        return RawTable(source, f"<{name} frame>")
    text = str(source)
    if text.startswith("duckdb:"):
        return read_duckdb(text)
    if "://" in text:
        return read_sql(text)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        return RawTable(read_csv(path, encoding=encoding), str(path))
    if suffix in (".parquet", ".pq"):
        return RawTable(read_parquet(path), str(path))
    raise ConfigError(
        f"unsupported source {suffix or '(no extension)'!r}",
        path=text,
        hint="use a .csv or .parquet file, duckdb:///file.duckdb?table=T, or a SQLAlchemy URL with ?table=T",
    )


def _sniff_delimiter(header: str) -> str:
    # Excel in many locales writes ';'; some exports use tabs or pipes. Pick the most frequent.
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(path: Path, *, encoding: str = "utf-8-sig") -> pd.DataFrame:
    """Read a CSV with every column as text; a decoding failure names the file, line and byte."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not path.exists():
        raise DataError("file not found", file=str(path))
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}", field="--encoding", hint="e.g. utf-8, gb18030") from None
    try:
        with path.open(encoding=encoding, newline="") as handle:
            first = handle.readline()
            header = next(csv.reader([first], delimiter=_sniff_delimiter(first)), [])
        delimiter = _sniff_delimiter(first)
        arrow_encoding = "utf8" if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig") else encoding
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding=arrow_encoding, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                # Text for every column, under the name with and without a BOM (Arrow drops it).
                column_types={n: pa.string() for name in header for n in (name, name.lstrip("\ufeff"))},
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=True,
            ),
        )
    except (UnicodeDecodeError, pa.ArrowInvalid) as exc:
        located = _locate_decode_error(path, encoding)
        if located is None and "columns, got" in str(exc):
            located = _locate_ragged_row(path, encoding, delimiter)
        if located:
            raise located from None
        raise DataError(f"cannot read as CSV: {_first_line(exc)}", file=str(path)) from None
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read as CSV: {_first_line(exc)}", file=str(path)) from None
    if table.num_columns == 0 or not header:
        raise DataError("the file is empty (no header row)", file=str(path))
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype(na_value=float("nan"))}.get)


def _locate_decode_error(path: Path, encoding: str) -> DataError | None:
    """Find the first undecodable byte with an incremental decoder (only run after a failure)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    newlines = 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(1 << 22)
            final = not chunk
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                position = offset - pending + exc.start
                line = newlines + exc.object[: exc.start].count(b"\n") + 1
                bad = exc.object[exc.start : exc.end].hex(" ")
                return DataError(
                    f"cannot decode as {encoding} at line {line}, "
                    f"byte {position} (0x{bad})",
                    file=str(path),
                    row=max(line - 1, 1),
                    hint="exports from Chinese retail systems are often GBK: pass --encoding gb18030",
                )
            if final:
                return None
            newlines += chunk.count(b"\n")
            offset += len(chunk)


def _locate_ragged_row(path: Path, encoding: str, delimiter: str) -> DataError | None:
    """The first row whose number of fields differs from the header's, by its line (only run after a failure).

    Arrow's parse error quotes the row but not where it is; a row with a stray delimiter in an address
    is easy to fix once its line is known.
    """
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, [])
        line = reader.line_num
        for row in reader:
            if row and len(row) != len(header):
                start = line + 1  # a quoted field may span lines: the row starts after the previous one
                return DataError(
                    f"line {start} has {len(row)} fields, the header has {len(header)} "
                    f"(an unquoted {delimiter!r} inside a value?)",
                    file=str(path), row=start - 1,
                    hint="quote values that contain the delimiter, or fix the row",
                )
            line = reader.line_num
    return None


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a Parquet file; errors name the file."""
    if not path.exists():
        raise DataError("file not found", file=str(path))
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read as Parquet: {_first_line(exc)}", file=str(path)) from None
    except Exception as exc:  # pyarrow raises its own ArrowException family for corrupt files
        if type(exc).__module__.startswith("pyarrow"):
            raise DataError(f"cannot read as Parquet: {_first_line(exc)}", file=str(path)) from None
        raise


def _split_params(url: str) -> tuple[str, dict[str, str]]:
    """Separate `table=` / `query=` from a URL, keeping every other parameter exactly as written.

    `query=` takes the rest of the URL (SQL may contain `&`); it is percent-decoded but `+` is kept,
    so `query=SELECT a+1 …` means what it says.
    """
    base, sep, params = url.partition("?")
    if not sep:
        return url, {}
    found: dict[str, str] = {}
    kept: list[str] = []
    query_at = params.find("query=")
    if query_at == 0 or (query_at > 0 and params[query_at - 1] == "&"):
        found["query"] = unquote(params[query_at + len("query="):])
        params = params[: max(query_at - 1, 0)]
    for part in params.split("&") if params else []:
        key, _, value = part.partition("=")
        if key == "table":
            found["table"] = unquote(value)
        elif part:
            kept.append(part)
    return base + ("?" + "&".join(kept) if kept else ""), found


def _statement(params: dict[str, str], label: str, quote) -> str:
    if "query" in params and "table" in params:
        raise ConfigError("give either table= or query=, not both", path=label)
    if params.get("query", "").strip():
        return params["query"]
    table = params.get("table", "").strip()
    if not table:
        raise ConfigError("the URL needs ?table=NAME or ?query=SELECT…", path=label)
    return "SELECT * FROM " + ".".join(quote(part) for part in table.split("."))


def _duckdb_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_duckdb(url: str) -> RawTable:
    """Read `duckdb:///relative.duckdb?table=T` or `duckdb:////absolute.duckdb?query=…`, read-only."""
    import duckdb

    base, params = _split_params(url)
    if not base.startswith("duckdb:///"):
        raise ConfigError("a DuckDB source looks like duckdb:///path/to/file.duckdb?table=T", path=url)
    path = Path(unquote(base[len("duckdb:///"):])).expanduser()
    label = url
    statement = _statement(params, label, _duckdb_quote)
    if not path.exists():
        raise DataError(
            f"DuckDB file not found: {path}",
            file=label,
            hint="duckdb:///relative/path or duckdb:////absolute/path (four slashes), as in SQLAlchemy URLs",
        )
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            relation = conn.sql(statement)
            if relation is None:  # a statement without a result (only possible for a query=)
                raise DataError("the query returns no rows or columns", file=label)
            table = relation.to_arrow_table()
    except duckdb.Error as exc:
        raise DataError(f"DuckDB: {_first_line(exc)}", file=label) from None
    return RawTable(_arrow_to_pandas(table), label)


def _arrow_to_pandas(table) -> pd.DataFrame:
    # DECIMAL money would arrive as Python Decimal objects; float64 is the contract's money type.
    import pyarrow as pa

    for i, column in enumerate(table.schema):
        if pa.types.is_decimal(column.type):
            table = table.set_column(i, column.name, table.column(i).cast(pa.float64()))
    return table.to_pandas()


def read_sql(url: str) -> RawTable:
    """Read a table or query through any SQLAlchemy URL (`postgresql+psycopg://…?table=T`); never writes."""
    import sqlalchemy as sa

    base, params = _split_params(url)
    try:
        parsed = sa.engine.make_url(base)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"not a database URL: {_first_line(exc)}", path=_hide_password(url)) from None
    label = parsed.render_as_string(hide_password=True)
    label_with_params = label + "".join(
        f"{'&' if '?' in label or i else '?'}{k}={v}" for i, (k, v) in enumerate(params.items())
    )
    try:
        engine = sa.create_engine(parsed)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"cannot use this database URL: {_first_line(exc)}", path=label) from None
    statement = _statement(params, label_with_params, engine.dialect.identifier_preparer.quote)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(sa.text(statement), conn, coerce_float=True)
            conn.rollback()  # read-only by construction: nothing is ever committed
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        # pandas wraps the SQLAlchemy error, which wraps the driver's: report the driver's first line.
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        raise DataError(f"database: {_first_line(root)}", file=label_with_params) from None
    finally:
        engine.dispose()
    return RawTable(frame, label_with_params)


def _hide_password(url: str) -> str:
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
