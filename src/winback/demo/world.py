"""The demo world: a retail customer base with two years of orders from a known generative model.

Everything is vectorized numpy (no per-customer Python loop), deterministic given `seed`, and
anchored at `as_of` (the clock is never read here). Time `t` is in days since the start of the
history, `H` = 730 days before `as_of`.

Purchases, fading and dropout (BG/NBD, Fader, Hardie & Lee 2005, with causes)
    λ_i ~ Gamma(r=1.1, rate α=11)/day          purchase rate while healthy (mean ≈ 36 orders/year)
    p_i ~ Beta(a=0.7, b=7)                     dropout probability after each purchase (×1.4 for
                                               price-sensitive customers)
    t0_i ~ U(0, H−14)                          first purchase (acquisition spread over two years)
    Candidate purchases after t0 form a Poisson(λ_i) process on (t0, H). After every purchase:
    * the customer may start to *fade* (a lasting drop of their rate to 0.12·λ_i, i.e. later
      candidates are kept with probability 0.12), with probability
      1 − (1−f_service)(1−f_manager)(1−f_price)(1−f_forgotten):
        f_service = 0.35 if that purchase raised a complaint left unresolved
        f_manager = 0.30 if their account manager had left by then
        f_price   = 0.06 for price-sensitive customers (s > 0.5)
        f_forgotten = 0.03 for everyone (drifting away with no particular reason)
      the first fade names its reason (service > manager_left > price > forgotten);
    * the customer may die (BG/NBD dropout) with probability
      1 − (1−p_i)(1−h_service)(1−h_manager)(1−h_competitor):
        h_service = 0.35 if that purchase raised a complaint left unresolved
        h_manager = 0.30 if their account manager had left by then
        h_competitor = 0.08 once they moved a favourite category to a competitor (below)
      and an explicit cause (service > manager_left > competitor) names the death; a base death
      (p_i) is blamed on the fade that preceded it, else `price` for price-sensitive customers and
      `forgotten` otherwise.
    Simulation: n_i = 1 + Poisson(λ_i·(H−t0_i)) candidates placed as uniform order statistics via
    normalised exponential spacings; grouped cumulative sums thin the candidates after the first
    fade and keep every purchase up to and including the first death. Fitting BG/NBD on the result
    gives a mean rate below λ's (fading and category switching thin purchases) and a/b reflecting
    the mixture of base and event-driven dropout.
    Truth reason: alive and not faded → `none` (or `competitor` after a switch); faded → the fade's
    reason; dead → the cause of death above.
Spend (Gamma-Gamma, Fader, Hardie & Lee 2005 "RFM and CLV")
    ν_i ~ Gamma(q=3.5, rate γ=104); order value z ~ Gamma(p=6, rate ν_i) so the customer's mean
    order value is 6/ν_i (median ≈ 200, heavy right tail), times a category price factor.
Categories: a favourite category (by popularity) takes a Beta(5,3) share of a customer's orders;
    the rest spread over the other categories. 12% of customers "switch" at
    τ_i = t0_i + U(0.2, 1.1)·(H−t0_i): afterwards their favourite category orders vanish (bought at a
    competitor) — the category-drop signal — and the competitor hazard applies.
Discounts: price sensitivity s_i ~ Beta(0.7, 2.5); an order is discounted with probability
    0.08 + 0.8·s_i, by 10/15/20/30%. `amount` is what was paid, `discount` the money taken off.
Complaints: per order with probability c_i ~ Beta(0.6, 20), created 2 h–5 days after the order,
    resolved with probability 0.65 (unresolved ones make fading and dropout likelier, see above).
Account managers: the top ~8% of customers by true value get one (90% of platinum, 75% of gold);
    one manager per ~150 such customers, ~25% of managers left the company 20–420 days before
    `as_of` (`World.managers`, `World.departed_managers`).
True value and tiers: true_value = 365·λ_i·mean order value (annual spend potential); tiers by
    quantile: platinum top 1.5%, gold next 6.5%, iron next 27%, lead the remaining 65%.
People: 75% zh-CN (Chinese names, 88% Asia/Shanghai), 25% en-US (English names, US/UK/Asia time
    zones); emails on RFC 2606 domains, phones in reserved ranges (see `winback.demo.names`),
    birthdays (12% missing), consent per channel, ~5% without email and ~7% without phone, 2% who
    registered but never ordered.
Ground truth: `winback.demo.truth` (30-day return probabilities with and without each offer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from winback.demo import names
from winback.demo.truth import (
    PROBABILITY_COLUMNS,
    TRUTH_COLUMNS,
    baseline_probability,
    incremental_effects,
    treated_probabilities,
)
from winback.errors import ConfigError
from winback.vocab import REASONS, VALUE_TIERS

CUSTOMER_COLUMNS = (
    "customer_id", "email", "phone", "locale", "timezone", "email_opt_in", "sms_opt_in", "first_name",
    "last_name", "birthday", "account_manager", "gender", "signup_at",
)
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "amount", "category", "discount", "coupon_code")
COMPLAINT_COLUMNS = ("customer_id", "created_at", "kind", "resolved", "order_id")


@dataclass(frozen=True)
class WorldParams:
    """Parameters of the generative model (module docstring); defaults give ≈10 orders per customer."""

    history_days: int = 730
    r: float = 1.1
    alpha: float = 11.0
    a: float = 0.7
    b: float = 7.0
    price_dropout_factor: float = 1.4
    gg_p: float = 6.0
    gg_q: float = 3.5
    gg_gamma: float = 104.0
    zh_share: float = 0.75
    never_ordered_share: float = 0.02
    switch_share: float = 0.12
    complaint_a: float = 0.6
    complaint_b: float = 20.0
    complaint_resolved: float = 0.65
    h_service: float = 0.35
    h_manager: float = 0.30
    h_competitor: float = 0.08
    f_service: float = 0.35
    f_manager: float = 0.30
    f_price: float = 0.06
    f_forgotten: float = 0.03
    fade_keep: float = 0.12
    customers_per_manager: int = 150
    departed_manager_share: float = 0.25
    tier_quantiles: tuple[float, float, float] = (0.985, 0.92, 0.65)
    max_candidates: int = 600


@dataclass
class World:
    """A generated demo world: the input frames, the ground truth and the account-manager roster."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    complaints: pd.DataFrame
    truth: pd.DataFrame
    managers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["name", "left_at"]))
    as_of: pd.Timestamp | None = None
    seed: int | None = None

    @property
    def departed_managers(self) -> list[str]:
        """Names of account managers who have left the company (customers tend to follow them)."""
        return sorted(self.managers.loc[self.managers["left_at"].notna(), "name"].astype(str).tolist())

    @property
    def departed_manager_entries(self) -> list[str]:
        """`name,YYYY-MM-DD` (the day they left, UTC) per departed manager, as segmentation reads them."""
        left = self.managers[self.managers["left_at"].notna()].sort_values("name")
        return [f"{name},{pd.Timestamp(when).tz_convert('UTC'):%Y-%m-%d}"
                for name, when in zip(left["name"].astype(str), left["left_at"], strict=True)]


def _utc(as_of) -> pd.Timestamp:
    ts = pd.Timestamp(as_of)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def generate_world(n_customers: int, *, seed: int, as_of, params: WorldParams = WorldParams()) -> World:
    """Generate a deterministic demo world of `n_customers` with about two years of history before `as_of`."""
    if not isinstance(n_customers, int | np.integer) or n_customers < 1:
        raise ConfigError(f"number of customers must be a positive integer, got {n_customers!r}",
                          field="--customers")
    if n_customers > 50_000_000:
        raise ConfigError("at most 50,000,000 customers", field="--customers")
    as_of = _utc(as_of)
    n = int(n_customers)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x57B]))
    H = float(params.history_days)

    lat = _latents(n, rng, params, H)
    managers, manager_idx, left_t = _managers(lat, rng, params, H, as_of)
    lat["manager_left_t"] = np.where(manager_idx >= 0, left_t[np.maximum(manager_idx, 0)], np.inf)
    rows = _simulate_purchases(lat, rng, params, H)
    orders, complaints = _orders_and_complaints(lat, rows, rng, params, H, as_of)
    customers = _customers(lat, manager_idx, managers, rng, H, as_of)
    truth = _truth(lat, rows, customers, H, as_of, params)
    return World(customers=customers, orders=orders, complaints=complaints, truth=truth,
                 managers=managers, as_of=as_of, seed=int(seed))


def _latents(n: int, rng: np.random.Generator, prm: WorldParams, H: float) -> dict[str, np.ndarray]:
    """Per-customer latent traits: rate, dropout, spend, price sensitivity, categories, switching."""
    lam = np.maximum(rng.gamma(prm.r, 1.0 / prm.alpha, n), 1.0 / 3000.0)
    p = rng.beta(prm.a, prm.b, n)
    nu = rng.gamma(prm.gg_q, 1.0 / prm.gg_gamma, n)
    mean_spend = np.clip(prm.gg_p / nu, 15.0, 50_000.0)
    s = rng.beta(0.7, 2.5, n)
    price_sensitive = s > 0.5
    p_eff = np.clip(np.where(price_sensitive, p * prm.price_dropout_factor, p), 0.0, 0.95)
    cat_values, cat_w = names.weights(names.CATEGORIES)
    fav = rng.choice(len(cat_values), size=n, p=cat_w).astype(np.int8)
    fav_share = rng.beta(5.0, 3.0, n)
    t0 = rng.uniform(0.0, H - 14.0, n)
    switcher = rng.random(n) < prm.switch_share
    tau = np.where(switcher, t0 + rng.uniform(0.2, 1.1, n) * (H - t0), np.inf)
    complaint_rate = rng.beta(prm.complaint_a, prm.complaint_b, n)
    has_orders = rng.random(n) >= prm.never_ordered_share
    true_value = np.where(has_orders, 365.0 * lam * mean_spend, 0.0)
    q_plat, q_gold, q_iron = np.quantile(true_value, prm.tier_quantiles)
    tier = np.select([true_value >= q_plat, true_value >= q_gold, true_value >= q_iron], [0, 1, 2], 3)
    tier = np.where(has_orders, tier, 3).astype(np.int8)
    return {
        "lam": lam, "p": p, "p_eff": p_eff, "mean_spend": mean_spend, "s": s,
        "price_sensitive": price_sensitive, "fav": fav, "fav_share": fav_share, "t0": t0,
        "switcher": switcher, "tau": tau, "complaint_rate": complaint_rate, "has_orders": has_orders,
        "true_value": true_value, "tier": tier,
    }


def _managers(lat, rng, prm: WorldParams, H: float, as_of: pd.Timestamp):
    """Account managers for high-value customers; some left the company (left_t in history days)."""
    n = len(lat["lam"])
    tier = lat["tier"]
    gets = ((tier == 0) & (rng.random(n) < 0.9)) | ((tier == 1) & (rng.random(n) < 0.75))
    n_managers = int(np.clip(round(gets.sum() / prm.customers_per_manager), 3, 2000))
    sur, _ = names.weights(names.ZH_SURNAMES)
    given = np.array([g[0] for g in names.ZH_GIVEN], dtype=object)
    combos = rng.choice(len(sur) * len(given), size=min(n_managers, len(sur) * len(given)), replace=False)
    mgr_names = np.array([f"{sur[c // len(given)]}{given[c % len(given)]}" for c in combos], dtype=object)
    n_managers = len(mgr_names)
    n_departed = max(1, int(round(prm.departed_manager_share * n_managers)))
    departed = np.zeros(n_managers, dtype=bool)
    departed[rng.choice(n_managers, size=n_departed, replace=False)] = True
    left_t = np.where(departed, H - rng.uniform(20.0, 420.0, n_managers), np.inf)
    manager_idx = np.where(gets, rng.integers(0, n_managers, n), -1).astype(np.int32)
    start = as_of - pd.Timedelta(days=H)
    left_at = pd.to_datetime(
        np.where(departed, (start.value + left_t * 86_400e9), np.nan).astype("float64"), utc=True
    ).floor("D")
    managers = pd.DataFrame({"name": pd.array(mgr_names, dtype="str"),
                             "left_at": pd.Series(left_at).astype("datetime64[ns, UTC]"),
                             "customers": np.bincount(manager_idx[manager_idx >= 0], minlength=n_managers)})
    return managers, manager_idx, left_t


def _grouped_cumsum(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every group (rows grouped contiguously, `starts` = first rows)."""
    cs = np.cumsum(values)
    before = cs[starts] - values[starts]
    return cs - np.repeat(before, counts)


def _simulate_purchases(lat, rng, prm: WorldParams, H: float) -> dict[str, np.ndarray]:
    """Candidate purchases → category, switching, complaints, dropout; keep up to the first death."""
    n = len(lat["lam"])
    T = H - lat["t0"]
    n_cand = np.where(lat["has_orders"], 1 + rng.poisson(lat["lam"] * T), 0)
    n_cand = np.minimum(n_cand, prm.max_candidates).astype(np.int64)
    total = int(n_cand.sum())
    g = np.repeat(np.arange(n, dtype=np.int32), n_cand)
    starts = np.cumsum(n_cand) - n_cand
    # Uniform order statistics on (t0, H) from normalised exponential spacings: with m = n−1 repeat
    # purchases and E_0..E_m ~ Exp(1), purchase k ≥ 1 is at t0 + T·S_{k−1}/S_m (S = partial sums).
    e = rng.standard_exponential(total)
    S = _grouped_cumsum(e, starts[n_cand > 0], n_cand[n_cand > 0])
    last = np.repeat(S[starts[n_cand > 0] + n_cand[n_cand > 0] - 1], n_cand[n_cand > 0])
    S_prev = S - e
    t = lat["t0"][g] + T[g] * (S_prev / last)
    del e, S, S_prev, last
    # Categories: the favourite with the customer's share, otherwise uniformly one of the others.
    k = len(names.CATEGORIES)
    fav = lat["fav"][g]
    other = (fav + 1 + rng.integers(0, k - 1, total)) % k
    cat = np.where(rng.random(total, dtype=np.float32) < lat["fav_share"][g], fav, other).astype(np.int8)
    # Switchers buy their favourite category elsewhere after τ: those purchases never reach us.
    keep = ~((cat == fav) & (t > lat["tau"][g]))
    g, t, cat = g[keep], t[keep], cat[keep]
    total = len(g)
    counts = np.bincount(g, minlength=n)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    complaint = rng.random(total, dtype=np.float32) < lat["complaint_rate"][g]
    unresolved = complaint & (rng.random(total, dtype=np.float32) >= prm.complaint_resolved)
    after_manager = t > lat["manager_left_t"][g]
    # Fading: a purchase may trigger a lasting drop of the rate to `fade_keep`·λ (thinning the later
    # candidates) — the slipping-but-alive customers a win-back campaign is really for.
    f_service = unresolved & (rng.random(total, dtype=np.float32) < prm.f_service)
    f_manager = after_manager & (rng.random(total, dtype=np.float32) < prm.f_manager)
    f_price = lat["price_sensitive"][g] & (rng.random(total, dtype=np.float32) < prm.f_price)
    f_forgotten = rng.random(total, dtype=np.float32) < prm.f_forgotten
    fade = f_service | f_manager | f_price | f_forgotten
    fade_cause = np.select([f_service, f_manager, f_price, f_forgotten], [1, 2, 4, 5], 0).astype(np.int8)
    del f_service, f_manager, f_price, f_forgotten
    fade_i = fade.astype(np.int32)
    faded_before = (_grouped_cumsum(fade_i, starts[has], counts[has]) - fade_i) > 0
    keep = ~faded_before | (rng.random(total, dtype=np.float32) < prm.fade_keep)
    g, t, cat, complaint, unresolved, after_manager, fade, fade_cause = (
        g[keep], t[keep], cat[keep], complaint[keep], unresolved[keep], after_manager[keep], fade[keep],
        fade_cause[keep],
    )
    total = len(g)
    counts = np.bincount(g, minlength=n)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    d_service = unresolved & (rng.random(total, dtype=np.float32) < prm.h_service)
    d_manager = after_manager & (rng.random(total, dtype=np.float32) < prm.h_manager)
    d_competitor = (t > lat["tau"][g]) & (rng.random(total, dtype=np.float32) < prm.h_competitor)
    d_base = rng.random(total, dtype=np.float32) < lat["p_eff"][g]
    died = d_service | d_manager | d_competitor | d_base
    base_code = np.where(lat["price_sensitive"][g], 4, 5)
    cause = np.select([d_service, d_manager, d_competitor, d_base], [1, 2, 3, base_code], 0).astype(np.int8)
    died_i = died.astype(np.int32)
    deaths_before = _grouped_cumsum(died_i, starts[has], counts[has]) - died_i
    keep = deaths_before == 0
    g, t, cat, complaint, unresolved, died, cause, fade, fade_cause = (
        g[keep], t[keep], cat[keep], complaint[keep], unresolved[keep], died[keep], cause[keep], fade[keep],
        fade_cause[keep],
    )
    is_last = np.r_[g[1:] != g[:-1], True] if len(g) else np.zeros(0, dtype=bool)
    last_t = np.full(n, np.nan)
    last_t[g[is_last]] = t[is_last]
    dead = np.zeros(n, dtype=bool)
    dead[g[died]] = True
    death_cause = np.zeros(n, dtype=np.int8)
    death_cause[g[died]] = cause[died]
    # The first fade of each customer names it (later fade draws change nothing).
    faded = np.zeros(n, dtype=bool)
    first_fade = np.zeros(n, dtype=np.int8)
    fade_rows = np.flatnonzero(fade)
    firsts = fade_rows[np.r_[True, g[fade_rows[1:]] != g[fade_rows[:-1]]]] if len(fade_rows) else fade_rows
    faded[g[firsts]] = True
    first_fade[g[firsts]] = fade_cause[firsts]
    faded_at = np.full(n, np.nan)
    faded_at[g[firsts]] = t[firsts]
    return {"g": g, "t": t, "cat": cat, "complaint": complaint, "unresolved": unresolved,
            "dead": dead, "death_cause": death_cause, "last_t": last_t, "faded": faded,
            "fade_cause": first_fade, "faded_at": faded_at,
            "n_orders": np.bincount(g, minlength=n)}


def _local_to_utc(day_float: np.ndarray, tz_idx: np.ndarray, rng, start: pd.Timestamp) -> np.ndarray:
    """Turn history days into UTC nanoseconds at a plausible local shopping hour of each customer's zone."""
    hours = np.array(names.ORDER_HOUR_WEIGHTS)
    hour = rng.choice(24, size=len(day_float), p=hours / hours.sum())
    sec = hour * 3600 + rng.integers(0, 3600, len(day_float))
    day = np.floor(day_float).astype(np.int64)
    out = np.empty(len(day_float), dtype=np.int64)
    for z, tz in enumerate(names.TIMEZONES):
        m = tz_idx == z
        if not m.any():
            continue
        local_midnight = start.tz_convert(tz).normalize().tz_localize(None).value
        naive = local_midnight + day[m] * 86_400_000_000_000 + sec[m] * 1_000_000_000
        idx = pd.DatetimeIndex(naive.astype("datetime64[ns]"))
        aware = idx.tz_localize(tz, ambiguous=np.ones(len(idx), dtype=bool), nonexistent="shift_forward")
        out[m] = aware.tz_convert("UTC").asi8
    return out


def _orders_and_complaints(lat, rows, rng, prm: WorldParams, H: float, as_of: pd.Timestamp):
    """The orders and complaints frames (contract columns, UTC timestamps, string ids)."""
    g, t, cat = rows["g"], rows["t"], rows["cat"]
    total = len(g)
    start = as_of - pd.Timedelta(days=H)
    lat["tz_idx"] = _assign_timezones(lat, rng, prm)
    ts = _local_to_utc(t, lat["tz_idx"][g], rng, start)
    # A shopping hour late on the last day may land after as_of: pull it back inside the history.
    late = ts >= as_of.value
    ts[late] = as_of.value - rng.integers(60, 6 * 3600, int(late.sum())) * 1_000_000_000
    price_factor = np.array(names.CATEGORY_PRICE_FACTOR)[cat]
    gross = rng.gamma(prm.gg_p, lat["mean_spend"][g] * price_factor / prm.gg_p)
    gross = np.maximum(np.round(gross, 2), 1.0)
    on_discount = rng.random(total, dtype=np.float32) < 0.08 + 0.8 * lat["s"][g]
    pct = np.array([0.10, 0.15, 0.20, 0.30])[rng.integers(0, 4, total)]
    discount = np.where(on_discount, np.round(gross * pct, 2), 0.0)
    amount = np.round(gross - discount, 2)
    cust_ids = _customer_ids(len(lat["lam"]))
    cat_values, _ = names.weights(names.CATEGORIES)
    order_ids = pc.binary_join_element_wise(
        "O", pc.utf8_lpad(pa.array(np.arange(1, total + 1)).cast(pa.string()), width=10, padding="0"), ""
    )
    orders = pd.DataFrame({
        "order_id": order_ids.to_pandas(),
        "customer_id": cust_ids.take(pa.array(g)).to_pandas(),
        "ordered_at": _utc_from_ns(ts),
        "amount": amount,
        "category": pa.array(cat_values.astype(str)).take(pa.array(cat)).to_pandas(),
        "discount": discount,
        "coupon_code": pd.Series(pd.NA, index=range(total), dtype="str"),
    })
    ci = np.flatnonzero(rows["complaint"])
    kinds, kind_w = names.weights(names.COMPLAINT_KINDS)
    created = ts[ci] + (rng.uniform(2 / 24, 5.0, len(ci)) * 86_400e9).astype(np.int64)
    created = np.minimum(created, as_of.value - 60_000_000_000)
    created = np.maximum(created, ts[ci])
    complaints = pd.DataFrame({
        "customer_id": orders["customer_id"].iloc[ci].reset_index(drop=True),
        "created_at": _utc_from_ns(created // 1_000_000_000 * 1_000_000_000),
        "kind": _take_str(kinds.astype(str), rng.choice(len(kinds), size=len(ci), p=kind_w)),
        "resolved": ~rows["unresolved"][ci],
        "order_id": orders["order_id"].iloc[ci].reset_index(drop=True),
    })
    complaints = complaints.sort_values(["created_at", "customer_id"], kind="stable").reset_index(drop=True)
    return orders, complaints


def _take_str(values, idx: np.ndarray) -> pd.Series:
    """A `str` Series of `values[idx]` built in Arrow (no Python objects per row); None in values → NA."""
    return pa.array(list(values), type=pa.string()).take(pa.array(idx)).to_pandas()


def _utc_from_ns(ns: np.ndarray) -> pd.DatetimeIndex:
    """UTC timestamps (datetime64[ns, UTC]) from int64 nanoseconds since the epoch, without parsing."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")


def _customer_ids(n: int) -> pa.Array:
    width = max(7, len(str(n)))
    return pc.binary_join_element_wise(
        "C", pc.utf8_lpad(pa.array(np.arange(1, n + 1)).cast(pa.string()), width=width, padding="0"), ""
    )


def _assign_timezones(lat, rng, prm: WorldParams) -> np.ndarray:
    """Locale (sets `lat["zh"]`) and time-zone index into `names.TIMEZONES` per customer."""
    n = len(lat["lam"])
    zh = rng.random(n) < prm.zh_share
    lat["zh"] = zh
    tz_all = list(names.TIMEZONES)
    zh_tz, zh_w = names.weights(names.ZH_TIMEZONES)
    en_tz, en_w = names.weights(names.EN_TIMEZONES)
    zh_pick = np.array([tz_all.index(z) for z in zh_tz])[rng.choice(len(zh_tz), size=n, p=zh_w)]
    en_pick = np.array([tz_all.index(z) for z in en_tz])[rng.choice(len(en_tz), size=n, p=en_w)]
    return np.where(zh, zh_pick, en_pick).astype(np.int8)


def _join(*parts) -> pa.Array:
    """Concatenate arrow string arrays / scalars element-wise (no separator)."""
    return pc.binary_join_element_wise(*parts, "")


def _customers(lat, manager_idx, managers, rng, H: float, as_of: pd.Timestamp) -> pd.DataFrame:
    """The customers frame: names, contact points on reserved ranges, locale, zone, consent, birthday."""
    n = len(lat["lam"])
    zh = lat["zh"]
    tz_idx = lat["tz_idx"]
    number = pa.array(np.arange(1, n + 1)).cast(pa.string())
    # Names: zh-CN surname/given with pinyin for the email; en-US first/last.
    sur, sur_w = names.weights(names.ZH_SURNAMES)
    s_i = rng.choice(len(sur), size=n, p=sur_w)
    gv_i = rng.integers(0, len(names.ZH_GIVEN), n)
    ef_i = rng.integers(0, len(names.EN_FIRST), n)
    el_i = rng.integers(0, len(names.EN_LAST), n)
    zh_sur = pa.array([s[0] for s in names.ZH_SURNAMES]).take(pa.array(s_i))
    zh_sur_py = pa.array([s[1] for s in names.ZH_SURNAMES]).take(pa.array(s_i))
    zh_giv = pa.array([x[0] for x in names.ZH_GIVEN]).take(pa.array(gv_i))
    zh_giv_py = pa.array([x[1] for x in names.ZH_GIVEN]).take(pa.array(gv_i))
    en_first = pa.array(list(names.EN_FIRST)).take(pa.array(ef_i))
    en_last = pa.array(list(names.EN_LAST)).take(pa.array(el_i))
    en_first_l = pc.utf8_lower(en_first)
    en_last_l = pc.replace_substring(pc.utf8_lower(en_last), "'", "")
    zh_mask = pa.array(zh)
    first = pc.if_else(zh_mask, zh_giv, en_first)
    last = pc.if_else(zh_mask, zh_sur, en_last)
    # Email local parts carry the customer number, so every address is unique.
    style = pa.array(rng.random(n) < 0.5)
    zh_local = pc.if_else(style, _join(zh_giv_py, ".", zh_sur_py, number), _join(zh_sur_py, zh_giv_py, number))
    en_local = pc.if_else(style, _join(en_first_l, ".", en_last_l, number),
                          _join(pc.utf8_slice_codeunits(en_first_l, 0, 1), en_last_l, number))
    domain = pa.array(list(names.EMAIL_DOMAINS)).take(pa.array(rng.integers(0, 3, n)))
    email = _join(pc.if_else(zh_mask, zh_local, en_local), "@", domain)
    # Phones: +86 mobiles (unique subscriber part), +1 NPA 555-01XX, +44 Ofcom drama numbers.
    subscriber = (np.arange(n, dtype=np.int64) * 7919 + 1_234_567) % 100_000_000
    cn = _join("+86", pa.array(list(names.CN_MOBILE_PREFIXES)).take(
        pa.array(rng.integers(0, len(names.CN_MOBILE_PREFIXES), n))),
        pc.utf8_lpad(pa.array(subscriber).cast(pa.string()), width=8, padding="0"))
    us = _join("+1", pa.array(list(names.US_AREA_CODES)).take(pa.array(rng.integers(0, len(names.US_AREA_CODES), n))),
               "55501", pc.utf8_lpad(pa.array(rng.integers(0, 100, n)).cast(pa.string()), width=2, padding="0"))
    uk = _join("+44", pa.array(list(names.UK_DRAMA_PREFIXES)).take(
        pa.array(rng.integers(0, len(names.UK_DRAMA_PREFIXES), n))),
        pc.utf8_lpad(pa.array(rng.integers(0, 1000, n)).cast(pa.string()), width=3, padding="0"))
    london = tz_idx == names.TIMEZONES.index("Europe/London")
    phone = pc.if_else(zh_mask, cn, pc.if_else(pa.array(london), uk, us))
    no_email = rng.random(n) < np.where(zh, 0.06, 0.03)
    no_phone = rng.random(n) < np.where(zh, 0.04, 0.15)
    null = pa.scalar(None, type=pa.string())
    email_s = pc.if_else(pa.array(no_email), null, email).to_pandas()
    phone_s = pc.if_else(pa.array(no_phone), null, phone).to_pandas()
    email_opt_in = ~no_email & (rng.random(n) < 0.84)
    sms_opt_in = ~no_phone & (rng.random(n) < np.where(zh, 0.72, 0.55))
    # Birthdays: ages 18–75 skewed young; 12% never told us.
    age_days = (18 + rng.beta(2.0, 3.5, n) * 57) * 365.25
    bday_ns = (as_of.tz_convert("Asia/Shanghai").normalize().tz_localize(None).value
               - (age_days * 86_400e9).astype(np.int64))
    birthday = pd.Series(pd.DatetimeIndex(bday_ns.astype("datetime64[ns]")).normalize())
    birthday[rng.random(n) < 0.12] = pd.NaT
    start = as_of - pd.Timedelta(days=H)
    signup_ns = start.value + ((lat["t0"] - rng.uniform(0.0, 3.0, n)) * 86_400e9).astype(np.int64)
    mgr_values = [*managers["name"].astype(str).tolist(), None]
    mgr_idx = np.where(manager_idx >= 0, manager_idx, len(mgr_values) - 1)
    gender_idx = (rng.random(n) >= 0.58).astype(np.int8)
    customers = pd.DataFrame({
        "customer_id": _customer_ids(n).to_pandas(),
        "email": email_s,
        "phone": phone_s,
        "locale": _take_str(("zh-CN", "en-US"), (~zh).astype(np.int8)),
        "timezone": _take_str(names.TIMEZONES, tz_idx),
        "email_opt_in": email_opt_in,
        "sms_opt_in": sms_opt_in,
        "first_name": first.to_pandas(),
        "last_name": last.to_pandas(),
        "birthday": birthday,
        "account_manager": _take_str(mgr_values, mgr_idx),
        "gender": _take_str(("F", "M"), gender_idx),
        "signup_at": _utc_from_ns(signup_ns // 1_000_000_000 * 1_000_000_000),
    })
    return customers


def _birthday_in_window(birthday: pd.Series, as_of: pd.Timestamp, days: int = 30) -> np.ndarray:
    """True when the customer's next birthday falls within `days` after `as_of` (local calendar)."""
    today = as_of.tz_convert("Asia/Shanghai").tz_localize(None).normalize()
    doy = birthday.dt.day_of_year.to_numpy(dtype=float, na_value=np.nan)
    ahead = (doy - today.day_of_year) % 365
    return np.nan_to_num(ahead, nan=999.0) < days


def _truth(lat, rows, customers: pd.DataFrame, H: float, as_of: pd.Timestamp,
           prm: WorldParams) -> pd.DataFrame:
    """The ground-truth frame (state, reason, 30-day return probabilities) per customer."""
    has_orders = rows["n_orders"] > 0
    alive = has_orders & ~rows["dead"]
    last_t = rows["last_t"]
    days_since = H - last_t
    # A switch counts when it happened while the customer was still with us (before death / as_of).
    end = np.where(rows["dead"], last_t, H)
    switched = lat["switcher"] & (lat["tau"] < end) & has_orders
    rate_eff = np.where(switched, lat["lam"] * (1.0 - lat["fav_share"]), lat["lam"])
    codes = np.array(["none", "service", "manager_left", "competitor", "price", "forgotten"], dtype=object)
    faded = rows["faded"] & has_orders
    rate_eff = np.where(faded, rate_eff * prm.fade_keep, rate_eff)
    death_cause = rows["death_cause"]
    # Dead: an explicit cause of death wins; a base death is blamed on the fade that preceded it, if any.
    explicit = np.isin(death_cause, (1, 2, 3))
    dead_code = np.where(explicit, death_cause, np.where(faded, rows["fade_cause"],
                                                         np.where(switched, 3, death_cause)))
    alive_code = np.where(faded, rows["fade_cause"], np.where(switched, 3, 0))
    reason = codes[np.where(alive, alive_code, np.where(has_orders, dead_code, 0))]
    tier = np.array(VALUE_TIERS)[lat["tier"]]  # numpy strings for the effect lookup below
    bday_window = _birthday_in_window(customers["birthday"], as_of)
    has_manager = customers["account_manager"].notna().to_numpy()
    p_base = baseline_probability(alive, rate_eff, days_since, has_orders)
    effects = incremental_effects(reason, tier, alive, days_since, bday_window, has_manager)
    treated = treated_probabilities(p_base, effects)
    truth = pd.DataFrame({
        "customer_id": customers["customer_id"],
        "true_reason": _take_str(REASONS, pd.Index(REASONS).get_indexer(reason)),
        "alive": alive,
        "p_base": p_base,
        **{col: treated[col] for col in PROBABILITY_COLUMNS},
        "return_order_value": np.round(lat["mean_spend"], 2),
        "true_tier": _take_str(VALUE_TIERS, lat["tier"]),
        "true_value": np.round(lat["true_value"], 2),
        "purchase_rate": rate_eff,
        "dropout_p": lat["p_eff"],
        "price_sensitivity": lat["s"],
        "birthday_window": bday_window,
        "days_since_last_order": days_since,
        "favourite_category": _take_str(names.weights(names.CATEGORIES)[0].astype(str), lat["fav"]),
    })
    assert tuple(truth.columns) == TRUTH_COLUMNS
    return truth
