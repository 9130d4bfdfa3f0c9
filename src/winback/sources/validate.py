"""Validation of customers, orders and complaints into the contract frames, with a quarantine.

Pure: frames in, frames out (no files, no clock). Checks are plain vectorized pandas/numpy rather
than pandera or pydantic: pandera's error tables do not carry our row numbering, codes or the
"first problem per row" rule, and a pydantic model per row costs minutes on 10M orders.

Policy (one rule, stated once): a row with any *invalid* value is quarantined whole — bad values in
typed columns usually mean a shifted or mangled row, so its other fields are suspect too. A value
that is merely *absent* is allowed where the contract allows NA (email, phone, names, birthday,
category, coupon) or replaced by a documented default (timezone → `default_timezone`, locale →
`default_locale`, opt-ins → False, discount → 0, resolved → False, kind → `unspecified`); those
replacements are counted in `Inputs.filled`.

Each input row lands either in the valid frame or in the quarantine, exactly once. A row with
several problems is quarantined once: `code`, `column` and `value` describe its first problem (in the
order checks are listed below), `reason` lists all of them. Duplicates keep the first row that is
otherwise valid; later ones are quarantined. Orders and complaints of a quarantined customer are
quarantined as `unknown_customer`, with the reason saying the customer was quarantined.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from winback.config import DEFAULT_TIMEZONE
from winback.errors import DataError
from winback.sources import fields

DEFAULT_LOCALE = "zh-CN"
# Amounts at or above this are quarantined: far beyond any order, and past what segmentation's
# decimal sums hold (one such value used to abort `segment` with the database's overflow error).
MAX_AMOUNT = 1e12

# Stable snake_case codes (users and dashboards count by them).
CODES = {
    "missing_customer_id": "customer_id is empty",
    "missing_order_id": "order_id is empty",
    "duplicate_customer_id": "duplicate customer_id (an earlier row has it)",
    "duplicate_order_id": "duplicate order_id (an earlier row has it)",
    "unparseable_date": "not a date/time (use ISO 8601, e.g. 2024-03-01 14:30 or 2024-03-01T14:30:00+08:00)",
    "non_numeric_amount": "not a number",
    "negative_amount": "negative amount",
    "implausible_amount": "amount of 10^12 or more: no real order is that large (a shifted column, an id in "
                          "the amount, or a unit error?)",
    "unknown_customer": "customer_id not found in the customers file",
    "malformed_email": "malformed email address",
    "invalid_phone": "not a valid phone number in E.164 form (+8613800138000)",
    "unknown_timezone": "unknown IANA time zone (e.g. Asia/Shanghai)",
    "unknown_locale": "unknown locale (BCP 47, e.g. zh-CN, en-US)",
    "bad_boolean": "not a yes/no value (true/false, 1/0, yes/no, 是/否)",
    "bad_birthday": "birthday is not a date (use YYYY-MM-DD)",
}

CUSTOMER_COLUMNS = (
    "customer_id", "email", "phone", "locale", "timezone", "email_opt_in", "sms_opt_in",
    "first_name", "last_name", "birthday", "account_manager",
)
CUSTOMER_REQUIRED = ("customer_id", "email", "phone", "locale", "timezone", "email_opt_in", "sms_opt_in")
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "amount", "category", "discount", "coupon_code")
ORDER_REQUIRED = ("order_id", "customer_id", "ordered_at", "amount")
COMPLAINT_COLUMNS = ("customer_id", "created_at", "kind", "resolved")
COMPLAINT_REQUIRED = COMPLAINT_COLUMNS

QUARANTINE_COLUMNS = ("table", "file", "row", "column", "value", "code", "reason")
TABLES = ("customers", "orders", "complaints")


@dataclass
class Inputs:
    """Validated inputs: contract frames, the quarantine, and counts per reason code."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    complaints: pd.DataFrame  # empty (with the contract columns) when no complaints file was given
    quarantine: pd.DataFrame  # table, file, row, column, value, code, reason
    counts: dict[str, int]  # code -> quarantined rows whose first problem it is
    rows_read: dict[str, int] = field(default_factory=dict)  # table -> input rows (given tables only)
    sources: dict[str, str] = field(default_factory=dict)  # table -> file / URL (passwords hidden)
    filled: dict[str, int] = field(default_factory=dict)  # "table.column" -> defaults applied
    departed_managers: tuple[str, ...] = ()
    default_timezone: str = DEFAULT_TIMEZONE


def empty_quarantine() -> pd.DataFrame:
    """An empty quarantine frame with its columns."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in QUARANTINE_COLUMNS})


def normalize_columns(frame: pd.DataFrame, *, table: str, file: str, required: Iterable[str]) -> pd.DataFrame:
    """Trim and lower-case column names; a missing required column is a DataError naming it."""
    names = [str(c).replace("\ufeff", "").strip().lower() for c in frame.columns]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"column {name!r} appears twice in the {table} table", file=file, column=name)
        seen.add(name)
    frame = frame.set_axis(names, axis=1)
    for column in required:
        if column not in seen:
            raise DataError(
                f"missing required column {column!r} in the {table} table",
                file=file,
                column=column,
                hint=f"columns found: {', '.join(names) or '(none)'}; required: {', '.join(required)}",
            )
    return frame


class _Checks:
    """Collects boolean problem masks for one table and turns them into a quarantine."""

    def __init__(self, table: str, file: str, frame: pd.DataFrame) -> None:
        self.table, self.file, self.frame = table, file, frame
        self.n = len(frame)
        self.problems: list[tuple[str, str, np.ndarray, str | pd.Series]] = []
        self.bad = np.zeros(self.n, dtype=bool)

    def add(self, code: str, column: str, mask: np.ndarray, text: str | pd.Series | None = None) -> None:
        """Record rows where `mask` holds; `text` is one reason, or a per-row Series (frame positions)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.problems.append((code, column, mask, CODES[code] if text is None else text))
            self.bad |= mask

    def quarantine(self) -> pd.DataFrame:
        if not self.bad.any():
            return empty_quarantine()
        rows = np.flatnonzero(self.bad)
        code = np.full(len(rows), None, dtype=object)
        column = np.full(len(rows), None, dtype=object)
        value = pd.Series(pd.NA, index=range(len(rows)), dtype="str")
        reason = pd.Series("", index=range(len(rows)), dtype="str")
        for problem_code, problem_column, mask, text in self.problems:
            hit = mask[rows]
            first = hit & (code == None)  # noqa: E711 (elementwise on an object array)
            code[first] = problem_code
            column[first] = problem_column
            if first.any():
                cells = self.frame[problem_column].iloc[rows[first]]
                value[first] = fields.clean_text(cells).to_numpy()
            if isinstance(text, pd.Series):
                labelled = (f"{problem_column}: " + text.reindex(rows[hit]).astype("str")).to_numpy()
            else:
                labelled = f"{problem_column}: {text}"
            reason[hit] = np.where(reason[hit] == "", labelled, reason[hit] + "; " + labelled)
        return pd.DataFrame(
            {
                "table": self.table,
                "file": self.file,
                "row": rows + 1,  # 1-based data row: for CSV, the line number minus the header
                "column": pd.array(column, dtype="str"),
                "value": value,
                "code": pd.array(code, dtype="str"),
                "reason": reason,
            }
        )


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="str")
    return fields.clean_text(frame[column])


def _first_valid_duplicates(ids: pd.Series, otherwise_bad: np.ndarray, name: str) -> tuple[np.ndarray, pd.Series]:
    """Duplicates among rows that are otherwise valid (the first such row wins), with a reason per row."""
    positions = np.flatnonzero(~otherwise_bad & ids.notna().to_numpy())
    first = fields.first_occurrence(ids.iloc[positions])
    later = first != np.arange(len(positions))
    dup = np.zeros(len(ids), dtype=bool)
    dup[positions[later]] = True
    if not later.any():
        return dup, pd.Series(dtype="str")
    kept_row = pd.Series(positions[first[later]] + 1, index=positions[later]).astype("str")
    return dup, f"same {name} as row " + kept_row + " (that one is kept)"


def validate_customers(
    frame: pd.DataFrame,
    *,
    file: str = "customers",
    default_timezone: str = DEFAULT_TIMEZONE,
    default_locale: str = DEFAULT_LOCALE,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Validate a customers table: (valid customers, quarantine, defaults applied per column)."""
    frame = normalize_columns(frame.reset_index(drop=True), table="customers", file=file, required=CUSTOMER_REQUIRED)
    checks = _Checks("customers", file, frame)
    filled: dict[str, int] = {}

    customer_id = _text(frame, "customer_id")
    checks.add("missing_customer_id", "customer_id", customer_id.isna().to_numpy())

    opt_ins = {}
    for column in ("email_opt_in", "sms_opt_in"):
        parsed = fields.parse_bool(frame[column])
        checks.add("bad_boolean", column, parsed.bad)
        opt_ins[column] = parsed.values
        filled[f"customers.{column}"] = int(parsed.missing.sum())

    email = _text(frame, "email")
    checks.add("malformed_email", "email", email.notna().to_numpy() & ~fields.valid_emails(email))

    phone = fields.normalize_phones(_text(frame, "phone"))
    checks.add("invalid_phone", "phone", phone.notna().to_numpy() & ~fields.valid_e164(phone))

    zone_text = _text(frame, "timezone")
    zone_missing = zone_text.isna().to_numpy()
    timezone = fields.canonical_timezones(zone_text)
    checks.add("unknown_timezone", "timezone", ~zone_missing & timezone.isna().to_numpy())
    timezone = timezone.where(~zone_missing, default_timezone)
    filled["customers.timezone"] = int(zone_missing.sum())

    locale_text = _text(frame, "locale")
    locale_missing = locale_text.isna().to_numpy()
    locale = fields.canonical_locales(locale_text)
    checks.add("unknown_locale", "locale", ~locale_missing & locale.isna().to_numpy())
    locale = locale.where(~locale_missing, default_locale)
    filled["customers.locale"] = int(locale_missing.sum())

    if "birthday" in frame.columns:
        born = fields.parse_timestamps(frame["birthday"])
        too_old = born.values.dt.year.lt(1900).fillna(False).to_numpy(dtype=bool)
        checks.add("bad_birthday", "birthday", born.bad | too_old)
        birthday = born.values.dt.normalize().where(~too_old)
    else:
        birthday = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")

    dup, text = _first_valid_duplicates(customer_id, checks.bad, "customer_id")
    checks.add("duplicate_customer_id", "customer_id", dup, text)

    out = pd.DataFrame(
        {
            "customer_id": customer_id,
            "email": email,
            "phone": phone,
            "locale": locale,
            "timezone": timezone,
            "email_opt_in": opt_ins["email_opt_in"],
            "sms_opt_in": opt_ins["sms_opt_in"],
            "first_name": _text(frame, "first_name"),
            "last_name": _text(frame, "last_name"),
            "birthday": birthday.astype("datetime64[ns]"),
            "account_manager": _text(frame, "account_manager"),
        }
    )
    extras = [c for c in frame.columns if c not in CUSTOMER_COLUMNS]
    out = pd.concat([out, frame[extras]], axis=1) if extras else out
    valid = out[~checks.bad].reset_index(drop=True)
    return valid, checks.quarantine(), {k: v for k, v in filled.items() if v}


def _quarantined_rows(quarantined: pd.Series | Iterable[str]) -> pd.Series:
    # customer_id -> its (first) quarantined row in the customers file.
    if isinstance(quarantined, pd.Series):
        return quarantined
    return pd.Series(pd.NA, index=pd.Index(list(quarantined), dtype="str"), dtype="Int64")


def _customer_checks(
    checks: _Checks, customer_id: pd.Series, customers: pd.DataFrame, quarantined: pd.Series, customers_file: str
) -> np.ndarray:
    """Add missing/unknown customer problems; return each row's position in `customers` (-1: none)."""
    present = customer_id.notna().to_numpy()
    checks.add("missing_customer_id", "customer_id", ~present)
    position = fields.lookup(customer_id, customers["customer_id"])
    unknown = present & (position < 0)
    if unknown.any():
        was_quarantined = np.zeros(len(unknown), dtype=bool)
        was_quarantined[unknown] = customer_id[unknown].isin(quarantined.index).to_numpy()
        if was_quarantined.any():
            row = customer_id[was_quarantined].map(quarantined).astype("Int64").astype("str").fillna("?")
            checks.add(
                "unknown_customer", "customer_id", was_quarantined,
                f"customer was quarantined in {customers_file} (row " + row + ")",
            )
        checks.add(
            "unknown_customer", "customer_id", unknown & ~was_quarantined,
            f"customer_id not found in {customers_file}",
        )
    return position


def _to_utc(parsed: fields.ParsedTimes, position: np.ndarray, customers: pd.DataFrame, default_timezone: str) -> pd.Series:
    # Naive wall times are read in the customer's own time zone (default_timezone if unknown).
    if not parsed.naive.any():
        return parsed.values.dt.tz_localize("UTC")
    codes, names = pd.factorize(customers["timezone"])
    zone_names = [str(n) for n in names] + [default_timezone]
    row_codes = np.append(codes, len(zone_names) - 1)[position]  # position -1 picks the default
    return fields.localize_naive(parsed, row_codes, zone_names)


def _too_large(values: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.abs(values), nan=0.0) >= MAX_AMOUNT


def validate_orders(
    frame: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    file: str = "orders",
    customers_file: str = "customers",
    quarantined_customers: pd.Series | Iterable[str] = (),
    default_timezone: str = DEFAULT_TIMEZONE,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Validate an orders table against valid customers: (valid orders, quarantine, defaults applied)."""
    frame = normalize_columns(frame.reset_index(drop=True), table="orders", file=file, required=ORDER_REQUIRED)
    checks = _Checks("orders", file, frame)
    filled: dict[str, int] = {}

    order_id = _text(frame, "order_id")
    checks.add("missing_order_id", "order_id", order_id.isna().to_numpy())
    customer_id = _text(frame, "customer_id")
    position = _customer_checks(
        checks, customer_id, customers, _quarantined_rows(quarantined_customers), customers_file
    )

    parsed = fields.parse_timestamps(frame["ordered_at"])
    checks.add("unparseable_date", "ordered_at", parsed.bad)
    checks.add("unparseable_date", "ordered_at", parsed.missing, "ordered_at is empty")

    amount = fields.parse_money(frame["amount"])
    checks.add("non_numeric_amount", "amount", amount.bad)
    checks.add("non_numeric_amount", "amount", amount.missing, "amount is empty")
    checks.add("negative_amount", "amount", amount.negative)
    checks.add("implausible_amount", "amount", _too_large(amount.values))

    if "discount" in frame.columns:
        discount = fields.parse_money(frame["discount"])
        checks.add("non_numeric_amount", "discount", discount.bad)
        checks.add("negative_amount", "discount", discount.negative)
        checks.add("implausible_amount", "discount", _too_large(discount.values))
        discount_values = np.nan_to_num(discount.values, nan=0.0)
        filled["orders.discount"] = int(discount.missing.sum())
    else:
        discount_values = np.zeros(len(frame))

    dup, text = _first_valid_duplicates(order_id, checks.bad, "order_id")
    checks.add("duplicate_order_id", "order_id", dup, text)

    out = pd.DataFrame(
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "ordered_at": _to_utc(parsed, position, customers, default_timezone),
            "amount": amount.values,
            "category": _text(frame, "category"),
            "discount": discount_values,
            "coupon_code": _text(frame, "coupon_code"),
        }
    )
    extras = [c for c in frame.columns if c not in ORDER_COLUMNS]
    out = pd.concat([out, frame[extras]], axis=1) if extras else out
    valid = out[~checks.bad].reset_index(drop=True)
    valid["ordered_at"] = valid["ordered_at"].astype("datetime64[ns, UTC]")
    return valid, checks.quarantine(), {k: v for k, v in filled.items() if v}


def validate_complaints(
    frame: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    file: str = "complaints",
    customers_file: str = "customers",
    quarantined_customers: pd.Series | Iterable[str] = (),
    default_timezone: str = DEFAULT_TIMEZONE,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Validate a complaints table against valid customers: (valid complaints, quarantine, defaults)."""
    frame = normalize_columns(
        frame.reset_index(drop=True), table="complaints", file=file, required=COMPLAINT_REQUIRED
    )
    checks = _Checks("complaints", file, frame)
    customer_id = _text(frame, "customer_id")
    position = _customer_checks(
        checks, customer_id, customers, _quarantined_rows(quarantined_customers), customers_file
    )
    parsed = fields.parse_timestamps(frame["created_at"])
    checks.add("unparseable_date", "created_at", parsed.bad)
    checks.add("unparseable_date", "created_at", parsed.missing, "created_at is empty")
    resolved = fields.parse_bool(frame["resolved"])
    checks.add("bad_boolean", "resolved", resolved.bad)
    kind = _text(frame, "kind")
    filled = {"complaints.resolved": int(resolved.missing.sum()), "complaints.kind": int(kind.isna().sum())}

    out = pd.DataFrame(
        {
            "customer_id": customer_id,
            "created_at": _to_utc(parsed, position, customers, default_timezone),
            "kind": kind.fillna("unspecified"),
            "resolved": resolved.values,
        }
    )
    extras = [c for c in frame.columns if c not in COMPLAINT_COLUMNS]
    out = pd.concat([out, frame[extras]], axis=1) if extras else out
    valid = out[~checks.bad].reset_index(drop=True)
    valid["created_at"] = valid["created_at"].astype("datetime64[ns, UTC]")
    return valid, checks.quarantine(), {k: v for k, v in filled.items() if v}


def empty_complaints() -> pd.DataFrame:
    """A complaints frame with no rows and the contract columns."""
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="str"),
            "created_at": pd.Series(dtype="datetime64[ns, UTC]"),
            "kind": pd.Series(dtype="str"),
            "resolved": pd.Series(dtype="bool"),
        }
    )


def _raise_first(quarantine: pd.DataFrame) -> None:
    if len(quarantine):
        first = quarantine.sort_values("row", kind="stable").iloc[0]
        raise DataError(
            f"{first['reason']} [{first['code']}] (value {first['value']!r})",
            file=first["file"],
            row=int(first["row"]),
            column=first["column"],
            hint="fix the row, or run without --strict to quarantine bad rows and go on",
        )


def departed_entries(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """Departed-manager entries (`name` or `name,YYYY-MM-DD`), de-duplicated in order.

    An iterable gives one entry per item. A string is comma-separated names, each optionally followed
    by its date: a token with a digit belongs to the name before it (`王芳,2025-08-20,李雷`), the
    rule `winback.segments.core.departed_manager_dates` reads the entries by."""
    if names is None:
        return ()
    if isinstance(names, str):
        entries: list[str] = []
        for token in (t.strip() for t in names.split(",")):
            if entries and any(ch.isdigit() for ch in token):
                entries[-1] = f"{entries[-1]},{token}"
            else:
                entries.append(token)
        names = entries
    return tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))


def validate_inputs(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    complaints: pd.DataFrame | None = None,
    *,
    files: Mapping[str, str] | None = None,
    strict: bool = False,
    default_timezone: str = DEFAULT_TIMEZONE,
    default_locale: str = DEFAULT_LOCALE,
    departed_managers: Iterable[str] | str | None = None,
) -> Inputs:
    """Validate raw customers/orders/complaints frames into `Inputs` (pure; `files` names them in reports)."""
    names = {table: table for table in TABLES} | dict(files or {})
    quarantines, filled = [], {}

    valid_customers, q, f = validate_customers(
        customers, file=names["customers"], default_timezone=default_timezone, default_locale=default_locale
    )
    if strict:
        _raise_first(q)
    quarantines.append(q)
    filled |= f
    # Ids of customers only present in quarantined rows: their orders say so in the reason.
    # Customers present only in quarantined rows: their orders and complaints name that row.
    quarantined_ids = pd.Series(dtype="Int64")
    if len(q):
        raw_ids = fields.clean_text(
            normalize_columns(customers, table="customers", file=names["customers"], required=())["customer_id"]
        )
        rows = q["row"].to_numpy()
        quarantined_ids = pd.Series(rows, index=raw_ids.iloc[rows - 1].to_numpy(), dtype="Int64")
        quarantined_ids = quarantined_ids[quarantined_ids.index.notna()]
        quarantined_ids = quarantined_ids[~quarantined_ids.index.duplicated(keep="first")]

    valid_orders, q, f = validate_orders(
        orders, valid_customers, file=names["orders"], customers_file=names["customers"],
        quarantined_customers=quarantined_ids, default_timezone=default_timezone,
    )
    if strict:
        _raise_first(q)
    quarantines.append(q)
    filled |= f

    rows_read = {"customers": len(customers), "orders": len(orders)}
    if complaints is not None:
        valid_complaints, q, f = validate_complaints(
            complaints, valid_customers, file=names["complaints"], customers_file=names["customers"],
            quarantined_customers=quarantined_ids, default_timezone=default_timezone,
        )
        if strict:
            _raise_first(q)
        quarantines.append(q)
        filled |= f
        rows_read["complaints"] = len(complaints)
    else:
        valid_complaints = empty_complaints()

    quarantine = pd.concat([q for q in quarantines if len(q)] or [empty_quarantine()], ignore_index=True)
    counts = {str(k): int(v) for k, v in quarantine["code"].value_counts(sort=True).items()}
    return Inputs(
        customers=valid_customers,
        orders=valid_orders,
        complaints=valid_complaints,
        quarantine=quarantine,
        counts=counts,
        rows_read=rows_read,
        sources={t: names[t] for t in rows_read},
        filled=filled,
        departed_managers=departed_entries(departed_managers),
        default_timezone=default_timezone,
    )
