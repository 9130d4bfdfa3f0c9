"""Lapse segmentation: each customer's rhythm, P(alive), value, lapse stage and likely reason.

`segment_customers` is pure (frames in, frame out, `as_of` passed in) and vectorized: the order
level work (10M rows) is one Arrow dictionary encoding of the customer ids (each run of equal
consecutive order ids hashed once), one stable sort by (customer, day) — skipped when the orders
already come in that order — and `bincount`/`reduceat` aggregates into numpy arrays; the customer
level work (1M rows) is numpy column arithmetic on integer codes, turned into `str` columns once
at the end. No per-customer Python loop.

How each column is made (every threshold lives in `SegmentParams`):

- A *transaction* is a calendar day (in `params.timezone`) with at least one order, as in the
  BG/NBD literature; `frequency` = transactions − 1 (repeat purchases).
- Own rhythm, shrunk toward the population (Gamma-Poisson / empirical Bayes). A customer's purchase
  rate λ gets a Gamma prior with mean 1/prior_gap and the strength of `rhythm_prior_strength` (k0)
  pseudo-gaps; after x observed gaps spanning t_x days the posterior mean is
      λ̂ = (k0 + x) / (k0 · prior_gap + t_x),    expected_gap_days = 1 / λ̂.
  prior_gap = population gap × `tier_patience[value_tier]`; the population gap is the median of the
  repeat buyers' own mean gaps t_x / x. A single order therefore gets the (tier-adjusted)
  population gap, and a valuable customer with thin data is given more patience, not written off.
  `overdue_ratio` = recency_days / expected_gap_days.
- `frequency_trend`: repeat-purchase rate in the last `trend_window_days` vs the window before it,
  each a Gamma-Poisson posterior mean with prior mean λ̂ and strength `trend_prior_strength`
  (exposure counted from the first purchase), so thin data gives ≈1; < 1 means falling.
- BG/NBD (fit in days on all buyers, `winback.segments.models`): `p_alive`,
  `expected_purchases_90d` (`prediction_days`). Gamma-Gamma on the mean transaction value over
  *all* transactions (the literature drops the first purchase; we keep it so that a one-order
  5,000 ¥ customer's value counts): `expected_order_value`.
- `clv` = margin × expected_order_value × Σ_k ΔE[Y(t_k)] · (1 + annual_discount_rate)^(−t_k/365),
  t_k = `clv_step_days`, 2·step, … up to `clv_horizon_days`: discounted expected gross margin.
- `value_tier` (customer pyramid): by CLV rank among customers with positive value (quantile mode:
  top `tier_shares[0]` platinum, next gold, next iron, rest lead) or by absolute CLV floors.
  Negative/zero-value customers (total spend ≤ 0 or CLV ≤ 0) and customers without orders are lead.
- `lapse_stage` from overdue_ratio: active < at_risk ≤ … thresholds `stage_thresholds`
  (default 1.0 / 1.5 / 2.5 / 5.0 → at_risk / lapsing / lapsed / lost); also lost when
  p_alive < `lost_p_alive` and the customer is overdue (ratio ≥ first threshold). `no_orders` for
  customers without an order up to as_of.
- Reasons: `complaint_open` (an unresolved complaint created in the last `complaint_window_days`),
  `complaints_recent` (complaints in that window), `discount_share` (share of orders with
  discount > 0; price-sensitive when ≥ `price_discount_share` over ≥ `price_min_orders` orders),
  `top_category` (most ordered category over the whole history), `category_drop` (the top category
  before the last `category_window_days` — at least `category_min_orders` orders — has no order in
  that window although the customer's own rate there predicts ≥ `category_expected_min`, while
  they did buy something else in the window: buying elsewhere, the competitor signal),
  `manager_departed` (account_manager in the departed list).
  `likely_reason` for slipping customers (stage at_risk … lost), first match in the order
  service > manager_left > price > competitor > forgotten; `none` for active and no_orders.

Orders after `as_of` are ignored (they are the future of a backtest); orders of customers not in
`customers` are ignored (`winback.sources.load_inputs` quarantines them before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from winback.errors import ConfigError, DataError
from winback.segments.models import (
    BgNbdParams,
    GammaGammaParams,
    bgnbd_conditional_expected_purchases,
    bgnbd_hypergeometric_term,
    bgnbd_p_alive,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
)
from winback.vocab import LAPSE_STAGES, REASONS, VALUE_TIERS

SEGMENT_COLUMNS = (
    "customer_id", "n_orders", "n_transactions", "frequency", "first_order_at", "last_order_at",
    "recency_days", "tenure_days", "monetary", "total_spend", "expected_gap_days", "overdue_ratio",
    "frequency_trend", "p_alive", "expected_purchases_90d", "expected_order_value", "clv",
    "value_tier", "lapse_stage", "complaint_open", "complaints_recent", "discount_share",
    "top_category", "category_drop", "manager_departed", "likely_reason",
)
# Columns that are NaN/NaT exactly for customers without orders (everything else is never missing,
# except top_category, NA when the customer's orders carry no category).
NAN_FOR_NO_ORDERS = (
    "first_order_at", "last_order_at", "recency_days", "tenure_days", "expected_gap_days",
    "overdue_ratio", "frequency_trend", "p_alive", "expected_order_value",
)
SLIPPING_STAGES = ("at_risk", "lapsing", "lapsed", "lost")
# Customer × category count matrices up to this many cells are dense (bincount); beyond, sparse.
_DENSE_CATEGORY_CELLS = 20_000_000


class SegmentParams(BaseModel):
    """Every threshold and modelling choice of the segmentation (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = Field("Asia/Shanghai", description="calendar days of transactions are local to this zone")
    # Own rhythm
    rhythm_prior_strength: float = Field(2.0, gt=0, description="k0: pseudo-gaps of the population prior")
    tier_patience: dict[str, float] = Field(
        default_factory=lambda: {"platinum": 1.5, "gold": 1.25, "iron": 1.0, "lead": 1.0},
        description="multiplier of the prior gap per value tier (thin-data patience for valuable customers)",
    )
    fallback_gap_days: float = Field(90.0, gt=0, description="population gap when nobody has bought twice")
    # Trend
    trend_window_days: int = Field(180, gt=0, description="recent window; the earlier window has the same length")
    trend_prior_strength: float = Field(1.0, gt=0, description="pseudo-purchases pulling the trend toward 1")
    # Models and CLV
    prediction_days: int = Field(90, gt=0, description="horizon of expected_purchases_90d")
    clv_horizon_days: int = Field(365, gt=0)
    clv_step_days: int = Field(90, gt=0, description="discounting step; each step costs one hyp2f1 pass")
    annual_discount_rate: float = Field(0.10, ge=0)
    margin: float = Field(0.30, gt=0, le=1, description="gross margin applied to expected revenue")
    fit_unit: Literal["day", "week"] = Field("day", description="time unit of the BG/NBD fit (alpha is in it)")
    fit_ridge: float = Field(1.0, ge=0, description="weak prior on log-parameters (finite fits on tiny data)")
    gamma_gamma_max_fit_customers: int = Field(200_000, gt=0, description="seeded sample cap for the GG fit")
    fit_seed: int = 0
    # Value tiers
    tier_method: Literal["quantile", "absolute"] = "quantile"
    tier_shares: tuple[float, float, float] = Field(
        (0.05, 0.15, 0.40), description="platinum, gold, iron shares of positive-value customers (rest lead)"
    )
    tier_clv_floors: tuple[float, float, float] = Field(
        (5000.0, 1000.0, 200.0), description="absolute CLV floors of platinum, gold, iron (tier_method=absolute)"
    )
    # Lapse stages
    stage_thresholds: tuple[float, float, float, float] = Field(
        (1.0, 1.5, 2.5, 5.0), description="overdue_ratio where at_risk, lapsing, lapsed, lost start"
    )
    lost_p_alive: float = Field(0.1, ge=0, le=1, description="overdue and P(alive) below this → lost")
    # Reasons
    complaint_window_days: int = Field(180, gt=0)
    price_discount_share: float = Field(0.5, ge=0, le=1)
    price_min_orders: int = Field(2, ge=1)
    category_window_days: int = Field(180, gt=0)
    category_min_orders: int = Field(2, ge=1)
    category_expected_min: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SegmentParams:
        if sorted(self.stage_thresholds) != list(self.stage_thresholds):
            raise ValueError("stage_thresholds must be increasing")
        if sum(self.tier_shares) > 1 or min(self.tier_shares) < 0:
            raise ValueError("tier_shares must be non-negative and sum to at most 1")
        if list(self.tier_clv_floors) != sorted(self.tier_clv_floors, reverse=True):
            raise ValueError("tier_clv_floors must be decreasing (platinum, gold, iron)")
        missing = set(VALUE_TIERS) - set(self.tier_patience)
        if missing:
            raise ValueError(f"tier_patience lacks {sorted(missing)}")
        return self


@dataclass(frozen=True)
class CustomerModels:
    """Fitted population models reused across runs (BG/NBD in days; Gamma-Gamma may be absent)."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams | None


def segment_customers(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    complaints: pd.DataFrame | None = None,
    *,
    as_of: pd.Timestamp,
    params: SegmentParams | None = None,
    departed_managers=(),
    models: CustomerModels | None = None,
) -> pd.DataFrame:
    """One row per customer (in input order) with rhythm, P(alive), CLV, tier, stage and reasons.

    `models` reuses fitted BG/NBD + Gamma-Gamma parameters (e.g. a nightly fit); when None they are
    fitted on these orders.
    """
    params = params or SegmentParams()
    as_of = _utc(as_of)
    if "customer_id" not in customers.columns:
        raise DataError("customers have no customer_id column", column="customer_id")
    ids = customers["customer_id"]
    if not isinstance(ids.dtype, pd.StringDtype):
        ids = ids.astype("str")
    id_values = _arrow_strings(ids)
    if isinstance(id_values, pa.ChunkedArray):
        id_values = id_values.combine_chunks()
    _check_columns(orders, "orders", ("customer_id", "ordered_at", "amount"))
    with_complaints = complaints is not None and len(complaints) > 0
    if with_complaints:
        _check_columns(complaints, "complaints", ("customer_id", "created_at"))
    # One hash pass checks the ids are unique and places every order and complaint.
    positions = _positions(id_values, orders["customer_id"],
                           *([complaints["customer_id"]] if with_complaints else []))
    agg, cat = _aggregate_orders(orders, positions[0], as_of, params, n_customers=len(id_values))
    n = len(ids)
    n_orders = agg["n_orders"]
    has = n_orders > 0

    as_of_day = np.datetime64(as_of.tz_convert(params.timezone).date(), "D")
    n_tx = agg["n_transactions"]
    x = np.maximum(n_tx - 1, 0)
    first_day, last_day = agg["first_day"], agg["last_day"]
    t_x = np.where(has, (last_day - first_day).astype("int64"), 0).astype(float)
    T = np.where(has, (as_of_day - first_day).astype("int64"), 0).astype(float)
    total = agg["total_spend"]
    first_at = pd.Series(pd.DatetimeIndex(agg["first_order_at"]).tz_localize("UTC"))
    last_at = pd.Series(pd.DatetimeIndex(agg["last_order_at"]).tz_localize("UTC"))
    recency = (as_of - last_at).dt.total_seconds().to_numpy(dtype=float) / 86_400.0
    tenure = (as_of - first_at).dt.total_seconds().to_numpy(dtype=float) / 86_400.0
    recency = np.where(has, recency, np.nan)
    tenure = np.where(has, tenure, np.nan)
    tx_mean = np.where(has, total / np.maximum(n_tx, 1), 0.0)

    # Population models -------------------------------------------------------------------------
    if models is None:
        models = _fit_models(x[has], t_x[has], T[has], n_tx[has], tx_mean[has], params)
    p_alive = np.full(n, np.nan)
    exp_purchases = np.zeros(n)
    clv = np.zeros(n)
    eov = np.full(n, np.nan)
    if has.any():
        p_alive[has], exp_purchases[has], unit_value = _bgnbd_predictions(
            models.bgnbd, x[has], t_x[has], T[has], params
        )
        if models.gamma_gamma is not None:
            eov[has] = gamma_gamma_expected_value(models.gamma_gamma, n_tx[has], tx_mean[has])
        eov[has] = np.where(np.isfinite(eov[has]), eov[has], tx_mean[has])
        clv[has] = params.margin * eov[has] * unit_value

    # Value tier (codes into VALUE_TIERS) -------------------------------------------------------
    tier = _value_tiers(clv, total, has, params)

    # Own rhythm --------------------------------------------------------------------------------
    repeaters = has & (x > 0)
    pop_gap = float(np.median(t_x[repeaters] / x[repeaters])) if repeaters.any() else params.fallback_gap_days
    pop_gap = max(pop_gap, 1.0)
    patience = np.array([params.tier_patience[t] for t in VALUE_TIERS], dtype=float)[tier]
    k0 = params.rhythm_prior_strength
    rate = (k0 + x) / (k0 * pop_gap * patience + t_x)
    expected_gap = np.where(has, 1.0 / rate, np.nan)
    overdue = np.where(has, recency / expected_gap, np.nan)

    # Frequency trend ---------------------------------------------------------------------------
    trend = _frequency_trend(agg, has, first_day, as_of_day, rate, params)

    # Lapse stage (codes into LAPSE_STAGES) -----------------------------------------------------
    stage = _lapse_stages(overdue, p_alive, has, params)

    # Reasons -----------------------------------------------------------------------------------
    complaint_open, complaints_recent = _complaint_signals(
        n, complaints if with_complaints else None, positions[-1], as_of, params)
    discount_share = np.where(has, agg["n_discounted"] / np.maximum(n_orders, 1), 0.0)
    category_drop = _category_drop(cat, has, first_day, as_of_day, params)
    manager_departed = _manager_departed(customers, departed_managers)
    reason = _likely_reasons(
        stage, complaint_open, manager_departed,
        (discount_share >= params.price_discount_share) & (n_orders >= params.price_min_orders),
        category_drop,
    )

    return pd.DataFrame({
        "customer_id": pd.array(id_values, dtype="str"),
        "n_orders": n_orders,
        "n_transactions": n_tx,
        "frequency": x.astype("int64"),
        "first_order_at": first_at,
        "last_order_at": last_at,
        "recency_days": recency,
        "tenure_days": tenure,
        "monetary": np.where(has, total / np.maximum(n_orders, 1), 0.0),
        "total_spend": total,
        "expected_gap_days": expected_gap,
        "overdue_ratio": overdue,
        "frequency_trend": trend,
        "p_alive": p_alive,
        "expected_purchases_90d": exp_purchases,
        "expected_order_value": eov,
        "clv": clv,
        "value_tier": _strings(tier, VALUE_TIERS),
        "lapse_stage": _strings(stage, LAPSE_STAGES),
        "complaint_open": complaint_open,
        "complaints_recent": complaints_recent,
        "discount_share": discount_share,
        "top_category": _strings(cat["top_category"], cat["names"]),
        "category_drop": category_drop,
        "manager_departed": manager_departed,
        "likely_reason": _strings(reason, REASONS),
    })


def fit_customer_models(orders: pd.DataFrame, *, as_of: pd.Timestamp,
                        params: SegmentParams | None = None) -> CustomerModels:
    """Fit BG/NBD (days) and Gamma-Gamma on the orders up to `as_of`, as `segment_customers` does."""
    params = params or SegmentParams()
    as_of = _utc(as_of)
    agg, _ = _aggregate_orders(orders, None, as_of, params, categories=False)
    buyers = agg["n_orders"] > 0
    if not buyers.any():
        raise DataError("no orders up to as_of to fit the models on")
    as_of_day = np.datetime64(as_of.tz_convert(params.timezone).date(), "D")
    n_tx = agg["n_transactions"][buyers]
    first_day = agg["first_day"][buyers]
    last_day = agg["last_day"][buyers]
    return _fit_models(
        n_tx - 1, (last_day - first_day).astype("int64").astype(float),
        (as_of_day - first_day).astype("int64").astype(float), n_tx,
        agg["total_spend"][buyers] / n_tx, params,
    )


# ---------------------------------------------------------------------------------------------


def _utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        raise ConfigError("as_of must be timezone-aware (UTC)", field="as_of")
    return ts.tz_convert("UTC")


def _strings(codes: np.ndarray, names) -> pd.api.extensions.ExtensionArray:
    """A `str` column from integer codes into `names` (-1 → missing), without a Python object per row."""
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pd.array(pa.DictionaryArray.from_arrays(indices, pa.array(list(names), pa.large_string()))
                    .cast(pa.large_string()), dtype="str")


def _positions(id_values: pa.Array, *keys: pd.Series) -> list[np.ndarray]:
    """Position in `id_values` of each value of each `keys` column (-1 when absent); checks ids are unique.

    One Arrow dictionary encoding over the ids followed by the keys: the ids take codes 0..n-1 in
    order exactly when they are unique, and a key's code is its position when below n — a single
    hash pass for the duplicate check and every lookup. Exports usually list a customer's orders
    together: a run of equal consecutive keys is encoded once (a vectorized comparison of
    neighbours instead of hashing every row).
    """
    n = len(id_values)
    heads, runs = [], []
    for column in keys:
        values = _arrow_strings(column)
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        m = len(values)
        if m == 0:
            head = np.zeros(0, dtype=np.int64)
        else:
            differs = pc.not_equal(values[1:], values[:-1]).fill_null(True)
            head = np.flatnonzero(np.r_[True, np.asarray(differs.to_numpy(zero_copy_only=False), dtype=bool)])
        # Take chunk by chunk: Arrow's take on a chunked array concatenates it first.
        bounds = np.cumsum([0] + [len(chunk) for chunk in chunks])
        cut = np.searchsorted(head, bounds)
        heads += [chunk.take(pa.array(head[cut[i]:cut[i + 1]] - bounds[i])) for i, chunk in enumerate(chunks)]
        runs.append(np.diff(np.r_[head, m]))
    # Missing values are encoded like any value, as `index_in` matched them before.
    encoded = pc.dictionary_encode(pa.concat_arrays([id_values, *heads]), null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    first_seen = codes[:n] != np.arange(n)
    if first_seen.any():
        dup = id_values[int(np.argmax(first_seen))].as_py()
        raise DataError(f"duplicate customer_id {dup!r}", column="customer_id")
    found = np.where(codes[n:] < n, codes[n:], -1)
    out, start = [], 0
    for run in runs:
        out.append(np.repeat(found[start:start + len(run)], run))
        start += len(run)
    return out


def _codes(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, names) of a string-like column, -1 for missing; one dictionary over the whole column."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        names = np.asarray(series.cat.categories.astype("str"), dtype=object)
        return series.cat.codes.to_numpy().astype(np.int64), names
    values = _arrow_strings(series)
    if isinstance(values, pa.ChunkedArray):
        # Encoding chunk by chunk and unifying later is ~100× slower than one pass.
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), names


def _arrow_strings(series: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The column as Arrow large strings, zero-copy when pandas already stores it in Arrow."""
    if not (isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow"):
        series = series.astype("str")
    values = pa.array(series)
    return values if values.type == pa.large_string() else values.cast(pa.large_string())


def _check_columns(frame: pd.DataFrame, name: str, columns) -> None:
    for col in columns:
        if col not in frame.columns:
            raise DataError(f"{name} have no {col} column", column=col)


def _aggregate_orders(orders: pd.DataFrame, positions: np.ndarray | None, as_of: pd.Timestamp,
                      params: SegmentParams, *, n_customers: int = 0, categories: bool = True):
    """Per-customer order aggregates (and category signals) as numpy arrays aligned with `id_values`.

    Sort-based and vectorized: each order gets its customer's position and its calendar day; one
    stable sort by (customer, day) — skipped when the orders already come in that order, as exports
    grouped by customer do — turns transactions (distinct days) into run boundaries, and every
    aggregate is a `bincount` or `reduceat` over the sorted columns. (A two-level DuckDB GROUP BY
    over 10M (customer, day) pairs was 3-4× slower than this on the benchmark machine.)
    `positions` places each order among the `n_customers` customers (-1: unknown); with None, the
    customers are the distinct customer_ids of the orders.
    Returns (aggregates, category signals).
    """
    _check_columns(orders, "orders", ("customer_id", "ordered_at", "amount"))
    ordered_at = orders["ordered_at"]
    if not (isinstance(ordered_at.dtype, pd.DatetimeTZDtype) and str(ordered_at.dt.tz) == "UTC"):
        ordered_at = pd.to_datetime(ordered_at, utc=True)
    amount = orders["amount"]
    if amount.dtype != np.float64:
        amount = pd.to_numeric(amount, errors="coerce")
    amount = amount.to_numpy(dtype=float)
    if np.isnan(amount).any() or ordered_at.isna().any():
        raise DataError("orders contain a missing or non-numeric amount or ordered_at; validate with load_inputs")
    if positions is None:  # the customers are the distinct ids of the orders: one dictionary encoding
        pos, names = _codes(orders["customer_id"])
        n = len(names)
    else:
        pos, n = positions, n_customers

    ts = ordered_at.astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").view("int64")
    # Orders after as_of are the future of a backtest; unknown customers were quarantined upstream.
    keep = (pos >= 0) & (ts <= as_of.as_unit("ns").value)
    discounted = None
    if "discount" in orders.columns:
        discount = orders["discount"]
        if discount.dtype != np.float64:
            discount = pd.to_numeric(discount, errors="coerce")
        discounted = discount.to_numpy(dtype=float, na_value=np.nan) > 0  # missing is no discount
    all_kept = bool(keep.all())
    if not all_kept:  # the usual case keeps every row: skip the 10M-row copies
        pos, ts, amount = pos[keep], ts[keep], amount[keep]
        discounted = discounted[keep] if discounted is not None else None
    day = _local_days(ts, params.timezone)
    agg = _empty_aggregates(n)
    if len(pos) == 0:
        return agg, _empty_categories(n)
    as_of_day = np.datetime64(as_of.tz_convert(params.timezone).date(), "D").astype(np.int64)
    step_p = np.diff(pos)
    step_d = np.diff(day)
    if bool(((step_p > 0) | ((step_p == 0) & (step_d >= 0))).all()):
        # Already in (customer, day) order, as exports grouped by customer are: the stable sort
        # would be the identity.
        p, d, t, amt = pos, day, ts, amount
    else:
        d0 = int(day.min())
        width = int(day.max()) - d0 + 1
        order = np.argsort(pos * width + (day - d0), kind="stable")
        p, d, t, amt = pos[order], day[order], ts[order], amount[order]
        step_p, step_d = np.diff(p), np.diff(d)
    new_cust = np.empty(len(p), dtype=bool)
    new_cust[0] = True
    np.not_equal(step_p, 0, out=new_cust[1:])
    new_tx = new_cust.copy()
    new_tx[1:] |= step_d != 0
    starts = np.flatnonzero(new_cust)
    ends = np.r_[starts[1:], len(p)] - 1
    who = p[starts]
    recent_start = as_of_day - params.trend_window_days
    earlier_start = recent_start - params.trend_window_days
    tx_day, tx_who = d[new_tx], p[new_tx]
    agg["n_orders"][who] = np.diff(np.r_[starts, len(p)])
    agg["n_transactions"] = np.bincount(tx_who, minlength=n)
    agg["total_spend"] = np.bincount(p, weights=amt, minlength=n)
    if discounted is not None:
        agg["n_discounted"] = np.bincount(pos[discounted], minlength=n).astype(float)
    agg["tx_recent"] = np.bincount(tx_who, weights=(tx_day > recent_start).astype(float), minlength=n)
    agg["tx_earlier"] = np.bincount(
        tx_who, weights=((tx_day > earlier_start) & (tx_day <= recent_start)).astype(float), minlength=n)
    agg["first_day"][who] = d[starts].astype("datetime64[D]")
    agg["last_day"][who] = d[ends].astype("datetime64[D]")
    agg["first_order_at"][who] = np.minimum.reduceat(t, starts).view("datetime64[ns]")
    agg["last_order_at"][who] = np.maximum.reduceat(t, starts).view("datetime64[ns]")
    cats = (_category_signals(orders, None if all_kept else keep, pos, day, n, as_of_day, params)
            if categories else _empty_categories(n))
    return agg, cats


def _local_days(ts_ns: np.ndarray, timezone: str) -> np.ndarray:
    """Calendar day (days since 1970-01-01) in `timezone` of UTC nanosecond timestamps.

    When the zone keeps one UTC offset over the whole period (Asia/Shanghai, or any zone outside
    its DST dates), this is integer arithmetic; otherwise pandas converts over the zone's transitions.
    """
    if len(ts_ns) == 0:
        return np.zeros(0, dtype=np.int64)
    day_ns = 86_400 * 10**9
    lo, hi = int(ts_ns.min()), int(ts_ns.max())
    # An offset change shows up between two consecutive days of a daily grid over the period.
    grid = pd.DatetimeIndex(np.arange(lo - day_ns, hi + 2 * day_ns, day_ns).view("datetime64[ns]"), tz="UTC")
    local = grid.tz_convert(timezone).tz_localize(None).as_unit("ns").asi8
    offsets = np.unique(local - grid.as_unit("ns").asi8)
    if len(offsets) == 1:
        return (ts_ns + int(offsets[0])) // day_ns
    stamps = pd.DatetimeIndex(ts_ns.view("datetime64[ns]"), tz="UTC")
    return stamps.tz_convert(timezone).tz_localize(None).as_unit("ns").asi8 // day_ns


def _category_signals(orders, keep, pos, day, n, as_of_day, params: SegmentParams) -> dict:
    """Top category overall, top category before the category window and its orders in the window.

    Categories are codes into `names` (sorted by name); -1 when the customer has none.
    """
    out = _empty_categories(n)
    if "category" not in orders.columns:
        return out
    codes, names = _codes(orders["category"])
    if keep is not None:
        codes = codes[keep]
    nonblank = np.array([bool(str(v).strip()) for v in names], dtype=bool)
    if nonblank.all() and (len(codes) == 0 or codes.min() >= 0):
        valid = None  # the usual case: every order has a category
    else:
        valid = np.r_[nonblank, False][codes]  # code -1 (missing) picks the trailing False
        if not valid.any():
            return out
    # Rank categories by name so that ties between equally frequent categories break alphabetically.
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(names.astype(str), kind="stable")] = np.arange(len(names))
    k = len(names)
    out["names"] = names[np.argsort(rank)]
    if valid is None:  # skip three 10M-row copies
        p, c, d = pos, rank[codes], day
    else:
        p, c, d = pos[valid], rank[codes[valid]], day[valid]
    cat_start = as_of_day - params.category_window_days
    recent_mask = d > cat_start
    flat = p * k
    flat += c
    top_all, top_before = out["top_category"], out["top_before"]
    if n * k <= _DENSE_CATEGORY_CELLS:
        # Few categories: dense customer × category count matrices (integer counts, exact);
        # argmax keeps the first (alphabetical) category on ties.
        all_m = np.bincount(flat, minlength=n * k).reshape(n, k)
        recent_m = np.bincount(flat[recent_mask], minlength=n * k).reshape(n, k)
        rows = np.arange(n)
        best_all = all_m.argmax(axis=1)
        bought = all_m[rows, best_all] > 0
        before_m = all_m
        before_m -= recent_m  # in place: all_m is not needed any more
        best_before = before_m.argmax(axis=1)
        before_orders = before_m[rows, best_before]
        had_before = before_orders > 0
        top_all[bought] = best_all[bought]
        top_before[had_before] = best_before[had_before]
        out["top_before_orders"] = np.where(had_before, before_orders, 0).astype(float)
        out["top_before_recent"] = np.where(had_before, recent_m[rows, best_before], 0).astype(float)
        out["recent_orders"] = recent_m.sum(axis=1).astype(float)
        return out
    else:
        recent = recent_mask.astype(float)
        pair, inverse = np.unique(flat, return_inverse=True)
        inverse = inverse.ravel()
        n_all = np.bincount(inverse).astype(float)
        n_recent = np.bincount(inverse, weights=recent)
        n_before = n_all - n_recent
        pair_pos, pair_cat = pair // k, pair % k
        # pair is sorted by (customer, category rank): a stable sort on the count keeps alphabetical ties.
        first_all = _first_per_group(pair_pos, -n_all)
        first_before = _first_per_group(pair_pos, -n_before)
        top_all[pair_pos[first_all]] = pair_cat[first_all]
        sel = first_before[n_before[first_before] > 0]
        top_before[pair_pos[sel]] = pair_cat[sel]
        out["top_before_orders"][pair_pos[sel]] = n_before[sel]
        out["top_before_recent"][pair_pos[sel]] = n_recent[sel]
    out["recent_orders"] = np.bincount(p, weights=recent, minlength=n)
    return out


def _first_per_group(group: np.ndarray, sort_key: np.ndarray) -> np.ndarray:
    """Index of the row with the smallest sort_key in each group (ties: first row); group is sorted."""
    order = np.lexsort((sort_key, group))  # by group, then key; stable, so ties keep the row order
    g = group[order]
    return order[np.r_[True, g[1:] != g[:-1]]]


def _empty_aggregates(n: int) -> dict:
    return {
        "n_orders": np.zeros(n, dtype=np.int64), "n_transactions": np.zeros(n, dtype=np.int64),
        "total_spend": np.zeros(n), "n_discounted": np.zeros(n), "tx_recent": np.zeros(n),
        "tx_earlier": np.zeros(n),
        "first_day": np.full(n, np.datetime64("NaT"), dtype="datetime64[D]"),
        "last_day": np.full(n, np.datetime64("NaT"), dtype="datetime64[D]"),
        "first_order_at": np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
        "last_order_at": np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
    }


def _empty_categories(n: int) -> dict:
    return {
        "names": np.array([], dtype=object),
        "top_category": np.full(n, -1, dtype=np.int64), "top_before": np.full(n, -1, dtype=np.int64),
        "top_before_orders": np.zeros(n), "top_before_recent": np.zeros(n), "recent_orders": np.zeros(n),
    }


def _fit_models(x, t_x, T, n_tx, tx_mean, params: SegmentParams) -> CustomerModels:
    if len(x) == 0:
        # Nobody has bought: there is nothing to predict for, keep neutral literature-like values.
        return CustomerModels(BgNbdParams(0.25, 30.0, 0.8, 2.4, unit="day"), None)
    scale = 7.0 if params.fit_unit == "week" else 1.0
    bg = fit_bgnbd(x, t_x / scale, T / scale, unit=params.fit_unit, ridge=params.fit_ridge,
                   initial=(1.0, max(float(np.mean(T)) / scale, 1.0), 1.0, 1.0))
    positive = tx_mean > 0
    gg = None
    if positive.any():
        idx = np.flatnonzero(positive)
        if len(idx) > params.gamma_gamma_max_fit_customers:
            # Three parameters are pinned down by a large random sample; the full fit costs seconds.
            rng = np.random.default_rng(params.fit_seed)
            idx = np.sort(rng.choice(idx, size=params.gamma_gamma_max_fit_customers, replace=False))
        mean = float(np.mean(tx_mean[idx]))
        gg = fit_gamma_gamma(n_tx[idx], tx_mean[idx], ridge=params.fit_ridge, initial=(2.0, 3.0, mean))
    return CustomerModels(bg, gg)


def _bgnbd_predictions(bg: BgNbdParams, x, t_x, T, params: SegmentParams):
    """P(alive), expected purchases in prediction_days, discounted expected purchases over the CLV horizon."""
    scale = {"day": 1.0, "week": 7.0}.get(bg.unit, 1.0)
    # Evaluate on distinct (x, t_x, T) only: a million customers share a few hundred thousand rows;
    # the hypergeometric term depends on (x, T) alone, which are fewer still.
    key = (x.astype(np.int64) * 100_000 + t_x.astype(np.int64)) * 100_000 + T.astype(np.int64)
    _, first_idx, inverse = np.unique(key, return_index=True, return_inverse=True)
    ux, ut, uT = x[first_idx] / 1.0, t_x[first_idx] / scale, T[first_idx] / scale
    xt_key = x[first_idx].astype(np.int64) * 100_000 + T[first_idx].astype(np.int64)
    _, xt_first, xt_inverse = np.unique(xt_key, return_index=True, return_inverse=True)
    xt_inverse = xt_inverse.ravel()
    hx, hT = ux[xt_first], uT[xt_first]
    p_alive = bgnbd_p_alive(bg, ux, ut, uT)

    def expected(t_days: float) -> np.ndarray:
        term = bgnbd_hypergeometric_term(bg, t_days / scale, hx, hT)[xt_inverse]
        return bgnbd_conditional_expected_purchases(bg, t_days / scale, ux, ut, uT, term=term)

    exp_pred = expected(params.prediction_days)
    steps = np.arange(params.clv_step_days, params.clv_horizon_days + params.clv_step_days,
                      params.clv_step_days, dtype=float)
    steps[-1] = min(steps[-1], params.clv_horizon_days)
    discounted = np.zeros(len(ux))
    previous = np.zeros(len(ux))
    for t in steps:
        cumulative = exp_pred if t == params.prediction_days else expected(t)
        discounted += (cumulative - previous) * (1.0 + params.annual_discount_rate) ** (-t / 365.0)
        previous = cumulative
    inverse = inverse.ravel()
    return p_alive[inverse], exp_pred[inverse], discounted[inverse]


def _value_tiers(clv, total, has, params: SegmentParams) -> np.ndarray:
    """Codes into VALUE_TIERS."""
    platinum, gold, iron, lead = range(4)
    positive = has & (clv > 0) & (total > 0)
    tiers = np.full(len(clv), lead, dtype=np.int64)
    if not positive.any():
        return tiers
    if params.tier_method == "absolute":
        floors = params.tier_clv_floors
        tiers[positive & (clv >= floors[2])] = iron
        tiers[positive & (clv >= floors[1])] = gold
        tiers[positive & (clv >= floors[0])] = platinum
        return tiers
    # Share of positive-value customers with a CLV at least this high (ties share the better tier).
    values = clv[positive]
    # 1 + number of customers with a strictly higher CLV, as a share (pandas rank "min", descending).
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    idx = np.arange(len(ranked))
    run_start = np.maximum.accumulate(np.where(np.r_[True, ranked[1:] != ranked[:-1]], idx, 0))
    top_share = np.empty(len(values))
    top_share[order] = (run_start + 1) / len(values)
    bounds = np.cumsum(params.tier_shares)
    sub = np.full(len(values), lead, dtype=np.int64)
    sub[top_share <= bounds[2]] = iron
    sub[top_share <= bounds[1]] = gold
    sub[top_share <= bounds[0]] = platinum
    tiers[positive] = sub
    return tiers


def _frequency_trend(agg: dict, has, first_day, as_of_day, rate, params: SegmentParams) -> np.ndarray:
    window = params.trend_window_days
    recent_start = as_of_day - np.timedelta64(window, "D")
    earlier_start = recent_start - np.timedelta64(window, "D")
    fd = np.where(has, first_day, as_of_day)
    # The first purchase starts the repeat-purchase process: exclude it from the counts.
    rec = agg["tx_recent"] - (fd > recent_start)
    ear = agg["tx_earlier"] - ((fd > earlier_start) & (fd <= recent_start))
    exp_recent = (as_of_day - np.maximum(fd, recent_start)).astype("int64").astype(float)
    exp_earlier = np.clip((recent_start - np.maximum(fd, earlier_start)).astype("int64"), 0, None).astype(float)
    k = params.trend_prior_strength
    prior_days = k / rate
    recent_rate = (k + rec) / (prior_days + exp_recent)
    earlier_rate = (k + ear) / (prior_days + exp_earlier)
    return np.where(has, recent_rate / earlier_rate, np.nan)


def _lapse_stages(overdue, p_alive, has, params: SegmentParams) -> np.ndarray:
    """Codes into LAPSE_STAGES."""
    at_risk, lapsing, lapsed, lost = params.stage_thresholds
    ratio = np.nan_to_num(overdue, nan=0.0)
    code = {s: i for i, s in enumerate(LAPSE_STAGES)}
    return np.select(
        [~has, (ratio >= lost) | ((ratio >= at_risk) & (np.nan_to_num(p_alive, nan=1.0) < params.lost_p_alive)),
         ratio >= lapsed, ratio >= lapsing, ratio >= at_risk],
        [code["no_orders"], code["lost"], code["lapsed"], code["lapsing"], code["at_risk"]],
        default=code["active"],
    )


def _complaint_signals(n: int, complaints: pd.DataFrame | None, pos: np.ndarray, as_of, params: SegmentParams):
    if complaints is None:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype="int64")
    created = pd.to_datetime(complaints["created_at"], utc=True)
    start = as_of - pd.Timedelta(days=params.complaint_window_days)
    in_window = ((created > start) & (created <= as_of)).to_numpy()
    resolved = (complaints["resolved"].fillna(False).astype(bool).to_numpy()
                if "resolved" in complaints.columns else np.zeros(len(complaints), dtype=bool))
    use = in_window & (pos >= 0)
    recent = np.bincount(pos[use], minlength=n)
    open_ = np.bincount(pos[use], weights=(~resolved[use]).astype(float), minlength=n)
    return open_ > 0, recent.astype("int64")


def _category_drop(cat: dict, has, first_day, as_of_day, params: SegmentParams) -> np.ndarray:
    window = params.category_window_days
    cat_start = as_of_day - np.timedelta64(window, "D")
    fd = np.where(has, first_day, as_of_day)
    before_days = np.clip((cat_start - fd).astype("int64"), 0, None).astype(float)
    top_orders = cat["top_before_orders"]
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(before_days > 0, top_orders / np.maximum(before_days, 1.0) * window, 0.0)
    return (
        has
        & (cat["top_before"] >= 0)
        & (top_orders >= params.category_min_orders)
        & (expected >= params.category_expected_min)
        & (cat["top_before_recent"] == 0)
        & (cat["recent_orders"] > 0)
    )


def _manager_departed(customers: pd.DataFrame, departed_managers) -> np.ndarray:
    names = {str(m).strip().casefold() for m in (departed_managers or ()) if str(m).strip()}
    if not names or "account_manager" not in customers.columns:
        return np.zeros(len(customers), dtype=bool)
    managers = customers["account_manager"].astype("str").str.strip().str.casefold()
    return (managers.isin(names) & customers["account_manager"].notna()).to_numpy(dtype=bool)


def _likely_reasons(stage, complaint_open, manager_departed, price, category_drop) -> np.ndarray:
    """Codes into REASONS."""
    slipping = np.isin(stage, [LAPSE_STAGES.index(s) for s in SLIPPING_STAGES])
    code = {r: i for i, r in enumerate(REASONS)}
    # Priority: a service failure is fixed first, then the relationship (manager), then price,
    # then a competitor taking a category; with no signal, the customer simply forgot us.
    return np.select(
        [~slipping, complaint_open, manager_departed, price, category_drop],
        [code["none"], code["service"], code["manager_left"], code["price"], code["competitor"]],
        default=code["forgotten"],
    )
