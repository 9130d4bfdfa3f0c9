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
- A purchase model (fit in days on all buyers): `p_alive`, `expected_purchases_90d`
  (`prediction_days`). Which one (`purchase_model`, default `auto`): BG/NBD, MBG/NBD and Pareto/NBD are
  each fitted on a calibration split of the same history (the last `selection_holdout_days`, at most
  `selection_holdout_share` of it, held out; one DuckDB pass gives both) and checked on the holdout
  (`winback.segments.model_check`); the one with the smallest per-customer error (mean Poisson
  deviance) is refitted on the whole history and used. BG/NBD rates every one-time buyer alive (P = 1, however long ago the order);
  MBG/NBD and Pareto/NBD let a one-timer silent far beyond the shop's rhythm lapse. History too short
  for a holdout (or too few customers before it): `selection_fallback` (MBG/NBD). The choice and why
  is the `purchase_model` column and `frame.attrs["purchase_model"]`. Gamma-Gamma on the mean transaction value over
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
- Reasons: `complaint_open` (an unresolved complaint created at most `complaint_lead_days` before the
  customer's last order or any time after it: the grievance that preceded the silence, however long
  ago the customer stopped; one from before they went on buying does not count; customers without
  orders: within `complaint_window_days`), `complaints_recent` (complaints in the last
  `complaint_window_days`), `discount_share` (share of orders with
  discount > 0; price-sensitive when ≥ `price_discount_share` over ≥ `price_min_orders` orders),
  `top_category` (most ordered category over the whole history), `category_drop` (the top category
  before the last `category_window_days` — at least `category_min_orders` orders — has no order in
  that window although the customer's own rate there predicts ≥ `category_expected_min`, while
  they did buy something else in the window: buying elsewhere, the competitor signal),
  `manager_departed` (account_manager in the departed list). A departed-managers entry is a name, or
  `name,YYYY-MM-DD` with the day the manager left: then the departure explains a lapse (reason
  `manager_left`) only if it came before the customer's last order or at most `manager_lead_days`
  after it; a customer who had already gone quiet did not leave because of it.
  `likely_reason` for slipping customers (stage at_risk … lost), first match in the order
  service > manager_left > price > competitor > forgotten; `none` for active and no_orders.

Orders after `as_of` are ignored (they are the future of a backtest); orders of customers not in
`customers` are ignored (`winback.sources.load_inputs` quarantines them before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from winback.errors import ConfigError, DataError
from winback.segments.aggregate import (
    DAY_NS,
    OrdersSource,
    _strings,
    aggregate_orders,
    check_unique_ids,
    complaint_counts,
    connect,
)
from winback.segments.model_check import (
    MODEL_LABELS,
    ModelChoice,
    PurchaseModel,
    choose_model,
    fit_purchase_model,
    purchase_p_alive,
)
from winback.segments.models import (
    BgNbdParams,
    GammaGammaParams,
    bgnbd_conditional_expected_purchases,
    bgnbd_hypergeometric_term,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
)
from winback.segments.pareto_nbd import ParetoNbdParams, pareto_nbd_conditional_expected_purchases
from winback.vocab import LAPSE_STAGES, REASONS, VALUE_TIERS

SEGMENT_COLUMNS = (
    "customer_id", "n_orders", "n_transactions", "frequency", "first_order_at", "last_order_at",
    "recency_days", "tenure_days", "monetary", "total_spend", "expected_gap_days", "overdue_ratio",
    "frequency_trend", "p_alive", "expected_purchases_90d", "expected_order_value", "clv",
    "value_tier", "lapse_stage", "complaint_open", "complaints_recent", "discount_share",
    "top_category", "category_drop", "manager_departed", "likely_reason", "purchase_model",
)
# Columns that are NaN/NaT exactly for customers without orders (everything else is never missing,
# except top_category, NA when the customer's orders carry no category).
NAN_FOR_NO_ORDERS = (
    "first_order_at", "last_order_at", "recency_days", "tenure_days", "expected_gap_days",
    "overdue_ratio", "frequency_trend", "p_alive", "expected_order_value",
)
SLIPPING_STAGES = ("at_risk", "lapsing", "lapsed", "lost")


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
    fit_unit: Literal["day", "week"] = Field("day", description="time unit of the purchase model fit (alpha is in it)")
    fit_ridge: float = Field(1.0, ge=0, description="weak prior on log-parameters (finite fits on tiny data)")
    purchase_model: Literal["auto", "bgnbd", "mbgnbd", "pareto-nbd"] = Field(
        "auto", description="the purchase model, or auto: the one with the smaller holdout error")
    selection_holdout_days: int = Field(180, gt=0, description="longest holdout of the model check")
    selection_holdout_share: float = Field(0.25, gt=0, lt=1, description="holdout at most this share of the history")
    selection_min_holdout_days: int = Field(28, gt=0, description="shorter possible holdout → selection_fallback")
    selection_min_customers: int = Field(30, gt=0, description="fewer customers before the holdout → selection_fallback")
    selection_max_customers: int = Field(100_000, gt=0, description="seeded sample cap of the model check's customers")
    selection_fallback: Literal["bgnbd", "mbgnbd", "pareto-nbd"] = Field(
        "mbgnbd", description="the model when there is no holdout to check on (MBG/NBD: one-timers can lapse)")
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
    complaint_window_days: int = Field(180, gt=0, description="complaints_recent counts this many days back")
    complaint_lead_days: int = Field(
        30, ge=0, description="an unresolved complaint is open from this many days before the last order on")
    manager_lead_days: int = Field(
        30, ge=0, description="a dated departure explains a lapse up to this many days after the last order")
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
    """Fitted population models reused across runs (the purchase model in days; Gamma-Gamma may be absent).

    `choice` says which purchase model and why (None: given, not chosen by segmentation).
    """

    purchases: PurchaseModel
    gamma_gamma: GammaGammaParams | None
    choice: ModelChoice | None = None

    @property
    def bgnbd(self) -> PurchaseModel:
        """The purchase model, under its old name (it was always BG/NBD)."""
        return self.purchases


def segment_customers(
    customers: pd.DataFrame,
    orders: OrdersSource,
    complaints: pd.DataFrame | None = None,
    *,
    as_of: pd.Timestamp,
    params: SegmentParams | None = None,
    departed_managers=(),
    models: CustomerModels | None = None,
) -> pd.DataFrame:
    """One row per customer (in input order) with rhythm, P(alive), CLV, tier, stage and reasons.

    `models` reuses a fitted purchase model + Gamma-Gamma (e.g. a nightly fit); when None they are
    fitted (and the purchase model chosen) on these orders. `frame.attrs["purchase_model"]` records
    the model and why.
    """
    params = params or SegmentParams()
    as_of = _utc(as_of)
    if "customer_id" not in customers.columns:
        raise DataError("customers have no customer_id column", column="customer_id")
    id_values = _strings(customers["customer_id"])
    with_complaints = complaints is not None and len(complaints) > 0
    if with_complaints:
        _check_columns(complaints, "complaints", ("customer_id", "created_at"))
    n = len(id_values)
    with connect(id_values) as con:  # one DuckDB connection: the ids registered once
        check_unique_ids(con)
        agg = aggregate_orders(orders, as_of=as_of, timezone=params.timezone, con=con, n_customers=n,
                               trend_window_days=params.trend_window_days,
                               category_window_days=params.category_window_days, **_holdout_split(models, params))
        if with_complaints:
            window_start = as_of - pd.Timedelta(days=params.complaint_window_days)
            # Open from shortly before the last order on: the complaint that preceded the silence,
            # however long ago that was (customers without orders: the complaint window).
            open_since = np.where(agg.n_orders > 0,
                                  agg.last_order_at.view("int64") - params.complaint_lead_days * DAY_NS,
                                  window_start.value)
            complaint_open, complaints_recent = complaint_counts(
                complaints, con, n, recent_start=window_start, end=as_of, open_since=open_since)
        else:
            complaint_open, complaints_recent = np.zeros(n, dtype=bool), np.zeros(n, dtype="int64")
    cat = agg.categories
    n_orders = agg.n_orders
    has = n_orders > 0
    as_of_day = np.datetime64(as_of.tz_convert(params.timezone).date(), "D")
    n_tx = agg.n_transactions
    x = np.maximum(n_tx - 1, 0)
    first_day, last_day = agg.first_day, agg.last_day
    t_x = np.where(has, (last_day - first_day).astype("int64"), 0).astype(float)
    T = np.where(has, (as_of_day - first_day).astype("int64"), 0).astype(float)
    total = agg.total_spend
    as_of_ns = as_of.as_unit("ns").value
    recency = np.where(has, (as_of_ns - agg.last_order_at.view("int64")) / 86_400e9, np.nan)
    tenure = np.where(has, (as_of_ns - agg.first_order_at.view("int64")) / 86_400e9, np.nan)
    tx_mean = np.where(has, total / np.maximum(n_tx, 1), 0.0)

    # Population models -------------------------------------------------------------------------
    if models is None:
        models = _fit_models(x[has], t_x[has], T[has], n_tx[has], tx_mean[has], params,
                             _calibration(agg, has, as_of_day))
    p_alive = np.full(n, np.nan)
    exp_purchases = np.zeros(n)
    clv = np.zeros(n)
    eov = np.full(n, np.nan)
    if has.any():
        p_alive[has], exp_purchases[has], unit_value = _purchase_predictions(
            models.purchases, x[has], t_x[has], T[has], params
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
    discount_share = np.where(has, agg.n_discounted / np.maximum(n_orders, 1), 0.0)
    category_drop = _category_drop(cat, has, first_day, as_of_day, params)
    manager_departed, left_at = _manager_departed(customers, departed_managers)
    # A departure dated well after the customer's last order came too late to be the reason.
    left_before_silence = manager_departed & ~(
        left_at > np.where(has, agg.last_order_at.view("int64"), as_of_ns)
        + params.manager_lead_days * DAY_NS)
    reason = _likely_reasons(
        stage, complaint_open, left_before_silence,
        (discount_share >= params.price_discount_share) & (n_orders >= params.price_min_orders),
        category_drop,
    )

    frame = pd.DataFrame({
        "customer_id": pd.array(id_values, dtype="str"),
        "n_orders": n_orders,
        "n_transactions": n_tx,
        "frequency": x.astype("int64"),
        "first_order_at": pd.DatetimeIndex(agg.first_order_at).tz_localize("UTC"),
        "last_order_at": pd.DatetimeIndex(agg.last_order_at).tz_localize("UTC"),
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
        "value_tier": _labels(tier, VALUE_TIERS),
        "lapse_stage": _labels(stage, LAPSE_STAGES),
        "complaint_open": complaint_open,
        "complaints_recent": complaints_recent,
        "discount_share": discount_share,
        "top_category": _labels(cat["top_category"], cat["names"]),
        "category_drop": category_drop,
        "manager_departed": manager_departed,
        "likely_reason": _labels(reason, REASONS),
        "purchase_model": _labels(np.zeros(n, dtype=np.int64), [models.purchases.model]),
    }, copy=False)  # every array is this call's own: no copy into 2-D blocks (0.3 s at 1M customers)
    frame.attrs["purchase_model"] = _choice_record(models)
    return frame


def fit_customer_models(orders: pd.DataFrame, *, as_of: pd.Timestamp,
                        params: SegmentParams | None = None) -> CustomerModels:
    """Choose and fit the purchase model (days) and Gamma-Gamma on the orders up to `as_of`, as `segment_customers` does."""
    params = params or SegmentParams()
    as_of = _utc(as_of)
    agg = aggregate_orders(orders, as_of=as_of, timezone=params.timezone, trend_window_days=params.trend_window_days,
                           categories=False, **_holdout_split(None, params))
    buyers = agg.n_orders > 0
    if not buyers.any():
        raise DataError("no orders up to as_of to fit the models on")
    as_of_day = np.datetime64(as_of.tz_convert(params.timezone).date(), "D")
    n_tx = agg.n_transactions[buyers]
    first_day = agg.first_day[buyers]
    last_day = agg.last_day[buyers]
    return _fit_models(
        n_tx - 1, (last_day - first_day).astype("int64").astype(float),
        (as_of_day - first_day).astype("int64").astype(float), n_tx,
        agg.total_spend[buyers] / n_tx, params, _calibration(agg, buyers, as_of_day),
    )


# ---------------------------------------------------------------------------------------------


def _utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        raise ConfigError("as_of must be timezone-aware (UTC)", field="as_of")
    return ts.tz_convert("UTC")


def _labels(codes: np.ndarray, names) -> pd.api.extensions.ExtensionArray:
    """A `str` column from integer codes into `names` (-1 → missing), without a Python object per row."""
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pd.array(pa.DictionaryArray.from_arrays(indices, pa.array(list(names), pa.large_string()))
                    .cast(pa.large_string()), dtype="str")


def _check_columns(frame: pd.DataFrame, name: str, columns) -> None:
    for col in columns:
        if col not in frame.columns:
            raise DataError(f"{name} have no {col} column", column=col)


def _holdout_split(models: CustomerModels | None, params: SegmentParams) -> dict:
    """aggregate_orders' holdout split, when segmentation is to choose the purchase model."""
    if models is not None or params.purchase_model != "auto":
        return {}
    return {"holdout_days": params.selection_holdout_days, "holdout_share": params.selection_holdout_share}


@dataclass(frozen=True)
class _Calibration:
    """The customers who bought by the split day: (x, t_x, T) up to it, in days, and their holdout transactions."""

    split_day: np.datetime64
    holdout_days: int
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    holdout: np.ndarray


def _calibration(agg, rows: np.ndarray, as_of_day: np.datetime64) -> _Calibration | None:
    if agg.split_day is None:
        return None
    before = agg.tx_to_split[rows]
    keep = before > 0
    first = agg.first_day[rows][keep]
    return _Calibration(
        split_day=agg.split_day, holdout_days=int((as_of_day - agg.split_day).astype("int64")),
        frequency=(before[keep] - 1).astype(float),
        recency=(agg.last_day_to_split[rows][keep] - first).astype("int64").astype(float),
        T=(agg.split_day - first).astype("int64").astype(float),
        holdout=(agg.n_transactions[rows][keep] - before[keep]).astype(float),
    )


def _initial(name: str, T: np.ndarray) -> tuple[float, float, float, float]:
    """Starting point (and ridge centre) of a purchase model fit: scales at the mean observation time."""
    scale = max(float(np.mean(T)), 1.0) if len(T) else 1.0
    return (1.0, scale, 1.0, scale) if name == "pareto-nbd" else (1.0, scale, 1.0, 1.0)


def _choose_purchase_model(params: SegmentParams, cal: _Calibration | None) -> ModelChoice:
    """The purchase model named in `params`, else the one with the smaller holdout error (see model_check)."""
    if params.purchase_model != "auto":
        return ModelChoice(params.purchase_model, "named in the segmentation parameters (the campaign's "
                                                  "segments_model)")
    fallback = params.selection_fallback
    if cal is None or cal.holdout_days < params.selection_min_holdout_days:
        days = 0 if cal is None else cal.holdout_days
        return ModelChoice(fallback, f"the fallback: the history allows a holdout of {days} days, fewer than "
                                     f"{params.selection_min_holdout_days}, too short to check the models on",
                           holdout_days=days)
    if len(cal.frequency) < params.selection_min_customers:
        return ModelChoice(fallback, f"the fallback: {len(cal.frequency)} customers bought before the holdout, fewer "
                                     f"than {params.selection_min_customers}, too few to check the models on",
                           holdout_days=cal.holdout_days, n_customers=len(cal.frequency))
    x, t_x, T, y = cal.frequency, cal.recency, cal.T, cal.holdout
    if len(x) > params.selection_max_customers:
        # A seeded sample, drawn from the rows sorted by value: the same customers in another order
        # give the same sample (segment_customers and fit_customer_models see different orders).
        order = np.lexsort((y, T, t_x, x))
        rng = np.random.default_rng(params.fit_seed)
        order = order[np.sort(rng.choice(len(order), size=params.selection_max_customers, replace=False))]
        x, t_x, T, y = x[order], t_x[order], T[order], y[order]
    scale = 7.0 if params.fit_unit == "week" else 1.0
    choice, _ = choose_model(
        x, t_x / scale, T / scale, y, cal.holdout_days / scale, unit=params.fit_unit, ridge=params.fit_ridge,
        initial={name: _initial(name, T / scale) for name in MODEL_LABELS},
        calibration_end=str(cal.split_day), holdout_days=cal.holdout_days,
    )
    return choice


def _fit_models(x, t_x, T, n_tx, tx_mean, params: SegmentParams, calibration: _Calibration | None = None
                ) -> CustomerModels:
    if len(x) == 0:
        # Nobody has bought: there is nothing to predict for, keep neutral literature-like values.
        return CustomerModels(BgNbdParams(0.25, 30.0, 0.8, 2.4, unit="day"), None,
                              ModelChoice("bgnbd", "no customer has ordered: nothing to fit"))
    choice = _choose_purchase_model(params, calibration)
    scale = 7.0 if params.fit_unit == "week" else 1.0
    purchases = fit_purchase_model(choice.model, x, t_x / scale, T / scale, unit=params.fit_unit,
                                   ridge=params.fit_ridge, initial=_initial(choice.model, T / scale))
    positive = tx_mean > 0
    gg = None
    if positive.any():
        idx = np.flatnonzero(positive)
        if len(idx) > params.gamma_gamma_max_fit_customers:
            # Three parameters are pinned down by a large random sample; the full fit costs seconds.
            # Drawn from the customers sorted by (n_tx, tx_mean), not in the caller's order, so that
            # segment_customers (customers in input order) and fit_customer_models (in id order)
            # draw the same sample from the same orders.
            idx = idx[np.lexsort((tx_mean[idx], n_tx[idx]))]
            rng = np.random.default_rng(params.fit_seed)
            idx = idx[np.sort(rng.choice(len(idx), size=params.gamma_gamma_max_fit_customers, replace=False))]
        # fsum: exactly rounded whatever the order (the mean is the fit's start and ridge centre).
        mean = math.fsum(tx_mean[idx].tolist()) / len(idx)
        gg = fit_gamma_gamma(n_tx[idx], tx_mean[idx], ridge=params.fit_ridge, initial=(2.0, 3.0, mean))
    return CustomerModels(purchases, gg, choice)


def _choice_record(models: CustomerModels) -> dict:
    """What `frame.attrs["purchase_model"]` holds: the model, its parameters and why it was used."""
    choice = models.choice or ModelChoice(models.purchases.model, "given (a reused fit)")
    return {**choice.to_dict(), "label": MODEL_LABELS[models.purchases.model], "params": models.purchases.to_dict()}


def _purchase_predictions(model: PurchaseModel, x, t_x, T, params: SegmentParams):
    """P(alive), expected purchases in prediction_days, discounted expected purchases over the CLV horizon."""
    scale = {"day": 1.0, "week": 7.0}.get(model.unit, 1.0)
    fx, ft, fT = x.astype(float), t_x / scale, T / scale
    p_alive = purchase_p_alive(model, fx, ft, fT)
    if isinstance(model, ParetoNbdParams):
        def expected(t_days: float) -> np.ndarray:  # closed form: no hypergeometric term per horizon
            return pareto_nbd_conditional_expected_purchases(model, t_days / scale, fx, ft, fT, p_alive=p_alive)
    else:
        # The hypergeometric term (the costly part) depends on (x, T) only: evaluate it once per
        # distinct pair — a million customers share a few hundred thousand — and gather.
        inverse, ux, uT = _distinct_pairs(x.astype(np.int64), T.astype(np.int64))

        def expected(t_days: float) -> np.ndarray:
            term = bgnbd_hypergeometric_term(model, t_days / scale, ux, uT / scale)[inverse]
            return bgnbd_conditional_expected_purchases(model, t_days / scale, fx, ft, fT, term=term,
                                                        p_alive=p_alive)

    exp_pred = expected(params.prediction_days)
    steps = np.arange(params.clv_step_days, params.clv_horizon_days + params.clv_step_days,
                      params.clv_step_days, dtype=float)
    steps[-1] = min(steps[-1], params.clv_horizon_days)
    discounted = np.zeros(len(x))
    previous = np.zeros(len(x))
    for t in steps:
        cumulative = exp_pred if t == params.prediction_days else expected(t)
        discounted += (cumulative - previous) * (1.0 + params.annual_discount_rate) ** (-t / 365.0)
        previous = cumulative
    return p_alive, exp_pred, discounted


def _distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inverse, distinct a, distinct b) of the pairs (a, b) of non-negative integers.

    A dense presence table over the (small) value ranges instead of np.unique's sort when the table
    is small: transactions × days since the first purchase.
    """
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64), a.astype(float), b.astype(float)
    width = int(b.max()) + 1
    cells = (int(a.max()) + 1) * width
    code = a * width + b
    if cells <= 1 << 26:
        present = np.zeros(cells, dtype=bool)
        present[code] = True
        distinct = np.flatnonzero(present)
        lookup = np.empty(cells, dtype=np.int64)
        lookup[distinct] = np.arange(len(distinct))
        inverse = lookup[code]
    else:
        distinct, inverse = np.unique(code, return_inverse=True)
        inverse = inverse.ravel()
    return inverse, (distinct // width).astype(float), (distinct % width).astype(float)


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
    # A customer's share is (1 + number of customers with a strictly higher CLV) / N, so ties share
    # the better tier; share ≤ bound ⇔ CLV ≥ the k-th largest CLV, k the largest count with k/N ≤ bound.
    values = clv[positive]
    n = len(values)
    bounds = np.cumsum(params.tier_shares)
    ks = []
    for bound in bounds:
        k = min(int(np.floor(bound * n)), n)
        while k < n and (k + 1) / n <= bound:
            k += 1
        while k > 0 and k / n > bound:
            k -= 1
        ks.append(k)
    cut = np.partition(values, sorted({n - k for k in ks if k > 0})) if any(ks) else values
    sub = np.full(n, lead, dtype=np.int64)
    for k, tier in zip(reversed(ks), (iron, gold, platinum), strict=True):
        if k > 0:
            sub[values >= cut[n - k]] = tier
    tiers[positive] = sub
    return tiers


def _frequency_trend(agg, has, first_day, as_of_day, rate, params: SegmentParams) -> np.ndarray:
    window = params.trend_window_days
    recent_start = as_of_day - np.timedelta64(window, "D")
    earlier_start = recent_start - np.timedelta64(window, "D")
    fd = np.where(has, first_day, as_of_day)
    # The first purchase starts the repeat-purchase process: exclude it from the counts.
    rec = agg.tx_recent - (fd > recent_start)
    ear = agg.tx_earlier - ((fd > earlier_start) & (fd <= recent_start))
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


def _manager_departed(customers: pd.DataFrame, departed_managers) -> tuple[np.ndarray, np.ndarray]:
    """(departed, left_at): whether each customer's account manager left, and when (UTC ns; the
    smallest int64 when the entry has no date)."""
    unknown = np.iinfo(np.int64).min
    left = departed_manager_dates(departed_managers)
    if not left or "account_manager" not in customers.columns:
        return np.zeros(len(customers), dtype=bool), np.full(len(customers), unknown, dtype=np.int64)
    # Compare each distinct manager once (a few hundred), not every customer's.
    encoded = pc.dictionary_encode(_strings(customers["account_manager"]))
    when = [left.get(v.strip().casefold(), False) for v in encoded.dictionary.to_pylist()]
    hit = np.array([w is not False for w in when] + [False])
    dates = np.array([w.value if isinstance(w, pd.Timestamp) else unknown for w in when] + [unknown], dtype=np.int64)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return hit[codes], dates[codes]


def departed_manager_dates(entries) -> dict[str, pd.Timestamp | None]:
    """Departed managers by case-folded name, with the day they left (UTC) when the entry gives one.

    An entry is a name or `name,YYYY-MM-DD` (a date after the last comma: anything there with a digit
    must be one, a ConfigError names the entry otherwise; "Smith, John" is a name); a later entry for
    the same name keeps the earlier date."""
    out: dict[str, pd.Timestamp | None] = {}
    for entry in entries or ():
        name, date = str(entry).strip(), None
        head, sep, tail = name.rpartition(",")
        if sep and any(ch.isdigit() for ch in tail):
            try:
                date = pd.Timestamp(tail.strip())
            except (ValueError, TypeError):
                date = None
            if date is None or pd.isna(date):
                raise ConfigError(f"departed manager {entry!r}: {tail.strip()!r} is not a date (YYYY-MM-DD)",
                                  field="departed_managers")
            name = head.strip()
            date = date.tz_localize("UTC") if date.tzinfo is None else date.tz_convert("UTC")
        key = name.casefold()
        if not key:
            continue
        if key not in out:
            out[key] = date
        elif date is not None and (out[key] is None or date < out[key]):
            out[key] = date
    return out


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
