"""Who came back because of the campaign: attribution of orders to contacts and treated-vs-holdout uplift.

`measure_campaign(ledger_rows, orders, window_days=…)` is pure (no clock, no network; `orders` may
be a frame or a Parquet/CSV path DuckDB scans directly, so ten million orders never pass through
pandas). The rules, in one place:

- **Unit**: a customer of the campaign (ledger rows of arm `treatment` or `holdout`; `excluded` rows
  are not part of the experiment). Attributes (offer, tier, stage, reason, channel) come from the
  customer's first step.
- **Intention to treat**: every customer assigned to treatment counts as treated whatever happened
  to the message (failed, suppressed, bounced, still planned). The delivery rate is reported beside.
- **Contact time**: treatment — the first step's real `sent_at` when it was sent, else its planned
  `send_at_utc` (never contacted: the time they were due); the earliest over steps. Holdout — the
  earliest planned `send_at_utc`, i.e. when they would have been contacted.
- **Attribution window**: orders with contact_at ≤ ordered_at < contact_at + window_days (and
  ordered_at ≤ as_of when given). An order before the contact or after the window does not count.
- **Coupon redemptions**: orders in the window whose `coupon_code` is one of the codes the ledger
  gave that customer in this campaign. What each one really cost (the discount applied capped by the
  offer's rules, points at their value, a shipment, a gift) is `winback.measure.money`'s rule, with the
  offer's terms from the campaign when given, else from the ledger row's render context.
- **Money** (`winback.measure.money`, docs/MONEY.md): realized offer cost of the treatment arm's
  redemptions (every one is caused by the campaign, also those used by customers who would have bought
  anyway), contact cost of every message really sent, incremental gross margin = incremental order value
  (before coupon discounts) × the campaign's gross margin, net incremental value = margin − offer cost −
  contact cost, ROI = net / (offer cost + contact cost). Incremental revenue (what customers paid) is
  reported beside it.
- **Statistics**: see `winback.measure.stats` (Newcombe CI + pooled z-test for return rates; Welch by
  default for revenue per customer, `revenue_method="bootstrap"` for the seeded bootstrap).
- **Breakdowns** by offer, value tier, lapse stage, likely reason, channel and cadence step are
  randomized comparisons too (holdout rows carry the offer/channel they would have had). The step
  breakdown re-times each unit at that step's contact: it compares customers who reached step n in
  each arm, which is descriptive — who reaches a follow-up depends on the earlier steps. Many
  subgroups mean many tests: a Holm-adjusted p-value is given per dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from winback.errors import DataError
from winback.measure import money, stats

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign

DEFAULT_BREAKDOWNS = ("offer", "value_tier", "lapse_stage", "likely_reason", "channel", "step")
MISSING_GROUP = "(none)"
_US_PER_DAY = 86_400_000_000


@dataclass
class MeasureResult:
    """Everything measured for one campaign: arms, uplift, money, breakdowns, curve and per-unit table."""

    campaign_id: str | None
    window_days: int
    as_of: pd.Timestamp | None
    arms: dict[str, dict]
    delivery: dict
    uplift: dict[str, dict]
    incremental_returns: dict
    incremental_revenue: dict
    offer_cost: float
    net_incremental_value: float
    roi: float | None
    revenue_method: str
    contact_cost: float = 0.0
    incremental_margin: dict = field(default_factory=dict)
    gross_margin: float = 1.0
    call_outcomes: dict = field(default_factory=dict)
    breakdowns: dict[str, pd.DataFrame] = field(default_factory=dict)
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)
    units: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The figures for machines (`winback measure --json`)."""
        out = {
            "campaign_id": self.campaign_id,
            "window_days": self.window_days,
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            "arms": _jsonable(self.arms),
            "delivery": _jsonable(self.delivery),
            "uplift": _jsonable(self.uplift),
            "incremental_returns": _jsonable(self.incremental_returns),
            "incremental_revenue": _jsonable(self.incremental_revenue),
            "offer_cost": _jsonable(self.offer_cost),
            "contact_cost": _jsonable(self.contact_cost),
            "total_cost": _jsonable(self.offer_cost + self.contact_cost),
            "gross_margin": _jsonable(self.gross_margin),
            "incremental_margin": _jsonable(self.incremental_margin),
            "net_incremental_value": _jsonable(self.net_incremental_value),
            "roi": _jsonable(self.roi),
            "call_outcomes": _jsonable(self.call_outcomes),
            "methods": {
                "return_rate": "Newcombe hybrid score (Wilson) 95% CI; pooled two-proportion z-test",
                "revenue_per_customer": (
                    "Welch t 95% CI and test" if self.revenue_method == "welch"
                    else "seeded percentile bootstrap 95% CI"
                ),
                "multiple_comparisons": "Holm-adjusted p-values within each breakdown dimension",
            },
            "notes": list(self.notes),
        }
        for dim, frame in self.breakdowns.items():
            out[f"by_{dim}"] = _records(frame)
        out.setdefault("by_offer", [])
        return out

    def table(self) -> pd.DataFrame:
        """One long table: the overall row and every breakdown row (`dimension`, `group`, figures)."""
        overall = _overall_row(self)
        frames = [overall] + [
            f.assign(dimension=dim).rename(columns={dim: "group"}) for dim, f in self.breakdowns.items()
        ]
        table = pd.concat(frames, ignore_index=True)
        table["group"] = table["group"].astype("string")
        lead = ["dimension", "group"]
        return table[lead + [c for c in table.columns if c not in lead]]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [_jsonable(r) for r in frame.to_dict("records")]


# -- inputs ------------------------------------------------------------------------------------------


def _utc(series: pd.Series, name: str) -> pd.Series:
    """Coerce a column to datetime64[ns, UTC]; naive values are taken as UTC (the ledger stores UTC)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    try:
        out = pd.to_datetime(series, utc=True, errors="raise", format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot read timestamps: {exc}", column=name) from None
    return out.astype("datetime64[ns, UTC]")


def _offer_params(ledger: pd.DataFrame, offers: dict[str, dict] | None = None) -> pd.DataFrame:
    """Each ledger row's offer cost terms (`money.TERM_COLUMNS`): the campaign's offer by id when given,
    else what the row's render context names.

    Called only for the ledger rows whose coupon was redeemed; their JSON is read by DuckDB in one
    vectorised pass. Unreadable JSON only loses the terms (the fallback then applies).
    """
    n = len(ledger)
    out = pd.DataFrame({name: np.full(n, np.nan) for name in money.TERM_COLUMNS}, index=ledger.index)
    keys = {"percent": "percent", "amount_off": "amount", "max_discount": "max_discount", "points": "points",
            "point_value": "point_value", "shipping_cost": "shipping_cost", "gift_cost": "gift_cost",
            "fixed_cost": "fixed_cost"}
    if "context" in ledger.columns and n:
        ctx = pd.DataFrame({"i": np.arange(n), "context": ledger["context"].astype("string").reset_index(drop=True)})
        paths = ", ".join(f"'$.offer.{keys[name]}'" for name in money.TERM_COLUMNS)
        casts = ", ".join(f"TRY_CAST(v[{i + 1}] AS DOUBLE) AS {name}" for i, name in enumerate(money.TERM_COLUMNS))
        con = duckdb.connect()
        try:
            con.register("ctx", ctx)
            got = con.execute(
                f"""SELECT i, {casts}
                   FROM (SELECT i, CASE WHEN json_valid(context) THEN json_extract_string(context, [{paths}]) END AS v
                         FROM ctx) ORDER BY i"""
            ).df()
        finally:
            con.close()
        rows = got["i"].to_numpy()
        for name in money.TERM_COLUMNS:
            out.iloc[rows, out.columns.get_loc(name)] = got[name].to_numpy(dtype=float, na_value=np.nan)
        # `percent` may be written 15 or 0.15.
        pct = out["percent"].to_numpy()
        out["percent"] = np.where(pct > 1, pct / 100.0, pct)
    if offers:
        ids = ledger["offer"].astype("string").to_numpy(dtype=object, na_value=None)
        for pos, offer_id in enumerate(ids):
            terms = offers.get(offer_id) if offer_id is not None else None
            if terms is not None:
                out.iloc[pos] = [np.nan if terms[c] is None else float(terms[c]) for c in money.TERM_COLUMNS]
    return out


def prepare_ledger(ledger_rows: pd.DataFrame) -> pd.DataFrame:
    """Validate and normalise ledger rows for measurement (arms, steps, timestamps, offer fields)."""
    needed = ["customer_id", "arm", "send_at_utc"]
    missing = [c for c in needed if c not in ledger_rows.columns]
    if missing:
        raise DataError(f"ledger rows lack column(s) {missing}")
    arm = ledger_rows["arm"].astype("string")
    in_experiment = arm.isin(["treatment", "holdout"]).to_numpy(dtype=bool)
    bad = arm[~in_experiment & ~arm.eq("excluded").fillna(False).to_numpy(dtype=bool)]
    if len(bad):
        raise DataError(f"unknown arm value(s) {sorted(map(str, bad.unique()))[:5]}", column="arm")
    # Copy-on-write: a shallow frame; only filter (a copy of every column) when there is something to drop.
    led = ledger_rows.assign(arm=arm) if in_experiment.all() else ledger_rows.assign(arm=arm)[in_experiment]
    if "step" not in led.columns:
        led["step"] = 1
    led["step"] = pd.to_numeric(led["step"], errors="coerce")
    if led["step"].isna().any():
        raise DataError("step must be an integer", column="step")
    led["step"] = led["step"].astype("int64")
    led["customer_id"] = led["customer_id"].astype("string")
    led["send_at_utc"] = _utc(led["send_at_utc"], "send_at_utc")
    if led["send_at_utc"].isna().any():
        n = int(led["send_at_utc"].isna().sum())
        raise DataError(f"{n} ledger row(s) without send_at_utc: cannot tell when the window starts",
                        column="send_at_utc")
    led["sent_at"] = _utc(led["sent_at"], "sent_at") if "sent_at" in led else pd.NaT
    led["state"] = led["state"].astype("string") if "state" in led else pd.NA
    repeated = led["customer_id"].duplicated(keep=False).to_numpy()
    pairs = led.loc[repeated, ["customer_id", "arm"]].drop_duplicates()
    both = pairs["customer_id"].duplicated(keep=False)
    if both.any():
        who = pairs.loc[both, "customer_id"].unique()[:3].tolist()
        raise DataError(f"customer(s) {who} appear in both arms of one campaign", column="arm")
    for col in ("offer", "offer_kind", "coupon_code", "value_tier", "lapse_stage", "likely_reason", "channel",
                "delivery_status", "campaign_id"):
        if col not in led.columns:
            led[col] = pd.NA
        led[col] = led[col].astype("string")
    led["really_sent"] = (led["state"] == "sent").fillna(False).astype(bool) & led["sent_at"].notna()
    # Treatment rows start their window at the real send when there was one; holdout at the plan.
    led["contact_at"] = led["send_at_utc"].where(~led["really_sent"], led["sent_at"])
    led.attrs["one_row_per_customer"] = not repeated.any()
    # Stable by step: each customer's first step comes first (customer order is kept as given).
    if not led["step"].is_monotonic_increasing:
        led = led.sort_values("step", kind="stable")
    return led.reset_index(drop=True)


# -- attribution (DuckDB) --------------------------------------------------------------------------


def _orders_relation(con: duckdb.DuckDBPyConnection, orders) -> str:
    """Register the orders (frame or file) as view `o` with epoch-microsecond times; return its columns."""
    if isinstance(orders, str | Path):
        path = str(orders)
        if not Path(path).exists():
            raise DataError("file not found", file=path)
        suffix = Path(path).suffix.lower()
        if suffix in (".parquet", ".pq"):
            source = f"read_parquet('{_sql_str(path)}')"
        elif suffix == ".csv":
            # All text: ids like 00123 must stay text; numbers and times are cast below.
            source = f"read_csv('{_sql_str(path)}', header=true, all_varchar=true)"
        else:
            raise DataError(f"unsupported orders file type {suffix!r}; use .csv or .parquet", file=path)
        try:
            cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        except duckdb.Error as exc:
            raise DataError(f"cannot read orders: {str(exc).splitlines()[0]}", file=path) from None
    else:
        if not isinstance(orders, pd.DataFrame):
            raise DataError("orders must be a DataFrame or a path to a CSV/Parquet file")
        frame = orders
        if "ordered_at" in frame.columns:
            frame = frame.assign(ordered_at=_utc(frame["ordered_at"], "ordered_at"))
        con.register("orders_df", frame)
        source = "orders_df"
        cols = list(frame.columns)
    missing = [c for c in ("customer_id", "ordered_at", "amount") if c not in cols]
    if missing:
        raise DataError(f"orders lack column(s) {missing}")
    order_id = "CAST(order_id AS VARCHAR)" if "order_id" in cols else "NULL"
    coupon = "CAST(coupon_code AS VARCHAR)" if "coupon_code" in cols else "CAST(NULL AS VARCHAR)"
    discount = "coalesce(TRY_CAST(discount AS DOUBLE), 0)" if "discount" in cols else "0.0"
    # Naive timestamps in a file are read as UTC (the orders contract is UTC).
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW o AS SELECT CAST(customer_id AS VARCHAR) AS customer_id,
            {order_id} AS order_id, epoch_us(CAST(ordered_at AS TIMESTAMPTZ)) AS t,
            CAST(amount AS DOUBLE) AS amount, {coupon} AS coupon_code, {discount} AS discount FROM {source}"""
    )
    return source


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def attribute_orders(
    units: pd.DataFrame, coupons: pd.DataFrame, orders, *, led: pd.DataFrame, window_days: float,
    as_of: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Per unit (aligned with `units`): orders, revenue (paid), order value (before coupon discounts), first
    order day, coupons redeemed, their realized cost and how many of them were costed without the offer's terms.

    `units`: `customer_id`, `contact_at` (UTC), one row per unit. `coupons`: `customer_id`,
    `coupon_code`, `ci` (the ledger row in `led` that gave the code). Orders count when
    contact_at ≤ ordered_at < contact_at + window_days (and ≤ as_of).
    """
    start = units["contact_at"].to_numpy(dtype="datetime64[ns]").astype("int64") // 1000
    end = start + int(round(window_days * _US_PER_DAY))
    if as_of is not None:
        end = np.minimum(end, as_of.tz_convert("UTC").value // 1000 + 1)
    n = len(units)
    u = pa.table({"unit": np.arange(n, dtype=np.int64),
                  "customer_id": pa.array(units["customer_id"].astype("string").array, type=pa.string()),
                  "t0": start, "t1": end})
    c = pa.table({"customer_id": pa.array(coupons["customer_id"].astype("string").array, type=pa.string()),
                  "coupon_code": pa.array(coupons["coupon_code"].astype("string").array, type=pa.string()),
                  "ci": coupons["ci"].to_numpy(dtype=np.int64)})
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        _orders_relation(con, orders)
        con.register("u", u)
        con.register("c", c)
        con.execute(
            """CREATE TEMP TABLE hits AS
               SELECT u.unit, o.t - u.t0 AS dt, o.amount, o.discount, c.ci
               FROM u JOIN o ON o.customer_id = u.customer_id AND o.t >= u.t0 AND o.t < u.t1
               LEFT JOIN c ON c.customer_id = o.customer_id AND c.coupon_code = o.coupon_code"""
        )
        per_unit = con.execute(
            "SELECT unit, count(*) AS orders, sum(amount) AS revenue, sum(amount + discount) AS order_value, "
            "min(dt) AS first_dt, count(ci) AS coupons FROM hits GROUP BY unit"
        ).fetchnumpy()
        redeemed = con.execute("SELECT unit, ci, amount, discount FROM hits WHERE ci IS NOT NULL").df()
    except duckdb.Error as exc:
        raise DataError(f"cannot join orders: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    idx = np.asarray(per_unit["unit"], dtype=np.int64)
    out = pd.DataFrame({"orders": np.zeros(n, dtype=np.int64), "revenue": np.zeros(n), "order_value": np.zeros(n),
                        "first_order_days": np.full(n, np.nan), "coupons_redeemed": np.zeros(n, dtype=np.int64)})
    out.loc[idx, "orders"] = np.asarray(per_unit["orders"], dtype=np.int64)
    out.loc[idx, "revenue"] = np.asarray(per_unit["revenue"], dtype=float)
    out.loc[idx, "order_value"] = np.asarray(per_unit["order_value"], dtype=float)
    out.loc[idx, "first_order_days"] = np.asarray(per_unit["first_dt"], dtype=float) / _US_PER_DAY
    out.loc[idx, "coupons_redeemed"] = np.asarray(per_unit["coupons"], dtype=np.int64)
    costs, known = redemption_costs(led, redeemed)
    owner = redeemed["unit"].to_numpy(dtype=np.int64)
    out["coupon_cost"] = np.bincount(owner, weights=costs, minlength=n) if len(redeemed) else np.zeros(n)
    out["coupons_estimated"] = np.bincount(owner, weights=~known, minlength=n).astype(np.int64) \
        if len(redeemed) else np.zeros(n, dtype=np.int64)
    out["returned"] = out["orders"].to_numpy() > 0
    return out


# -- measurement ---------------------------------------------------------------------------------


def _coupon_table(led: pd.DataFrame) -> pd.DataFrame:
    """The codes each customer was given: customer_id, coupon_code and `ci`, the ledger row it came from."""
    has = led["coupon_code"].notna().to_numpy(dtype=bool)
    c = pd.DataFrame({"customer_id": led["customer_id"][has].reset_index(drop=True),
                      "coupon_code": led["coupon_code"][has].reset_index(drop=True),
                      "ci": np.flatnonzero(has)})
    if not led.attrs.get("one_row_per_customer"):
        c = c.drop_duplicates(["customer_id", "coupon_code"]).reset_index(drop=True)
    return c


def redemption_costs(led: pd.DataFrame, redeemed: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(cost, known) of each redeemed coupon order (`redeemed`: ci, amount, discount): `money.redemption_costs`."""
    if redeemed.empty:
        return np.zeros(0), np.zeros(0, dtype=bool)
    rows = np.unique(redeemed["ci"].to_numpy())
    params = _offer_params(led.iloc[rows].reset_index(drop=True), led.attrs.get("offer_terms"))
    at = np.searchsorted(rows, redeemed["ci"].to_numpy())
    ci = redeemed["ci"].to_numpy()
    kind = led["offer_kind"].to_numpy(dtype=object, na_value=None)[ci]
    expected = pd.to_numeric(led["expected_cost"], errors="coerce").to_numpy(dtype=float)[ci] \
        if "expected_cost" in led.columns else np.zeros(len(ci))
    return money.redemption_costs(kind, redeemed["amount"].to_numpy(dtype=float),
                                  redeemed["discount"].to_numpy(dtype=float),
                                  params.iloc[at].reset_index(drop=True), expected)


def _customer_units(led: pd.DataFrame) -> pd.DataFrame:
    cols = ["campaign_id", "customer_id", "arm", "offer", "offer_kind", "coupon_code", "value_tier", "lapse_stage",
            "likely_reason", "channel"]
    if led.attrs.get("one_row_per_customer"):
        # No follow-up steps yet: each row is a customer (the common case, and the big one).
        units = led[cols + ["contact_at", "really_sent", "contact_cost"]].rename(columns={"really_sent": "contacted"})
        units["delivered"] = units["contacted"] & ~led["delivery_status"].eq("bounced").fillna(False).to_numpy()
        units["steps"] = led["step"].to_numpy()
        units.insert(0, "unit", np.arange(len(units), dtype="int64"))
        return units
    first = led.drop_duplicates("customer_id", keep="first")  # sorted by step: the first step's attributes
    g = led.groupby("customer_id", sort=False)
    contact = g["contact_at"].min()
    sent = g["really_sent"].any()
    bounced = led["delivery_status"].eq("bounced").fillna(False).groupby(led["customer_id"], sort=False).any()
    units = first[cols].copy()
    units["contact_at"] = units["customer_id"].map(contact)
    units["contacted"] = units["customer_id"].map(sent).astype(bool)
    units["delivered"] = units["contacted"] & ~units["customer_id"].map(bounced).astype(bool)
    units["steps"] = units["customer_id"].map(g["step"].max()).astype("int64")
    units["contact_cost"] = units["customer_id"].map(g["contact_cost"].sum()).astype("float64")
    units = units.reset_index(drop=True)
    units.insert(0, "unit", np.arange(len(units), dtype="int64"))
    return units


def _arm_summary(units: pd.DataFrame, arm: str) -> dict:
    mask = units["arm"].eq(arm).to_numpy(dtype=bool)
    n = int(mask.sum())

    def total(col):
        return units[col].to_numpy()[mask].sum()

    returned = int(total("returned"))
    revenue = float(total("revenue"))
    order_value = float(total("order_value"))
    return {
        "n": n,
        "returned": returned,
        "return_rate": returned / n if n else math.nan,
        "orders": int(total("orders")),
        "revenue": revenue,
        "revenue_per_customer": revenue / n if n else math.nan,
        "order_value": order_value,
        "order_value_per_customer": order_value / n if n else math.nan,
        "coupons_redeemed": int(total("coupons_redeemed")),
        "coupon_cost": float(total("coupon_cost")),
        "contact_cost": float(total("contact_cost")),
    }


SUMS = ("n", "ret", "rev", "rev2", "ov", "ov2", "red", "cost", "contact")


def _group_sums(units: pd.DataFrame, dims: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per dimension and group and arm: n, returned, revenue and order value (with squares), coupons, their
    cost and contact cost (one DuckDB pass)."""
    dims = list(dims)
    if not dims or units.empty:
        return {d: {"labels": []} for d in dims}
    cols = {}
    for i, d in enumerate(dims):
        values = units[d] if d in units else pd.Series(pd.NA, index=units.index, dtype="string")
        cols[f"d{i}"] = pa.array(values.astype("string").array, type=pa.string())
    table = pa.table({**cols, "t": units["arm"].eq("treatment").to_numpy(dtype=bool),
                      "r": units["returned"].to_numpy(dtype=float), "rev": units["revenue"].to_numpy(dtype=float),
                      "ov": units["order_value"].to_numpy(dtype=float),
                      "red": units["coupons_redeemed"].to_numpy(dtype=float),
                      "cost": units["coupon_cost"].to_numpy(dtype=float),
                      "contact": units["contact_cost"].to_numpy(dtype=float)})
    sets = ", ".join(f"(d{i}, t)" for i in range(len(dims)))
    flags = ", ".join(f"GROUPING(d{i}) AS g{i}" for i in range(len(dims)))
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        con.register("x", table)
        got = con.execute(
            f"SELECT {flags}, {', '.join(f'd{i}' for i in range(len(dims)))}, t, count(*) AS n, sum(r) AS ret, "
            f"sum(rev) AS rev, sum(rev * rev) AS rev2, sum(ov) AS ov, sum(ov * ov) AS ov2, sum(red) AS red, "
            f"sum(cost) AS cost, sum(contact) AS contact FROM x GROUP BY GROUPING SETS ({sets})"
        ).df()
    finally:
        con.close()
    out = {}
    for i, d in enumerate(dims):
        part = got[got[f"g{i}"] == 0]
        label = part[f"d{i}"].astype("string").fillna(MISSING_GROUP).astype(str)
        labels = sorted(set(label), key=lambda v: (v == MISSING_GROUP, _sort_key(v)))
        pos = pd.Index(labels).get_indexer(label)
        treated = part["t"].to_numpy(dtype=bool)
        sums = {"labels": labels}
        for name in SUMS:
            values = part[name].to_numpy(dtype=float)
            t_arr, h_arr = np.zeros(len(labels)), np.zeros(len(labels))
            np.add.at(t_arr, pos[treated], values[treated])
            np.add.at(h_arr, pos[~treated], values[~treated])
            sums[name] = (t_arr, h_arr)
        out[d] = sums
    return out


def _sort_key(value: str):
    """Numbers (cadence steps) in numeric order, everything else alphabetically."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _welch(s1: float, s2: float, n: float) -> tuple[float, float]:
    """(mean, sample variance) from a sum and a sum of squares over n values."""
    mean = s1 / n if n else math.nan
    var = (s2 - n * mean * mean) / (n - 1) if n > 1 else math.nan
    return mean, max(var, 0.0) if var == var else var


def _group_comparisons(sums: dict, dim: str, confidence: float, gross_margin: float = 1.0) -> pd.DataFrame:
    """Treated vs holdout per value of `dim`: counts, rates, Newcombe CI, Welch revenue CI, Holm p, money."""
    groups = sums["labels"]
    if not groups:
        return pd.DataFrame()
    (n_t, n_h), (r_t, r_h) = sums["n"], sums["ret"]
    rr = stats.diff_proportions_array(r_t, n_t, r_h, n_h, confidence)
    rows = []
    for i, g in enumerate(groups):
        mt, vt = _welch(sums["rev"][0][i], sums["rev2"][0][i], n_t[i])
        mh, vh = _welch(sums["rev"][1][i], sums["rev2"][1][i], n_h[i])
        w = stats.welch_from_moments(mt, vt, int(n_t[i]), mh, vh, int(n_h[i]), confidence)
        ot, ovt = _welch(sums["ov"][0][i], sums["ov2"][0][i], n_t[i])
        oh, ovh = _welch(sums["ov"][1][i], sums["ov2"][1][i], n_h[i])
        ov = stats.welch_from_moments(ot, ovt, int(n_t[i]), oh, ovh, int(n_h[i]), confidence)
        inc_rev = w.diff * n_t[i] if n_t[i] else math.nan
        rows.append({
            dim: g,
            "n_treated": int(n_t[i]), "n_holdout": int(n_h[i]),
            "returned_treated": int(r_t[i]), "returned_holdout": int(r_h[i]),
            "return_rate_treated": rr["p_arm"][i], "return_rate_holdout": rr["p_control"][i],
            "uplift": rr["diff"][i], "ci_low": rr["ci_low"][i], "ci_high": rr["ci_high"][i],
            "p_value": rr["p_value"][i],
            "revenue_per_customer_treated": mt, "revenue_per_customer_holdout": mh,
            "revenue_uplift": w.diff, "revenue_ci_low": w.ci_low, "revenue_ci_high": w.ci_high,
            "revenue_p_value": w.p_value,
            "incremental_returns": rr["diff"][i] * n_t[i] if n_t[i] else math.nan,
            "incremental_revenue": inc_rev,
            "coupons_redeemed": int(sums["red"][0][i]),
            **money.money_columns(ov.diff, ov.ci_low, ov.ci_high, int(n_t[i]), gross_margin=gross_margin,
                                  offer_cost=float(sums["cost"][0][i]), contact_cost=float(sums["contact"][0][i])),
        })
    out = pd.DataFrame(rows)
    if len(out):
        out.insert(out.columns.get_loc("p_value") + 1, "p_holm", stats.holm_adjust(out["p_value"]))
    return out


def cumulative_return_curve(units: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """Share of each arm that has returned by the end of day d after contact, d = 1..window_days."""
    days = np.arange(1, int(math.ceil(window_days)) + 1)
    rows = []
    for arm in ("treatment", "holdout"):
        a = units[units["arm"] == arm]
        first = a["first_order_days"].to_numpy(dtype=float)
        first = np.sort(first[np.isfinite(first)])
        n = len(a)
        counts = np.searchsorted(first, days, side="left")  # returned strictly before day d ends
        rows.append(pd.DataFrame({"day": days, "arm": arm, "returned": counts,
                                  "cumulative_return_rate": counts / n if n else np.nan}))
    return pd.concat(rows, ignore_index=True)


def measure_campaign(
    ledger_rows: pd.DataFrame,
    orders,
    *,
    window_days: int,
    as_of: pd.Timestamp | None = None,
    by: Sequence[str] = DEFAULT_BREAKDOWNS,
    confidence: float = 0.95,
    revenue_method: str = "welch",
    seed: int = 0,
    campaign: Campaign | None = None,
) -> MeasureResult:
    """Measure one campaign's ledger rows against orders: per-arm figures, uplift with CIs, money, breakdowns.

    `campaign` (its definition) gives the offers' cost terms, the gross margin and the contact costs; without
    it the terms come from the ledger rows' contexts, the margin is 100 % and contacts cost nothing. An
    `sms_segments` column on the ledger rows prices each SMS by its segments (1 when absent).
    """
    if not window_days or window_days <= 0:
        raise DataError(f"the attribution window must be a positive number of days, got {window_days}")
    if revenue_method not in ("welch", "bootstrap"):
        raise DataError(f"unknown revenue method {revenue_method!r}; use 'welch' or 'bootstrap'")
    led = prepare_ledger(ledger_rows)
    if led.empty:
        raise DataError("no treatment or holdout rows to measure")
    campaigns = led["campaign_id"].dropna().unique()
    if len(campaigns) > 1:
        raise DataError(f"ledger rows of several campaigns {sorted(map(str, campaigns))[:5]}; measure one at a time")
    campaign_id = str(campaigns[0]) if len(campaigns) else None
    if as_of is not None:
        as_of = pd.Timestamp(as_of)
        as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    notes: list[str] = []
    gross_margin, rates = 1.0, {}
    if campaign is not None:
        gross_margin, rates = campaign.economics.gross_margin, dict(campaign.economics.contact_costs)
        led.attrs["offer_terms"] = {o.id: money.offer_terms(o) for o in campaign.offers}
    else:
        notes.append("no campaign definition given: gross margin 100 % and no contact costs assumed")
    led["contact_cost"] = money.contact_costs(led["channel"], led["really_sent"].to_numpy(), rates,
                                              led["sms_segments"] if "sms_segments" in led.columns else None)
    coupons = _coupon_table(led)
    units = _customer_units(led)
    outcome = attribute_orders(units, coupons, orders, led=led, window_days=window_days, as_of=as_of)
    units = pd.concat([units.reset_index(drop=True), outcome], axis=1)

    arms = {arm: _arm_summary(units, arm) for arm in ("treatment", "holdout")}
    t, h = arms["treatment"], arms["holdout"]
    if t["n"] == 0 or h["n"] == 0:
        notes.append("one arm is empty: no uplift can be estimated")
    rr = stats.diff_proportions(t["returned"], t["n"], h["returned"], h["n"], confidence)
    rev_t = units.loc[units["arm"] == "treatment", "revenue"].to_numpy()
    rev_h = units.loc[units["arm"] == "holdout", "revenue"].to_numpy()
    rev = stats.diff_means(rev_t, rev_h, confidence=confidence, method=revenue_method, seed=seed)
    treated = units["arm"].eq("treatment").to_numpy(dtype=bool)
    value = units["order_value"].to_numpy(dtype=float)
    ov = stats.diff_means(value[treated], value[~treated], confidence=confidence, method=revenue_method, seed=seed)
    n_t = t["n"]
    inc_revenue = rev.diff * n_t
    figures = money.money_columns(ov.diff, ov.ci_low, ov.ci_high, n_t, gross_margin=gross_margin,
                                  offer_cost=t["coupon_cost"], contact_cost=t["contact_cost"])
    estimated = int(units["coupons_estimated"].to_numpy()[treated].sum())
    if estimated:
        notes.append(f"{estimated} redeemed coupon(s) costed at the recorded discount or the plan's expected cost: "
                     "their offer's terms are in neither the campaign nor the ledger context")
    tr = units[units["arm"] == "treatment"]
    delivery = {
        "treated": n_t,
        "contacted": int(tr["contacted"].sum()),
        "delivered": int(tr["delivered"].sum()),
        "delivery_rate": float(tr["delivered"].mean()) if n_t else math.nan,
        "contact_rate": float(tr["contacted"].mean()) if n_t else math.nan,
    }
    if as_of is not None:
        ends = units["contact_at"] + pd.Timedelta(days=window_days)
        complete = float((ends <= as_of).mean())
        delivery["window_complete_share"] = complete
        if complete < 1:
            notes.append(f"{1 - complete:.0%} of customers' attribution windows end after as_of "
                         f"{as_of.isoformat()}: their returns are counted only up to as_of")
    breakdowns = {}
    plain = [d for d in by if d != "step"]
    sums = _group_sums(units, plain)
    for dim in by:
        if dim == "step":
            breakdowns["step"] = _step_breakdown(led, units, coupons, orders, window_days, as_of, confidence,
                                                 gross_margin)
        else:
            breakdowns[dim] = _group_comparisons(sums[dim], dim, confidence, gross_margin)
    if len(breakdowns):
        notes.append("Breakdowns test many subgroups; use p_holm (Holm-adjusted within each dimension) "
                     "before calling a subgroup difference real.")
    return MeasureResult(
        campaign_id=campaign_id,
        window_days=window_days,
        as_of=as_of,
        arms=arms,
        delivery=delivery,
        uplift={"return_rate": rr.to_dict(), "revenue_per_customer": rev.to_dict()},
        incremental_returns={"estimate": rr.diff * n_t, "ci_low": rr.ci_low * n_t, "ci_high": rr.ci_high * n_t},
        incremental_revenue={"estimate": inc_revenue, "ci_low": rev.ci_low * n_t, "ci_high": rev.ci_high * n_t},
        offer_cost=figures["offer_cost"],
        net_incremental_value=figures["net_incremental_value"],
        roi=figures["roi"],
        revenue_method=revenue_method,
        contact_cost=figures["contact_cost"],
        incremental_margin={"estimate": figures["incremental_margin"], "ci_low": figures["margin_ci_low"],
                            "ci_high": figures["margin_ci_high"],
                            "order_value_uplift": ov.to_dict()},
        gross_margin=gross_margin,
        breakdowns=breakdowns,
        curve=cumulative_return_curve(units, window_days),
        units=units,
        notes=notes,
    )


def _step_breakdown(led, units, coupons, orders, window_days, as_of, confidence, gross_margin) -> pd.DataFrame:
    """Per cadence step: customers with a row at that step, their window timed from that step's contact; the
    step's own contact cost."""
    steps = led[["customer_id", "arm", "step", "contact_at", "contact_cost"]].reset_index(drop=True)
    # Rows whose window is the customer's own (their first step) reuse the customer-level attribution;
    # only later steps need a join of their own.
    if led.attrs.get("one_row_per_customer"):
        # One row per customer (no follow-ups yet): the customer-level attribution is the step's.
        return _group_comparisons(_group_sums(units.assign(step=units["steps"]), ["step"])["step"], "step",
                                  confidence, gross_margin)
    known = units.set_index("customer_id")["contact_at"].reindex(steps["customer_id"])
    same = (steps["contact_at"].to_numpy(dtype="datetime64[ns]") == known.to_numpy(dtype="datetime64[ns]"))
    reused = steps[same].merge(units[["customer_id", "orders", "revenue", "order_value", "first_order_days",
                                      "coupons_redeemed", "coupon_cost", "returned"]], on="customer_id", how="left")
    later = steps[~same].reset_index(drop=True)
    if len(later):
        later = pd.concat([later, attribute_orders(later, coupons, orders, led=led, window_days=window_days,
                                                   as_of=as_of)], axis=1)
        reused = pd.concat([reused, later], ignore_index=True)
    return _group_comparisons(_group_sums(reused, ["step"])["step"], "step", confidence, gross_margin)


def _overall_row(result: MeasureResult) -> pd.DataFrame:
    t, h = result.arms["treatment"], result.arms["holdout"]
    rr, rev = result.uplift["return_rate"], result.uplift["revenue_per_customer"]
    return pd.DataFrame([{
        "dimension": "overall", "group": "all",
        "n_treated": t["n"], "n_holdout": h["n"], "returned_treated": t["returned"],
        "returned_holdout": h["returned"], "return_rate_treated": t["return_rate"],
        "return_rate_holdout": h["return_rate"], "uplift": rr["diff"], "ci_low": rr["ci_low"],
        "ci_high": rr["ci_high"], "p_value": rr["p_value"], "p_holm": rr["p_value"],
        "revenue_per_customer_treated": t["revenue_per_customer"],
        "revenue_per_customer_holdout": h["revenue_per_customer"], "revenue_uplift": rev["diff"],
        "revenue_ci_low": rev["ci_low"], "revenue_ci_high": rev["ci_high"], "revenue_p_value": rev["p_value"],
        "incremental_returns": result.incremental_returns["estimate"],
        "incremental_revenue": result.incremental_revenue["estimate"],
        "coupons_redeemed": t["coupons_redeemed"],
        "incremental_margin": result.incremental_margin.get("estimate"),
        "margin_ci_low": result.incremental_margin.get("ci_low"),
        "margin_ci_high": result.incremental_margin.get("ci_high"),
        "offer_cost": result.offer_cost, "contact_cost": result.contact_cost,
        "total_cost": result.offer_cost + result.contact_cost,
        "net_incremental_value": result.net_incremental_value, "roi": result.roi,
    }])
