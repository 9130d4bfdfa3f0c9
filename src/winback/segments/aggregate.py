"""Per-customer order aggregates, computed by DuckDB in one multithreaded GROUP BY over the orders.

The order level of segmentation (10M rows at 1M customers) is a single hash aggregation by
customer_id, run by DuckDB straight over Parquet files, an Arrow table or a pandas frame (scanned
zero-copy): DuckDB reads and groups on every core, where the previous numpy implementation read
the orders into pandas and hashed and sorted them on one (3-4× slower at 1M customers; its
figures are in bench/RESULTS.md).

Everything is an ordinary aggregate, so nothing needs the orders sorted:

- counts, sums, first/last order instant: `count`, `sum`, `min`, `max`;
- *transactions* (distinct calendar days, in `params.timezone`): `bitstring_agg(day, lo, hi)`, one
  bit per day of the data's range. The bitstrings come out as fixed-width binary rows, and numpy
  counts the set bits of all of them, and of the two trend windows, as 64-bit words
  (`np.bitwise_count`): DuckDB's `count(DISTINCT day)` was 4× slower here;
- orders per category, overall and in the category window: for up to `PACKED_MAX_CATEGORIES`
  categories, one `sum` of `1 << (8 · code)` per group of 8 categories (eight 8-bit counters in a
  64-bit word); a customer with 256 orders or more could overflow a counter, so such customers
  (rare) are counted again exactly, per (customer, category). With more categories every customer
  is counted that way.

The calendar day of an instant is `(epoch_ns + offset) // day`, the offset taken from the time
zone's transitions inside the data's range (a CASE over them when the zone changes offset, e.g. at
DST), identical to pandas' `tz_convert` (tested across DST in zones east and west of UTC).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from winback.errors import DataError

DAY_NS = 86_400 * 10**9
# Shifts instants before the integer division so that it floors (DuckDB's // truncates toward 0)
# for any date after 1870.
_SHIFT_DAYS = 36_525
PACKED_MAX_CATEGORIES = 32
_LANES = 8  # 8-bit counters per 64-bit word
# Bitmaps of distinct days wider than this (about 22 years of history) use count(DISTINCT day).
_MAX_BITMAP_DAYS = 8_192
_ORDER_COLUMNS = ("customer_id", "ordered_at", "amount")
_AMOUNT_DECIMALS = 4  # amounts are summed as DECIMAL(18, 4): |amount| < 10^14
_MAX_AMOUNT = 1e13

OrdersSource = pd.DataFrame | pa.Table | str | os.PathLike | Sequence[str | os.PathLike]


@dataclass
class OrderAggregates:
    """Per-customer arrays aligned with the customers (or, without customers, with `names`)."""

    n_orders: np.ndarray
    n_transactions: np.ndarray
    total_spend: np.ndarray
    n_discounted: np.ndarray
    tx_recent: np.ndarray
    tx_earlier: np.ndarray
    first_day: np.ndarray  # datetime64[D]
    last_day: np.ndarray
    first_order_at: np.ndarray  # datetime64[ns], UTC
    last_order_at: np.ndarray
    names: pa.Array | None = None  # customer ids when the customers are the orders' own
    categories: dict | None = None
    # With a holdout split (see aggregate_orders): the last day of the calibration period, and per
    # customer the transactions up to it and the day of the last of them (NaT when none).
    split_day: np.datetime64 | None = None
    tx_to_split: np.ndarray | None = None
    last_day_to_split: np.ndarray | None = None


@contextmanager
def connect(customer_ids: pa.Array | None = None):
    """A DuckDB connection for one segmentation run; `customer_ids` (if given) registered as `ids`."""
    import duckdb

    con = duckdb.connect()
    try:
        if customer_ids is not None:
            con.register("ids", pa.table({
                "customer_id": customer_ids, "pos": pa.array(np.arange(len(customer_ids), dtype=np.int32))}))
        yield con
    finally:
        con.close()


def aggregate_orders(orders: OrdersSource, *, as_of: pd.Timestamp, timezone: str, trend_window_days: int,
                     category_window_days: int = 0, con=None, n_customers: int | None = None,
                     categories: bool = True, label: str = "orders", holdout_days: int = 0,
                     holdout_share: float = 1.0) -> OrderAggregates:
    """Aggregate the orders up to `as_of` per customer.

    With `con` from `connect(customer_ids)` (and `n_customers`), the customers are those ids, in
    their order, and orders of other customers are ignored; otherwise the customers are the
    distinct customer_ids of the orders (`names`) and categories are not counted.
    With `holdout_days`, the same pass also splits the history for a holdout check of the purchase
    models: the last h = min(holdout_days, ⌊holdout_share · days since the first order⌋) days are
    the holdout, and `split_day`, `tx_to_split` and `last_day_to_split` describe the calibration
    period before them (none when h = 0).
    """
    if con is None:
        with connect() as own:
            return aggregate_orders(orders, as_of=as_of, timezone=timezone, trend_window_days=trend_window_days,
                                    con=own, categories=False, label=label, holdout_days=holdout_days,
                                    holdout_share=holdout_share)
    import duckdb

    source, columns = _register(con, orders, label)
    try:
        return _aggregate(con, source, columns, as_of=as_of, timezone=timezone,
                          trend_window_days=trend_window_days, category_window_days=category_window_days,
                          n_customers=n_customers, categories=categories and "category" in columns,
                          label=label, holdout=(holdout_days, holdout_share))
    except duckdb.ConversionException as exc:  # an amount DECIMAL(18, 4) cannot hold, or NaN
        raise DataError(f"{label}: an amount is not a finite number below {_MAX_AMOUNT:.0e} ({exc})",
                        column="amount") from exc


def complaint_counts(complaints: pd.DataFrame, con, n: int, *, recent_start: pd.Timestamp, end: pd.Timestamp,
                     open_since: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(open, recent) per customer: open = an unresolved complaint created in [open_since, end] (UTC ns,
    one bound per customer), recent = complaints created in (recent_start, end]. Complaints of unknown
    customers are ignored."""
    created = pd.DatetimeIndex(pd.to_datetime(complaints["created_at"], utc=True)).as_unit("ns").asi8
    resolved = (complaints["resolved"].astype("boolean").fillna(False).to_numpy(dtype=bool)
                if "resolved" in complaints.columns else np.zeros(len(complaints), dtype=bool))
    con.register("complaints", pa.table({"customer_id": _strings(complaints["customer_id"]),
                                         "i": pa.array(np.arange(len(complaints), dtype=np.int64))}))
    rows = con.sql("SELECT c.i, ids.pos FROM complaints c JOIN ids USING (customer_id)").fetchnumpy()
    row, pos = rows["i"], rows["pos"].astype(np.int64)
    when = created[row]  # a missing created_at (NaT, the smallest int64) is in no window
    in_time = when <= end.as_unit("ns").value
    recent = np.bincount(pos[in_time & (when > recent_start.as_unit("ns").value)], minlength=n)
    open_ = np.zeros(n, dtype=bool)
    open_[pos[in_time & ~resolved[row] & (when >= open_since[pos])]] = True
    return open_, recent.astype(np.int64)


def check_unique_ids(con) -> None:
    """DataError naming a customer_id that appears twice among the registered `ids`."""
    dup = con.sql("SELECT customer_id FROM ids GROUP BY customer_id HAVING count(*) > 1 LIMIT 1").fetchall()
    if dup:
        raise DataError(f"duplicate customer_id {dup[0][0]!r}", column="customer_id")


# ---------------------------------------------------------------------------------------------


def _strings(values) -> pa.Array:
    """A string-like column as one Arrow large_string array (zero-copy when pandas stores Arrow)."""
    if isinstance(values, pd.Series):
        if not (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"):
            values = values.astype("str")
        values = pa.array(values)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    return values if values.type == pa.large_string() else values.cast(pa.large_string())


def _register(con, orders: OrdersSource, label: str) -> tuple[str, set[str]]:
    """Make the orders scannable as `src`; returns the SQL source and its column names."""
    if isinstance(orders, pd.DataFrame):
        _check_columns(orders.columns, label)
        con.register("src", _frame_to_arrow(orders))
        return "src", set(orders.columns)
    if isinstance(orders, pa.Table):
        _check_columns(orders.column_names, label)
        con.register("src", orders)
        return "src", set(orders.column_names)
    paths = [orders] if isinstance(orders, str | os.PathLike) else list(orders)
    for path in paths:
        if not Path(path).exists():
            raise DataError(f"{path}: no such file", file=str(path))
    listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    source = f"read_parquet([{listed}])"
    try:
        described = con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()
    except Exception as exc:  # duckdb.Error: not Parquet, unreadable
        raise DataError(f"{paths[0]}: cannot read as Parquet: {exc}", file=str(paths[0])) from exc
    types = {row[0]: row[1] for row in described}
    _check_columns(types, str(paths[0]))
    if "TIMESTAMP" not in types["ordered_at"].upper():
        raise DataError(f"{paths[0]}: ordered_at is {types['ordered_at']}, not a timestamp; validate with "
                        "winback.sources.load_inputs", file=str(paths[0]), column="ordered_at")
    for col in ("amount", "discount"):
        if col in types and not _numeric(types[col]):
            raise DataError(f"{paths[0]}: {col} is {types[col]}, not a number", file=str(paths[0]), column=col)
    return source, set(types)


def _numeric(sql_type: str) -> bool:
    t = sql_type.upper()
    return any(k in t for k in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL", "NUMERIC"))


def _check_columns(columns, label: str) -> None:
    for col in _ORDER_COLUMNS:
        if col not in columns:
            raise DataError(f"{label} have no {col} column", column=col)


def _frame_to_arrow(orders: pd.DataFrame) -> pa.Table:
    """The columns aggregation reads, as Arrow (zero-copy where pandas already holds them so)."""
    ordered_at = orders["ordered_at"]
    if not (isinstance(ordered_at.dtype, pd.DatetimeTZDtype) and str(ordered_at.dt.tz) == "UTC"):
        ordered_at = pd.to_datetime(ordered_at, utc=True)
    amount = orders["amount"]
    if amount.dtype != np.float64:
        amount = pd.to_numeric(amount, errors="coerce")
    amount = amount.to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(amount).any() or ordered_at.isna().any():
        raise DataError("orders contain a missing or non-numeric amount or ordered_at; validate with load_inputs")
    columns = {
        "customer_id": _strings(orders["customer_id"]),
        "ordered_at": pa.array(ordered_at.astype("datetime64[ns, UTC]")),
        "amount": pa.array(amount),
    }
    if "discount" in orders.columns:
        discount = orders["discount"]
        if discount.dtype != np.float64:
            discount = pd.to_numeric(discount, errors="coerce")
        columns["discount"] = pa.array(discount.to_numpy(dtype=float, na_value=np.nan), from_pandas=True)
    if "category" in orders.columns:
        category = orders["category"]
        if isinstance(category.dtype, pd.CategoricalDtype):
            category = category.astype("str")
        columns["category"] = _strings(category)
    return pa.table(columns)


def _day_offsets(lo_ns: int, hi_ns: int, timezone: str) -> tuple[np.ndarray, np.ndarray]:
    """(transitions, offsets): UTC offset (ns) offsets[i] holds from transitions[i-1] (or the start)."""
    hour = 3_600 * 10**9
    grid = np.arange(lo_ns - DAY_NS, hi_ns + 2 * DAY_NS, hour)
    local = pd.DatetimeIndex(grid.view("datetime64[ns]"), tz="UTC").tz_convert(timezone).tz_localize(None)
    offset = local.as_unit("ns").asi8 - grid
    changes = np.flatnonzero(offset[1:] != offset[:-1])
    transitions, offsets = [], [int(offset[0])]
    for i in changes:  # the exact instant inside the hour, to the second
        seconds = np.arange(grid[i], grid[i + 1] + 1, 10**9)
        inner = pd.DatetimeIndex(seconds.view("datetime64[ns]"), tz="UTC").tz_convert(timezone).tz_localize(None)
        after = np.flatnonzero(inner.as_unit("ns").asi8 - seconds != offset[i])
        transitions.append(int(seconds[after[0]]))
        offsets.append(int(offset[i + 1]))
    return np.array(transitions, dtype=np.int64), np.array(offsets, dtype=np.int64)


def local_days(ts_ns: np.ndarray, transitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Calendar day (days since 1970-01-01) of UTC nanosecond instants, with `_day_offsets`' table."""
    offset = offsets[np.searchsorted(transitions, ts_ns, side="right")] if len(transitions) else offsets[0]
    return (ts_ns + offset + _SHIFT_DAYS * DAY_NS) // DAY_NS - _SHIFT_DAYS


def _day_sql(transitions: np.ndarray, offsets: np.ndarray) -> str:
    shift = _SHIFT_DAYS * DAY_NS
    if len(transitions) == 0:
        offset = str(int(offsets[0]) + shift)
    else:
        cases = " ".join(f"WHEN e < {int(t)} THEN {int(o) + shift}" for t, o in zip(transitions, offsets[:-1], strict=True))
        offset = f"(CASE {cases} ELSE {int(offsets[-1]) + shift} END)"
    return f"((e + {offset}) // {DAY_NS} - {_SHIFT_DAYS})::INTEGER"


def _aggregate(con, source: str, columns: set[str], *, as_of, timezone, trend_window_days, category_window_days,
               n_customers: int | None, categories: bool, label: str, holdout=(0, 1.0)) -> OrderAggregates:
    as_of_ns = int(as_of.as_unit("ns").value)
    cat_col = "category::VARCHAR" if categories else "NULL::VARCHAR"
    # One pass over the narrow columns: missing values, the time range kept, the distinct categories.
    pre = con.sql(
        f"SELECT {cat_col} AS category, count(*) AS n, count(amount) AS n_amount, count(ordered_at) AS n_at, "
        f"min(epoch_ns(ordered_at)) FILTER (epoch_ns(ordered_at) <= {as_of_ns}) AS lo, "
        f"max(epoch_ns(ordered_at)) FILTER (epoch_ns(ordered_at) <= {as_of_ns}) AS hi "
        f"FROM {source} GROUP BY ALL"
    ).fetchall()
    if any(r[1] != r[2] or r[1] != r[3] for r in pre):
        raise DataError(f"{label} contain a missing or non-numeric amount or ordered_at; validate with load_inputs")
    kept = [r for r in pre if r[4] is not None]
    n = n_customers
    if not kept:
        return _empty(n or 0, names=pa.array([], pa.large_string()) if n is None else None)
    if n is None:
        categories = False
    lo_ns, hi_ns = min(r[4] for r in kept), max(r[5] for r in kept)
    transitions, offsets = _day_offsets(lo_ns, hi_ns, timezone)
    lo_day, hi_day = (int(d) for d in local_days(np.array([lo_ns, hi_ns]), transitions, offsets))
    as_of_day = int(local_days(np.array([as_of_ns]), transitions, offsets)[0])
    names = sorted({r[0] for r in kept if r[0] is not None and r[0].strip()}) if categories else []
    k = len(names)
    recent_start = as_of_day - trend_window_days
    cat_start = as_of_day - category_window_days
    holdout_span = min(int(holdout[0]), int((as_of_day - lo_day) * holdout[1]))
    split = as_of_day - holdout_span if holdout_span > 0 else None

    # Days: a bitmap whose rows are whole 64-bit words (8 + 64·w bits incl. DuckDB's padding byte).
    # One day of margin on each side: a DST change at midnight can step a local day back.
    last = hi_day + 1
    bits = last - (lo_day - 1) + 1
    words = -(-(bits + 8) // 64)
    use_bitmap = bits <= _MAX_BITMAP_DAYS
    first = last - (words * 64 - 8) + 1  # the bitmap ends at `last` and starts early enough
    aggs = [
        "count(*)::INTEGER AS n_orders",
        # In exact decimal arithmetic: the sum does not depend on the order DuckDB's threads add in.
        f"sum(amount::DECIMAL(18, {_AMOUNT_DECIMALS}))::DOUBLE AS total_spend",
        "min(e) AS first_ns", "max(e) AS last_ns",
        "count(*) FILTER (discount > 0)::INTEGER AS n_discounted" if "discount" in columns else "0 AS n_discounted",
    ]
    if use_bitmap:
        aggs.append(f"bitstring_agg(day, {first}, {last}) AS days")
    else:
        earlier_start = recent_start - trend_window_days
        aggs += ["count(DISTINCT day)::INTEGER AS n_tx",
                 f"count(DISTINCT day) FILTER (day > {recent_start})::INTEGER AS tx_recent",
                 f"count(DISTINCT day) FILTER (day > {earlier_start} AND day <= {recent_start})::INTEGER AS tx_earlier"]
        if split is not None:
            aggs.append(f"count(DISTINCT day) FILTER (day <= {split})::INTEGER AS tx_split")
    if split is not None:
        aggs.append(f"max(day) FILTER (day <= {split}) AS last_split")
    packed = 0 < k <= PACKED_MAX_CATEGORIES
    code = "NULL::INTEGER"
    if k:
        quoted = ", ".join("'" + name.replace("'", "''") + "'" for name in names)
        code = f"(list_position([{quoted}], category::VARCHAR) - 1)"
    if packed:
        for w in range(-(-k // _LANES)):
            single = k <= _LANES
            lane = "1::UBIGINT << (8 * code)::UBIGINT" if single else f"1::UBIGINT << (8 * (code - {w * _LANES}))::UBIGINT"
            hit = "TRUE" if single else f"code >= {w * _LANES} AND code < {(w + 1) * _LANES}"
            # A missing code gives NULL, which sum skips. Modulo 2^64: a customer whose 8-bit
            # counters overflow (256 orders or more) is recounted exactly anyway.
            for name, cond in ((f"all_{w}", hit), (f"recent_{w}", f"{hit} AND day > {cat_start}")):
                value = lane if cond == "TRUE" else f"CASE WHEN {cond} THEN {lane} END"
                aggs.append(f"coalesce(sum({value}) % 18446744073709551616::HUGEINT, 0)::UBIGINT AS {name}")
    inner = (f"SELECT customer_id, amount, {'discount' if 'discount' in columns else 'NULL AS discount'}, "
             f"{code} AS code, e, {_day_sql(transitions, offsets)} AS day "
             f"FROM (SELECT *, epoch_ns(ordered_at) AS e FROM {source}) WHERE e <= {as_of_ns}")
    grouped = f"SELECT customer_id, {', '.join(aggs)} FROM ({inner}) GROUP BY customer_id"
    if n is not None:
        result = con.sql(f"SELECT ids.pos, g.* EXCLUDE (customer_id) FROM ({grouped}) g JOIN ids USING (customer_id)").to_arrow_table()
        where = result["pos"].to_numpy()
        size = n
        out_names = None
    else:
        result = con.sql(grouped).to_arrow_table()
        # In customer_id order: the hash table's output order varies from run to run, and a model fit
        # on these arrays would vary in its last digits with it. (Sorting the keys alone, then taking
        # the rows, is 3× faster than sorting the wide rows in the query.)
        con.register("names", pa.table({"customer_id": result["customer_id"],
                                        "i": pa.array(np.arange(result.num_rows, dtype=np.int64))}))
        result = result.take(con.sql("SELECT i FROM names ORDER BY customer_id").fetchnumpy()["i"])
        size = result.num_rows
        where = np.arange(size)
        out_names = _strings(result["customer_id"])

    agg = _empty(size, names=out_names)
    agg.n_orders[where] = result["n_orders"].to_numpy()
    agg.total_spend[where] = result["total_spend"].to_numpy()
    agg.n_discounted[where] = result["n_discounted"].to_numpy()
    first_ns = result["first_ns"].to_numpy()
    last_ns = result["last_ns"].to_numpy()
    agg.first_order_at[where] = first_ns.view("datetime64[ns]")
    agg.last_order_at[where] = last_ns.view("datetime64[ns]")
    agg.first_day[where] = local_days(first_ns, transitions, offsets).astype("datetime64[D]")
    agg.last_day[where] = local_days(last_ns, transitions, offsets).astype("datetime64[D]")
    if use_bitmap:
        n_tx, rec, ear, *to_split = _count_days(result["days"], first, words, recent_start, trend_window_days,
                                                split)
    else:
        n_tx, rec, ear = (result[c].to_numpy() for c in ("n_tx", "tx_recent", "tx_earlier"))
        to_split = [result["tx_split"].to_numpy()] if split is not None else []
    agg.n_transactions[where] = n_tx
    agg.tx_recent[where] = rec
    agg.tx_earlier[where] = ear
    if split is not None:
        agg.split_day = np.datetime64(split, "D")
        agg.tx_to_split = np.zeros(size, dtype=np.int64)
        agg.tx_to_split[where] = to_split[0]
        agg.last_day_to_split = np.full(size, np.datetime64("NaT"), dtype="datetime64[D]")
        none = np.iinfo(np.int32).min  # NULL: no transaction up to the split day
        last_split = result["last_split"].fill_null(none).to_numpy().astype(np.int64)
        before = last_split != none
        agg.last_day_to_split[where[before]] = last_split[before].astype("datetime64[D]")
    if categories:  # only with customers given (n), see above
        agg.categories = _category_counts(con, result, where, size, names, packed, inner, cat_start)
    return agg


def _count_days(days: pa.ChunkedArray, first: int, words: int, recent_start: int, window: int,
                split: int | None = None):
    """Set bits of each customer's day bitmap: all, in (recent_start, +window], in the window before,
    and (with `split`) up to the split day.

    DuckDB writes a bitstring as a padding-count byte, then the bits MSB first (padding bits set);
    the range was chosen so that the padding is 0 and a row is exactly `words` 64-bit words. Word
    order does not matter for counting, so the window masks are built byte-wise and viewed the same
    way; counting goes column by column (one 64-bit word of every customer at a time).
    """
    width = words * 8

    def mask(lo_day: int, hi_day: int) -> np.ndarray:  # days in [lo_day, hi_day]
        bit = np.zeros(width * 8, dtype=np.uint8)
        start, stop = max(lo_day - first, 0) + 8, min(hi_day - first, width * 8 - 9) + 8
        if stop >= start:
            bit[start:stop + 1] = 1
        return np.packbits(bit).view(np.uint64)

    masks = [None, mask(recent_start + 1, recent_start + window), mask(recent_start - window + 1, recent_start)]
    if split is not None:
        masks.append(mask(first, split))
    parts = [[] for _ in masks]
    for chunk in days.chunks:
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(chunk.type) else np.int32)
        offsets = offsets[chunk.offset:chunk.offset + len(chunk) + 1]
        if len(chunk) and not (offsets[-1] - offsets[0] == width * len(chunk)):
            raise DataError("internal error: day bitmaps of unexpected width")
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[0] + width * len(chunk)]
        matrix = data.view(np.uint64).reshape(len(chunk), words)
        for counts, m in zip(parts, masks, strict=True):
            total = np.zeros(len(chunk), dtype=np.int64)
            for j in range(words) if m is None else np.flatnonzero(m):
                column = matrix[:, j] if m is None else matrix[:, j] & m[j]
                total += np.bitwise_count(column)
            counts.append(total)
    return tuple(np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts)


def _category_counts(con, result: pa.Table, where: np.ndarray, size: int, names: list[str], packed: bool,
                     inner: str, cat_start: int) -> dict:
    """Top category overall and before the category window, with their counts (see core docstring)."""
    k = len(names)
    out = empty_categories(size)
    out["names"] = np.array(names, dtype=object)
    if k == 0:
        return out
    if not packed:
        pairs = _pairs(con, inner, cat_start)
        return sparse_top_categories(pairs["pos"].astype(np.int64), pairs["code"].astype(np.int64),
                                     pairs["n_all"].astype(float), pairs["n_recent"].astype(float), out)
    # Every customer's 8-bit counters: a row of 64-bit words (8 categories each), seen as bytes.
    n_words = -(-k // _LANES)
    counters = []
    for prefix in ("all", "recent"):
        matrix = np.zeros((size, n_words * _LANES), dtype=np.uint8)
        for w in range(n_words):
            matrix.view("<u8")[where, w] = result[f"{prefix}_{w}"].to_numpy()
        counters.append(matrix[:, :k])
    out = dense_top_categories(*counters, out)
    heavy = where[result["n_orders"].to_numpy() >= 256]
    if len(heavy):  # an 8-bit counter may have overflowed: count these customers exactly
        pairs = _pairs(con, inner, cat_start, only=heavy)
        exact = sparse_top_categories(pairs["pos"].astype(np.int64), pairs["code"].astype(np.int64),
                                      pairs["n_all"].astype(float), pairs["n_recent"].astype(float),
                                      empty_categories(size))
        for key in ("top_category", "top_before", "top_before_orders", "top_before_recent", "recent_orders"):
            out[key][heavy] = exact[key][heavy]
    return out


def _pairs(con, inner: str, cat_start: int, *, only: np.ndarray | None = None) -> dict:
    """Exact order counts per (customer position, category code): all, and in the category window."""
    where = "code IS NOT NULL"
    if only is not None:
        con.register("only_pos", pa.table({"pos": pa.array(only.astype(np.int32))}))
        where += " AND ids.pos IN (SELECT pos FROM only_pos)"
    return con.sql(
        f"SELECT ids.pos AS pos, code, count(*)::BIGINT AS n_all, "
        f"count(*) FILTER (day > {cat_start})::BIGINT AS n_recent "
        f"FROM ({inner}) o JOIN ids USING (customer_id) WHERE {where} GROUP BY ALL"
    ).fetchnumpy()


def dense_top_categories(all_c: np.ndarray, recent_c: np.ndarray, out: dict) -> dict:
    """Top categories from (customers × categories) order counts, overall and in the window; the
    first (alphabetical) wins ties, as `argmax` keeps the first maximum."""
    rows = np.arange(len(all_c))
    before = all_c - recent_c  # recent ≤ all: no wrap-around in unsigned counters
    top = np.argmax(all_c, axis=1)
    top_before = np.argmax(before, axis=1)
    before_n = before[rows, top_before].astype(float)
    had_before = before_n > 0
    out["top_category"] = np.where(all_c[rows, top] > 0, top, -1)
    out["top_before"] = np.where(had_before, top_before, -1)
    out["top_before_orders"] = before_n
    out["top_before_recent"] = np.where(had_before, recent_c[rows, top_before], 0).astype(float)
    out["recent_orders"] = recent_c.sum(axis=1, dtype=np.int64).astype(float)
    return out


def sparse_top_categories(pos: np.ndarray, cat: np.ndarray, n_all: np.ndarray, n_recent: np.ndarray,
                          out: dict) -> dict:
    """The same from (customer, category, counts) pairs, for many categories."""
    order = np.lexsort((cat, pos))
    pos, cat, n_all, n_recent = pos[order], cat[order], n_all[order], n_recent[order]
    n_before = n_all - n_recent
    first_all = _first_per_group(pos, -n_all)
    first_before = _first_per_group(pos, -n_before)
    out["top_category"][pos[first_all]] = cat[first_all]
    sel = first_before[n_before[first_before] > 0]
    out["top_before"][pos[sel]] = cat[sel]
    out["top_before_orders"][pos[sel]] = n_before[sel]
    out["top_before_recent"][pos[sel]] = n_recent[sel]
    out["recent_orders"] = np.bincount(pos, weights=n_recent, minlength=len(out["recent_orders"]))
    return out


def _first_per_group(group: np.ndarray, sort_key: np.ndarray) -> np.ndarray:
    """Index of the row with the smallest sort_key in each group (ties: first row); group is sorted."""
    order = np.lexsort((sort_key, group))  # by group, then key; stable, so ties keep the row order
    g = group[order]
    return order[np.r_[True, g[1:] != g[:-1]]]


def _empty(n: int, *, names=None) -> OrderAggregates:
    return OrderAggregates(
        n_orders=np.zeros(n, dtype=np.int64), n_transactions=np.zeros(n, dtype=np.int64),
        total_spend=np.zeros(n), n_discounted=np.zeros(n), tx_recent=np.zeros(n), tx_earlier=np.zeros(n),
        first_day=np.full(n, np.datetime64("NaT"), dtype="datetime64[D]"),
        last_day=np.full(n, np.datetime64("NaT"), dtype="datetime64[D]"),
        first_order_at=np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
        last_order_at=np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
        names=names, categories=empty_categories(n),
    )


def empty_categories(n: int) -> dict:
    return {
        "names": np.array([], dtype=object),
        "top_category": np.full(n, -1, dtype=np.int64), "top_before": np.full(n, -1, dtype=np.int64),
        "top_before_orders": np.zeros(n), "top_before_recent": np.zeros(n), "recent_orders": np.zeros(n),
    }
