"""Simulated returns for the demo: which contacted (and held-out) customers order again, and when.

Each customer of `contacts` returns within the attribution window with their ground-truth
probability: p_base when held out or never really contacted, otherwise the truth's probability for
the offer kind of each contact (`call_task` → p_call), several cadence steps combining as
p = 1 − (1 − p_base)·Π(1 − u_step). Draws are coupled through one uniform U per customer:
U < p_base ⇒ they would have returned anyway ("baseline returner"); p_base ≤ U < p ⇒ they return
because of the contact ("incremental returner"). That makes the simulated uplift exactly the truth's
in expectation, and lets a coupon be used by baseline returners too (cannibalisation).

Timing: a baseline returner's first order is the first arrival of a Poisson process conditioned to
fall in the window, offset = days·ln(1 − U'·p_base)/ln(1 − p_base) (uniform when p_base → 0); an
incremental returner orders after the contact that won them (chosen ∝ u_step by an exponential
race) with a truncated exponential delay of mean 4 days. 1 + Poisson(0.25) orders per returner,
each Gamma(4, mean = return_order_value) in value. Coupons (a contact with a `coupon_code`) are
redeemed on the first returning order by 90% of incremental and 45% of baseline returners.

Randomness is derived from a hash of (seed, campaign, customer id), so a customer's outcome does
not depend on who else is in the frame, and a re-run gives identical orders. Order ids are
`SIM-<campaign>-<customer>-<n>` (`SIM-adhoc<seed>-…` when the contacts carry no `campaign_id`) so a
re-run for a campaign replaces its orders instead of duplicating them (`simulated_order_prefix`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from winback.demo.truth import contact_probability
from winback.demo.world import ORDER_COLUMNS
from winback.errors import DataError

CONTACT_COLUMNS = ("customer_id", "arm", "contacted", "offer_kind", "channel", "coupon_code", "contact_at")
INCREMENTAL_DELAY_DAYS = 4.0
EXTRA_ORDERS_MEAN = 0.25
COUPON_USE_INCREMENTAL = 0.9
COUPON_USE_BASELINE = 0.45
# Money off per redeemed coupon when the contacts carry no offer values (`offer_percent`/`offer_amount`).
DEFAULT_PERCENT = {"percent_off": 0.15}
DEFAULT_AMOUNT = {"amount_off": 30.0, "free_shipping": 10.0, "service_recovery": 50.0}
_HASH_KEY = "winback-demo-v01"  # 16 bytes, fixed: hashes must not change between releases


def simulated_order_prefix(campaign_id: str | None) -> str:
    """The order-id prefix of the returns simulated for one campaign (`SIM-<campaign>-`)."""
    return f"SIM-{campaign_id or 'adhoc'}-"


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014): a well-mixed uint64 from a uint64."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(key: np.ndarray, stream: int) -> np.ndarray:
    """A uniform in (0, 1) per key for one named stream (53-bit mantissa)."""
    with np.errstate(over="ignore"):
        z = _splitmix64(key ^ _splitmix64(np.full(len(key), stream, dtype=np.uint64)))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _keys(values: np.ndarray, seed: int, campaign: str) -> np.ndarray:
    """uint64 per value from the customer id, the seed and the campaign id."""
    base = pd.util.hash_array(values.astype(object), hash_key=_HASH_KEY, categorize=False)
    salt = pd.util.hash_array(np.array([f"{int(seed)}|{campaign}"], dtype=object), hash_key=_HASH_KEY)[0]
    return _splitmix64(base ^ np.uint64(salt))


def _contacts_frame(contacts: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in CONTACT_COLUMNS if c not in contacts.columns]
    if missing:
        raise DataError(f"contacts lack the column {missing[0]!r}", column=missing[0])
    frame = contacts.reset_index(drop=True).copy()
    try:
        at = pd.to_datetime(frame["contact_at"], utc=True)
    except (ValueError, TypeError) as exc:
        raise DataError(f"contact_at is not a timestamp ({exc})", column="contact_at") from None
    if at.isna().any():
        row = int(np.flatnonzero(at.isna().to_numpy())[0])
        raise DataError(f"no contact time for customer {frame['customer_id'].iloc[row]!r}", row=row + 1,
                        column="contact_at")
    frame["contact_at"] = at.astype("datetime64[ns, UTC]")
    frame["customer_id"] = frame["customer_id"].astype("str")
    holdout = (frame["arm"].astype("str") != "treatment").to_numpy()
    frame["contacted"] = frame["contacted"].fillna(False).astype(bool).to_numpy() & ~holdout
    return frame


def simulate_returns(contacts: pd.DataFrame, truth: pd.DataFrame, *, days: int = 30, seed: int) -> pd.DataFrame:
    """Orders placed by the contacted and held-out customers within `days` after their first contact."""
    if not 1 <= int(days) <= 365:
        raise DataError(f"the window must be 1–365 days, got {days}", column="days")
    frame = _contacts_frame(contacts)
    if frame.empty:
        return _empty_orders()
    # Without a campaign id the seed names the run, so two ad-hoc simulations never share order ids.
    campaign = (str(frame["campaign_id"].dropna().iloc[0]) if "campaign_id" in frame.columns
                and frame["campaign_id"].notna().any() else f"adhoc{int(seed)}")
    t_idx = pd.Index(truth["customer_id"].astype("str")).get_indexer(frame["customer_id"])
    if (t_idx < 0).any():
        unknown = frame["customer_id"].to_numpy()[t_idx < 0][0]
        raise DataError(f"customer {unknown!r} is not in the demo world's truth", column="customer_id")
    aligned = truth.iloc[t_idx].reset_index(drop=True)
    p_base_row = aligned["p_base"].to_numpy(dtype=float)
    p_row = contact_probability(aligned, frame["offer_kind"], frame["channel"])
    p_row = np.where(frame["contacted"].to_numpy(), p_row, p_base_row)
    frame["_u"] = np.clip(1.0 - (1.0 - p_row) / np.maximum(1.0 - p_base_row, 1e-12), 0.0, 1.0 - 1e-12)
    frame["_t_idx"] = t_idx
    frame = frame.sort_values(["customer_id", "contact_at"], kind="stable").reset_index(drop=True)

    row_keys = _keys(frame["customer_id"].to_numpy(), seed, campaign)
    step_no = frame.groupby("customer_id", sort=False).cumcount().to_numpy().astype(np.uint64)
    # The exponential race picks the step that won an incremental returner, with probability ∝ u_step.
    race = -np.log(_uniform(_splitmix64(row_keys + step_no), 2)) / np.maximum(frame["_u"].to_numpy(), 1e-300)
    frame["_race"] = np.where(frame["_u"].to_numpy() > 0, race, np.inf)
    grouped = frame.groupby("customer_id", sort=False)
    first = grouped.head(1).reset_index(drop=True)
    win_row = grouped["_race"].idxmin().reindex(first["customer_id"]).to_numpy()
    log_miss = np.log1p(-frame["_u"]).groupby(frame["customer_id"], sort=False).sum().reindex(first["customer_id"])
    u_all = 1.0 - np.exp(log_miss.to_numpy())

    tr = truth.iloc[first["_t_idx"].to_numpy()].reset_index(drop=True)
    p_base = tr["p_base"].to_numpy(dtype=float)
    p_treat = 1.0 - (1.0 - p_base) * (1.0 - u_all)
    keys = _keys(first["customer_id"].to_numpy(), seed, campaign)
    u = _uniform(keys, 10)
    baseline = u < p_base
    incremental = (u >= p_base) & (u < p_treat)
    returned = baseline | incremental

    start = _ns(first["contact_at"])
    day_ns = 86_400_000_000_000
    end = start + int(days) * day_ns
    # Baseline returners: first arrival of a Poisson process conditioned to fall in the window.
    u1 = _uniform(keys, 11)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(p_base > 1e-9, np.log1p(-u1 * p_base) / np.log1p(-np.minimum(p_base, 1 - 1e-12)), u1)
    t_first = start + (np.clip(frac, 0.0, 1.0) * days * day_ns).astype(np.int64)
    # Incremental returners: a truncated exponential delay after the contact that won them.
    win_at = _ns(frame["contact_at"])[win_row]
    room_days = np.maximum((end - win_at) / day_ns, 1e-6)
    u2 = _uniform(keys, 12)
    delay = -INCREMENTAL_DELAY_DAYS * np.log1p(-u2 * (1.0 - np.exp(-room_days / INCREMENTAL_DELAY_DAYS)))
    t_inc = win_at + (delay * day_ns).astype(np.int64)
    t_first = np.where(incremental, t_inc, t_first)
    t_first = np.clip(t_first, start + 60_000_000_000, end - 1_000_000_000)

    idx = np.flatnonzero(returned)
    if idx.size == 0:
        return _empty_orders()
    n_extra = _poisson(_uniform(keys[idx], 13), EXTRA_ORDERS_MEAN)
    n_orders = 1 + n_extra
    o_cust = np.repeat(idx, n_orders)
    o_seq = np.arange(len(o_cust)) - np.repeat(np.cumsum(n_orders) - n_orders, n_orders)
    o_keys = _splitmix64(keys[o_cust] + o_seq.astype(np.uint64))
    later = t_first[o_cust] + (_uniform(o_keys, 14) * (end[o_cust] - t_first[o_cust])).astype(np.int64)
    ordered_at = np.where(o_seq == 0, t_first[o_cust], later)
    rov = tr["return_order_value"].to_numpy(dtype=float)[o_cust]
    gross = np.maximum(np.round(_gamma4(_uniform(o_keys, 15), _uniform(o_keys, 16), _uniform(o_keys, 17),
                                        _uniform(o_keys, 18)) * rov, 2), 1.0)

    # Coupons: the winning contact's for incremental returners, the first coupon-bearing one otherwise.
    coupon_code, offer_kind, percent, amount_off, cap = _coupon_columns(frame, first, win_row, incremental, t_first)
    use_p = np.where(incremental, COUPON_USE_INCREMENTAL, COUPON_USE_BASELINE)
    uses = pd.notna(coupon_code) & (_uniform(keys, 19) < use_p)
    o_uses = uses[o_cust] & (o_seq == 0)
    off = np.where(np.isnan(percent[o_cust]), 0.0, gross * percent[o_cust]) + np.nan_to_num(amount_off[o_cust])
    off = np.where(np.isnan(cap[o_cust]), off, np.minimum(off, cap[o_cust]))  # the offer's max_discount
    discount = np.where(o_uses, np.round(np.minimum(off, gross), 2), 0.0)
    cust_ids = first["customer_id"].to_numpy()[o_cust]
    prefix = simulated_order_prefix(campaign)
    order_id = pd.Series(cust_ids, dtype="str").radd(prefix) + "-" + pd.Series(o_seq + 1).astype("str")
    category = tr["favourite_category"].to_numpy()[o_cust] if "favourite_category" in tr.columns else None
    orders = pd.DataFrame({
        "order_id": order_id.astype("str"),
        "customer_id": pd.array(cust_ids, dtype="str"),
        "ordered_at": pd.DatetimeIndex((ordered_at // 1_000_000_000 * 1_000_000_000).view("datetime64[ns]")).tz_localize("UTC"),
        "amount": np.round(gross - discount, 2),
        "category": pd.array(category if category is not None else [pd.NA] * len(o_cust), dtype="str"),
        "discount": discount,
        "coupon_code": pd.array(np.where(o_uses, coupon_code[o_cust], None), dtype="str"),
    })
    return orders.sort_values(["ordered_at", "order_id"], kind="stable").reset_index(drop=True)[list(ORDER_COLUMNS)]


def _coupon_columns(frame, first, win_row, incremental, t_first):
    """Per customer: the coupon they hold at the return (code, kind, percent, amount), NA when none."""
    has_coupon = frame["contacted"].to_numpy() & frame["coupon_code"].notna().to_numpy()
    first_coupon = (pd.Series(np.where(has_coupon, frame.index.to_numpy(), np.iinfo(np.int64).max))
                    .groupby(frame["customer_id"].to_numpy(), sort=False).min()
                    .reindex(first["customer_id"]).to_numpy())
    row = np.where(incremental, win_row, first_coupon)
    valid = row < len(frame)
    row_safe = np.where(valid, row, 0)
    code = np.where(valid & has_coupon[row_safe], frame["coupon_code"].to_numpy(dtype=object)[row_safe], None)
    at = _ns(frame["contact_at"])[row_safe]
    code = np.where(at <= t_first, code, None)  # a coupon can only be used once received
    kind = frame["offer_kind"].astype("str").to_numpy(dtype=object)[row_safe]
    percent = np.array([DEFAULT_PERCENT.get(k, np.nan) if isinstance(k, str) else np.nan for k in kind])
    amount = np.array([DEFAULT_AMOUNT.get(k, np.nan) if isinstance(k, str) else np.nan for k in kind])
    if "offer_percent" in frame.columns:
        given = pd.to_numeric(frame["offer_percent"], errors="coerce").to_numpy(dtype=float)[row_safe]
        percent = np.where(np.isnan(given), percent, given / 100.0)
    cap = np.full(len(row_safe), np.nan)
    if "offer_max_discount" in frame.columns:
        cap = pd.to_numeric(frame["offer_max_discount"], errors="coerce").to_numpy(dtype=float)[row_safe]
    if "offer_amount" in frame.columns:
        given = pd.to_numeric(frame["offer_amount"], errors="coerce").to_numpy(dtype=float)[row_safe]
        amount = np.where(np.isnan(given), amount, given)
    return np.array(code, dtype=object), kind, percent, amount, cap


def _ns(series: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch of a tz-aware timestamp series."""
    return pd.DatetimeIndex(series).as_unit("ns").asi8


def _poisson(u: np.ndarray, mean: float) -> np.ndarray:
    """Poisson(mean) by inversion of a uniform (small means only)."""
    k = np.zeros(len(u), dtype=np.int64)
    term = np.exp(-mean)
    cdf = np.full(len(u), term)
    for i in range(1, 20):
        more = u > cdf
        if not more.any():
            break
        k += more
        term = term * mean / i
        cdf = cdf + term
    return k


def _gamma4(u1, u2, u3, u4) -> np.ndarray:
    """Gamma(shape 4, mean 1) as the mean of four unit exponentials from four uniforms."""
    return -(np.log(u1) + np.log(u2) + np.log(u3) + np.log(u4)) / 4.0


def _empty_orders() -> pd.DataFrame:
    return pd.DataFrame({
        "order_id": pd.Series(dtype="str"), "customer_id": pd.Series(dtype="str"),
        "ordered_at": pd.Series(dtype="datetime64[ns, UTC]"), "amount": pd.Series(dtype="float64"),
        "category": pd.Series(dtype="str"), "discount": pd.Series(dtype="float64"),
        "coupon_code": pd.Series(dtype="str"),
    })


def contacts_from_ledger(rows: pd.DataFrame) -> pd.DataFrame:
    """Contacts (simulate_returns input) from ledger rows: contacted = state 'sent', time = sent_at or send_at_utc.

    Offer values (`offer_percent`, `offer_amount`) are read from each row's render `context` JSON
    when present, so redeemed coupons carry the campaign's real discount. `uncertain` rows (the
    provider may or may not have sent them) count as not contacted: the conservative choice.
    """
    required = ("campaign_id", "customer_id", "step", "arm", "state", "offer_kind", "channel",
                "coupon_code", "send_at_utc", "sent_at")
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise DataError(f"ledger rows lack the column {missing[0]!r}", column=missing[0])
    sent_at = pd.to_datetime(rows["sent_at"], utc=True)
    send_at = pd.to_datetime(rows["send_at_utc"], utc=True)
    contacts = pd.DataFrame({
        "campaign_id": rows["campaign_id"].astype("str").to_numpy(),
        "customer_id": rows["customer_id"].astype("str").to_numpy(),
        "step": pd.to_numeric(rows["step"]).to_numpy(),
        "arm": rows["arm"].astype("str").to_numpy(),
        "contacted": (rows["state"].astype("str") == "sent").to_numpy(),
        "offer_kind": rows["offer_kind"].astype("str").to_numpy(),
        "channel": rows["channel"].astype("str").to_numpy(),
        "coupon_code": rows["coupon_code"].astype("str").to_numpy(),
        "contact_at": sent_at.fillna(send_at).astype("datetime64[ns, UTC]").to_numpy(),
    })
    contacts["contact_at"] = pd.to_datetime(contacts["contact_at"], utc=True).astype("datetime64[ns, UTC]")
    if "context" in rows.columns:
        percent, amount, cap = _offer_values(rows["context"])
        contacts["offer_percent"] = percent
        contacts["offer_amount"] = amount
        contacts["offer_max_discount"] = cap
    return contacts


def _offer_values(context: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`offer.percent`, `offer.amount` and `offer.max_discount` from render-context JSON strings (NaN when
    absent or unreadable)."""
    import json

    percent = np.full(len(context), np.nan)
    amount = np.full(len(context), np.nan)
    cap = np.full(len(context), np.nan)
    for i, text in enumerate(context.to_numpy(dtype=object)):
        if not isinstance(text, str) or '"offer"' not in text:
            continue
        try:
            offer = json.loads(text).get("offer") or {}
        except (ValueError, AttributeError):
            continue
        for target, key in ((percent, "percent"), (amount, "amount"), (cap, "max_discount")):
            value = offer.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                target[i] = float(value)
    return percent, amount, cap


def replace_simulated_orders(orders: pd.DataFrame, new_orders: pd.DataFrame,
                             campaign_id: str) -> tuple[pd.DataFrame, int]:
    """`orders` without the campaign's earlier simulated orders, plus `new_orders`; and how many were replaced."""
    prefix = simulated_order_prefix(campaign_id)
    old = orders["order_id"].astype("str").str.startswith(prefix).to_numpy()
    kept = orders.loc[~old]
    parts = [kept, new_orders[list(orders.columns.intersection(new_orders.columns))]]
    combined = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else kept
    for col in ("ordered_at",):
        if col in combined.columns:
            combined[col] = pd.to_datetime(combined[col], utc=True).astype("datetime64[ns, UTC]")
    return combined.reset_index(drop=True), int(old.sum())
