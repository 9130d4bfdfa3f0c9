"""Feedback into offer choice: measured results per (offer kind, value tier) and a Thompson-sampling learner.

`offer_results_from(result)` turns a measurement into the ledger's `offer_results` rows;
`ThompsonLearner` reads them back and implements `winback.offers.learning.Learner`: for an offer kind
and value tier it draws the return probability with that offer from Beta(1 + returned, 1 + not
returned) of the treated customers, the return probability without contact from the same tier's
holdout (pooled over offers: the holdout was not contacted, whatever offer it would have had), and
returns their difference. It learns uplift, not raw response: an offer sent to customers who come
back anyway earns nothing.

`simulate_learning(truth, …)` runs that loop over simulated campaigns (plan with the learner →
returns → `measure_campaign` → offer results → learner) and reports, per campaign and tier, the share
of treated customers who got the truly best offer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from winback.errors import DataError
from winback.measure.campaign import MISSING_GROUP, MeasureResult, measure_campaign

RESULT_COLUMNS = ["campaign_id", "offer_kind", "value_tier", "n_treated", "returned_treated", "n_holdout",
                  "returned_holdout"]
DEFAULT_SIM_KINDS = ("reminder", "percent_off", "amount_off", "bonus_points", "free_shipping")


def offer_results_from(result: MeasureResult) -> pd.DataFrame:
    """Rows per (campaign, offer_kind, value_tier): n and returned in treatment and in holdout."""
    if not result.campaign_id:
        raise DataError("the measured ledger rows carry no campaign_id; offer results need one")
    u = result.units
    if u.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    frame = pd.DataFrame({
        "offer_kind": u["offer_kind"].astype("string").fillna(MISSING_GROUP),
        "value_tier": u["value_tier"].astype("string").fillna(MISSING_GROUP),
        "treated": u["arm"].eq("treatment"),
        "returned": u["returned"].astype(bool),
    })
    frame["rt"] = frame["treated"] & frame["returned"]
    frame["rh"] = ~frame["treated"] & frame["returned"]
    out = frame.groupby(["offer_kind", "value_tier"], sort=True).agg(
        n_treated=("treated", "sum"), returned_treated=("rt", "sum"),
        n_holdout=("treated", lambda s: int((~s).sum())), returned_holdout=("rh", "sum"),
    ).reset_index()
    out.insert(0, "campaign_id", result.campaign_id)
    for col in RESULT_COLUMNS[3:]:
        out[col] = out[col].astype("int64")
    return out[RESULT_COLUMNS]


class ThompsonLearner:
    """Beta-Bernoulli Thompson sampler of uplift per (offer kind, value tier) from stored offer results."""

    def __init__(self, results: pd.DataFrame, *, prior: tuple[float, float] = (1.0, 1.0)) -> None:
        missing = [c for c in RESULT_COLUMNS[1:] if c not in results.columns]
        if missing:
            raise DataError(f"offer results lack column(s) {missing}")
        a0, b0 = prior
        if a0 <= 0 or b0 <= 0:
            raise DataError(f"Beta prior parameters must be positive, got {prior}")
        self.prior = (float(a0), float(b0))
        r = results[RESULT_COLUMNS[1:]].copy()
        for col in RESULT_COLUMNS[3:]:
            r[col] = pd.to_numeric(r[col], errors="raise").astype("int64")
        bad = (r["returned_treated"] > r["n_treated"]) | (r["returned_holdout"] > r["n_holdout"])
        if bad.any() or (r[RESULT_COLUMNS[3:]] < 0).any().any():
            raise DataError("offer results with impossible counts (returned > n or negative)")
        r["offer_kind"] = r["offer_kind"].astype(str)
        r["value_tier"] = r["value_tier"].astype(str)
        treated = r.groupby(["offer_kind", "value_tier"])[["n_treated", "returned_treated"]].sum()
        self._treated = {k: (int(v.returned_treated), int(v.n_treated)) for k, v in treated.iterrows()
                         if v.n_treated > 0}
        # Holdout pooled over offers within a tier: each holdout customer sits in one offer_kind row.
        hold = r.groupby("value_tier")[["n_holdout", "returned_holdout"]].sum()
        self._holdout = {k: (int(v.returned_holdout), int(v.n_holdout)) for k, v in hold.iterrows() if v.n_holdout > 0}
        total = r[["n_holdout", "returned_holdout"]].sum()
        self._holdout_all = (int(total.returned_holdout), int(total.n_holdout)) if total.n_holdout > 0 else None

    @classmethod
    def from_frame(cls, results: pd.DataFrame, **kwargs) -> ThompsonLearner:
        """A learner over an offer-results frame (columns as `Ledger.offer_results()`)."""
        return cls(results, **kwargs)

    @classmethod
    def from_ledger(cls, ledger, **kwargs) -> ThompsonLearner:
        """A learner over every offer result stored in the ledger."""
        return cls(ledger.offer_results(), **kwargs)

    def _beta(self, counts: tuple[int, int]) -> tuple[float, float]:
        returned, n = counts
        return self.prior[0] + returned, self.prior[1] + n - returned

    def posterior(self, offer_kind: str, value_tier: str) -> dict | None:
        """Beta parameters of the treated and holdout return probabilities and the mean uplift; None if no data."""
        treated = self._treated.get((offer_kind, value_tier))
        if treated is None:
            return None
        hold = self._holdout.get(value_tier, self._holdout_all)
        at, bt = self._beta(treated)
        ah, bh = self._beta(hold if hold is not None else (0, 0))
        return {"treated": (at, bt), "holdout": (ah, bh), "mean_uplift": at / (at + bt) - ah / (ah + bh),
                "n_treated": treated[1], "n_holdout": 0 if hold is None else hold[1]}

    def sample_uplift(self, offer_kind: str, value_tier: str, rng: np.random.Generator) -> float | None:
        """One Thompson draw of P(return | offer) − P(return | holdout) for the tier; None without data."""
        post = self.posterior(offer_kind, value_tier)
        if post is None:
            return None
        return float(rng.beta(*post["treated"]) - rng.beta(*post["holdout"]))

    def summary(self) -> pd.DataFrame:
        """Posterior means per (offer_kind, value_tier) with the counts behind them."""
        rows = []
        for kind, tier in sorted(self._treated):
            post = self.posterior(kind, tier)
            rows.append({"offer_kind": kind, "value_tier": tier, "n_treated": post["n_treated"],
                         "n_holdout": post["n_holdout"], "mean_uplift": post["mean_uplift"]})
        return pd.DataFrame(rows, columns=["offer_kind", "value_tier", "n_treated", "n_holdout", "mean_uplift"])


# -- simulation ------------------------------------------------------------------------------------


def best_offer_per_tier(truth: pd.DataFrame, offer_kinds: Sequence[str]) -> dict[str, str]:
    """The truly best offer kind per value tier: the largest mean P(return | offer) − p_base."""
    missing = [f"p_{k}" for k in offer_kinds if f"p_{k}" not in truth.columns]
    if missing or "p_base" not in truth.columns or "value_tier" not in truth.columns:
        raise DataError(f"truth lacks column(s) {missing + [c for c in ('p_base', 'value_tier') if c not in truth]}")
    uplift = pd.DataFrame({k: truth[f"p_{k}"] - truth["p_base"] for k in offer_kinds})
    means = uplift.groupby(truth["value_tier"].astype(str)).mean()
    return {tier: str(row.idxmax()) for tier, row in means.iterrows()}


def _choose_offers(learner, tiers: np.ndarray, kinds: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Per customer, the kind with the highest Thompson draw (a prior draw when the learner has no data)."""
    draws = np.empty((len(tiers), len(kinds)))
    for i, tier in enumerate(tiers):
        for j, kind in enumerate(kinds):
            d = learner.sample_uplift(kind, tier, rng)
            # No data: draw from the uninformative prior's uplift (Beta(1,1) − Beta(1,1)), i.e. explore.
            draws[i, j] = d if d is not None else rng.beta(1, 1) - rng.beta(1, 1)
    return np.asarray(kinds, dtype=object)[draws.argmax(axis=1)]


def _bernoulli_returns(contacts: pd.DataFrame, truth: pd.DataFrame, *, days: int, seed: int) -> pd.DataFrame:
    """One order per returning customer, drawn from the truth table's per-offer return probabilities.

    The simplest outcome model for a literal truth table (p_base / p_<kind> per customer); with the
    demo world, `returns="demo"` uses `winback.demo.simulate_returns` instead (order values, coupons).
    """
    rng = np.random.default_rng(seed)
    t = truth.set_index("customer_id")
    p_base = t.loc[contacts["customer_id"], "p_base"].to_numpy()
    p_offer = np.array([t.at[c, f"p_{k}"] for c, k in zip(contacts["customer_id"], contacts["offer_kind"],
                                                             strict=True)])
    contacted = contacts["contacted"].to_numpy(dtype=bool)
    p = np.where(contacted, p_offer, p_base)
    back = rng.random(len(contacts)) < p
    when = contacts["contact_at"] + pd.to_timedelta(rng.random(len(contacts)) * days, unit="D")
    return pd.DataFrame({"order_id": [f"sim-{seed}-{i}" for i in range(int(back.sum()))],
                         "customer_id": contacts["customer_id"].to_numpy()[back],
                         "ordered_at": when.to_numpy()[back], "amount": 100.0,
                         "coupon_code": pd.array([None] * int(back.sum()), dtype="string"), "discount": 0.0})


def simulate_learning(
    truth: pd.DataFrame,
    *,
    n_campaigns: int = 6,
    audience_size: int = 3000,
    holdout_share: float = 0.2,
    offer_kinds: Sequence[str] = DEFAULT_SIM_KINDS,
    window_days: int = 30,
    start: pd.Timestamp = pd.Timestamp("2026-01-05 01:00", tz="UTC"),
    returns: str = "demo",
    seed: int = 0,
) -> pd.DataFrame:
    """Run `n_campaigns` plan→send→measure→learn rounds; per campaign and tier, the share given the best offer.

    `truth` has one row per customer with `customer_id`, `value_tier`, `p_base` and `p_<kind>` for each
    offer kind (the demo world's truth joined with the segments' tier). `returns="demo"` draws orders
    with `winback.demo.simulate_returns`; `returns="bernoulli"` draws one order per returner from the
    truth's probabilities (for literal truth tables).
    """
    if returns == "demo":
        from winback.demo import simulate_returns
    elif returns == "bernoulli":
        simulate_returns = _bernoulli_returns
    else:
        raise DataError(f"unknown returns model {returns!r}; use 'demo' or 'bernoulli'")
    best = best_offer_per_tier(truth, offer_kinds)
    rng = np.random.default_rng(seed)
    results = pd.DataFrame(columns=RESULT_COLUMNS)
    rows = []
    for c in range(n_campaigns):
        learner = ThompsonLearner.from_frame(results)
        size = min(audience_size, len(truth))
        audience = truth.iloc[rng.choice(len(truth), size=size, replace=False)].reset_index(drop=True)
        tiers = audience["value_tier"].astype(str).to_numpy()
        kinds = _choose_offers(learner, tiers, offer_kinds, rng)
        holdout = rng.random(size) < holdout_share
        campaign_id = f"sim-{seed}-{c + 1}"
        contact_at = start + pd.Timedelta(days=(window_days + 5) * c)
        contacts = pd.DataFrame({
            "customer_id": audience["customer_id"].astype(str).to_numpy(),
            "arm": np.where(holdout, "holdout", "treatment"),
            "contacted": ~holdout,
            "offer_kind": kinds,
            "channel": "email",
            "coupon_code": pd.array([None] * size, dtype="string"),
            "contact_at": contact_at,
        })
        orders = simulate_returns(contacts, truth, days=window_days, seed=seed * 1000 + c)
        ledger_rows = contacts.rename(columns={"contact_at": "send_at_utc"}).assign(
            campaign_id=campaign_id, step=1, value_tier=tiers, offer=kinds,
            state=np.where(holdout, "held_out", "sent"),
            sent_at=pd.Series(contact_at, index=contacts.index).where(~holdout),
        )
        measured = measure_campaign(ledger_rows, orders, window_days=window_days, by=())
        new = offer_results_from(measured)
        results = new if results.empty else pd.concat([results, new], ignore_index=True)
        treated = ~holdout
        # The true uplift of what was chosen vs of the tier's best offer, per treated customer.
        p_base = audience["p_base"].to_numpy(dtype=float)
        kind_col = pd.Index([f"p_{k}" for k in offer_kinds]).get_indexer([f"p_{k}" for k in kinds])
        p_matrix = audience[[f"p_{k}" for k in offer_kinds]].to_numpy(dtype=float)
        chosen_uplift = p_matrix[np.arange(size), kind_col] - p_base
        best_col = pd.Index(list(offer_kinds)).get_indexer([best[t] for t in tiers])
        best_uplift = p_matrix[np.arange(size), best_col] - p_base
        for tier in sorted(set(tiers)):
            in_tier = treated & (tiers == tier)
            any_treated = bool(in_tier.any())
            rows.append({
                "campaign": c + 1, "value_tier": tier, "best_offer": best[tier], "treated": int(in_tier.sum()),
                "share_best": float((kinds[in_tier] == best[tier]).mean()) if any_treated else np.nan,
                "true_uplift_chosen": float(chosen_uplift[in_tier].mean()) if any_treated else np.nan,
                "true_uplift_best": float(best_uplift[in_tier].mean()) if any_treated else np.nan,
            })
    return pd.DataFrame(rows)


def simulate_learning_demo(
    n_customers: int = 20_000,
    *,
    n_campaigns: int = 6,
    audience_size: int = 6_000,
    offer_kinds: Sequence[str] = DEFAULT_SIM_KINDS,
    seed: int = 0,
    as_of: pd.Timestamp = pd.Timestamp("2026-11-01", tz="UTC"),
) -> pd.DataFrame:
    """`simulate_learning` on a generated demo world, tiers as the world knows them (`true_tier`).

    The audience is the customers who would not come back anyway with high probability
    (p_base < 0.5), like a win-back campaign's. Returns the per-campaign, per-tier table.
    """
    from winback.demo import generate_world

    world = generate_world(n_customers, seed=seed, as_of=as_of)
    truth = world.truth.assign(value_tier=world.truth["true_tier"].astype(str))
    truth = truth[truth["p_base"] < 0.5].reset_index(drop=True)
    return simulate_learning(truth, n_campaigns=n_campaigns, audience_size=audience_size, offer_kinds=offer_kinds,
                             returns="demo", seed=seed, start=as_of + pd.Timedelta(days=1))
