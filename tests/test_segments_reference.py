"""The fast segmentation path (run-wise id lookup, sorted-input shortcut, dense/sparse category
counts, coded string columns) against a straightforward pandas groupby reference, and against
itself on the same orders in another row order or representation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winback.segments import SegmentParams, aggregate, fit_customer_models, segment_customers

AS_OF = pd.Timestamp("2026-06-30 15:59:59", tz="UTC")
CATEGORIES = np.array(["apparel", "beauty", "books", "food", "home"])


def _world(seed: int = 3, n: int = 300):
    """Customers (some without orders), orders grouped by customer, complaints; a few orders after as_of."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{i:05d}" for i in range(n)])
    counts = rng.poisson(4, n) * (rng.uniform(size=n) > 0.1)  # ~10 % never bought
    who = np.repeat(np.arange(n), counts)
    # Whole-day offsets plus a few hours so that some customers buy twice on one day.
    days = rng.integers(-5, 700, len(who)) + rng.integers(0, 20, len(who)) / 24
    orders = pd.DataFrame({
        "order_id": [f"O{i}" for i in range(len(who))],
        "customer_id": ids[who],
        "ordered_at": AS_OF - pd.to_timedelta(days, unit="D"),
        "amount": np.round(rng.gamma(2.0, 60.0, len(who)), 2),
        "category": np.where(rng.uniform(size=len(who)) < 0.05, None, CATEGORIES[rng.integers(0, 5, len(who))]),
        "discount": np.where(rng.uniform(size=len(who)) < 0.3, 5.0, 0.0),
    })
    # Grouped by customer and time, as many exports are (the sorted shortcut applies).
    orders = orders.sort_values(["customer_id", "ordered_at"], kind="stable").reset_index(drop=True)
    customers = pd.DataFrame({"customer_id": ids,
                              "account_manager": np.where(rng.uniform(size=n) < 0.2, "Li Wei", None)})
    k = n // 5
    complaints = pd.DataFrame({
        "customer_id": ids[rng.integers(0, n, k)],
        "created_at": AS_OF - pd.to_timedelta(rng.uniform(0, 300, k), unit="D"),
        "resolved": rng.uniform(size=k) < 0.5,
    })
    return customers, orders, complaints


@pytest.fixture(scope="module")
def world():
    customers, orders, complaints = _world()
    models = fit_customer_models(orders, as_of=AS_OF)
    return customers, orders, complaints, models


def _reference_aggregates(customers, orders, params: SegmentParams) -> pd.DataFrame:
    """Per-customer order facts by plain pandas groupbys (the slow, obvious way)."""
    kept = orders[orders["ordered_at"] <= AS_OF].copy()
    kept["day"] = kept["ordered_at"].dt.tz_convert(params.timezone).dt.date
    g = kept.groupby("customer_id")
    ref = pd.DataFrame({
        "n_orders": g.size(),
        "n_transactions": g["day"].nunique(),
        "total_spend": g["amount"].sum(),
        "first_order_at": g["ordered_at"].min(),
        "last_order_at": g["ordered_at"].max(),
        "discount_share": g["discount"].apply(lambda s: float((s > 0).mean())),
    })
    counts = kept.dropna(subset=["category"]).groupby(["customer_id", "category"]).size().reset_index(name="k")
    # Most orders first, then alphabetical among ties.
    counts = counts.sort_values(["customer_id", "k", "category"], ascending=[True, False, True])
    ref["top_category"] = counts.drop_duplicates("customer_id").set_index("customer_id")["category"]
    return ref.reindex(customers["customer_id"])


def test_order_aggregates_match_a_plain_groupby(world):
    customers, orders, complaints, models = world
    params = SegmentParams()
    out = segment_customers(customers, orders, complaints, as_of=AS_OF, models=models).set_index("customer_id")
    ref = _reference_aggregates(customers, orders, params)
    bought = ref["n_orders"].notna()
    assert bought.sum() == (out["n_orders"] > 0).sum() > 200
    got = out[bought.to_numpy()]
    exp = ref[bought]
    assert (got["n_orders"] == exp["n_orders"]).all()
    assert (got["n_transactions"] == exp["n_transactions"]).all()
    assert (got["frequency"] == exp["n_transactions"] - 1).all()
    np.testing.assert_allclose(got["total_spend"], exp["total_spend"], rtol=1e-12)
    assert (got["first_order_at"] == exp["first_order_at"]).all()
    assert (got["last_order_at"] == exp["last_order_at"]).all()
    np.testing.assert_allclose(got["discount_share"], exp["discount_share"], rtol=1e-12)
    np.testing.assert_allclose(got["recency_days"],
                               (AS_OF - exp["last_order_at"]).dt.total_seconds() / 86_400, rtol=1e-12)
    assert got["top_category"].fillna("∅").tolist() == exp["top_category"].fillna("∅").tolist()
    never = out[~bought.to_numpy()]
    assert (never["n_orders"] == 0).all() and (never["lapse_stage"] == "no_orders").all()


def test_row_order_and_representation_do_not_change_the_output(world):
    customers, orders, complaints, models = world
    expected = segment_customers(customers, orders, complaints, as_of=AS_OF, models=models)
    shuffled = orders.sample(frac=1.0, random_state=1).reset_index(drop=True)  # the sort path
    categorical = orders.assign(category=orders["category"].astype("category"))
    for variant in (shuffled, categorical):
        got = segment_customers(customers, variant, complaints, as_of=AS_OF, models=models)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_sparse_category_counts_equal_the_dense_ones(world, monkeypatch):
    customers, orders, complaints, models = world
    expected = segment_customers(customers, orders, complaints, as_of=AS_OF, models=models)
    monkeypatch.setattr(aggregate, "PACKED_MAX_CATEGORIES", 0)  # a threshold, not a stand-in
    got = segment_customers(customers, orders, complaints, as_of=AS_OF, models=models)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto-nbd"])
def test_predictions_shared_per_x_and_T_are_the_same_prediction(world, model):
    # BG/NBD and MBG/NBD: the hypergeometric term is evaluated once per distinct (x, T) and gathered;
    # Pareto/NBD: its tail integrals once per distinct (x, t). Same numbers as the direct formula.
    customers, orders, complaints, _ = world
    models = fit_customer_models(orders, as_of=AS_OF, params=SegmentParams(purchase_model=model))
    assert models.purchases.model == model
    out = segment_customers(customers, orders, complaints, as_of=AS_OF, models=models)
    has = out["n_orders"] > 0
    from winback.segments.model_check import purchase_expected

    as_of_day = pd.Timestamp(AS_OF.tz_convert("Asia/Shanghai").date())
    first = out.loc[has, "first_order_at"].dt.tz_convert("Asia/Shanghai").dt.tz_localize(None).dt.normalize()
    last = out.loc[has, "last_order_at"].dt.tz_convert("Asia/Shanghai").dt.tz_localize(None).dt.normalize()
    direct = purchase_expected(
        models.purchases, 90.0, out.loc[has, "frequency"].to_numpy(float),
        (last - first).dt.days.to_numpy(float), (as_of_day - first).dt.days.to_numpy(float))
    np.testing.assert_allclose(out.loc[has, "expected_purchases_90d"].to_numpy(), direct, rtol=1e-13, atol=0)
    assert (out["purchase_model"] == model).all()


def test_model_fit_does_not_depend_on_the_order_of_the_orders(world):
    # The fit's per-customer arrays come in customer_id order, not the hash table's: the same
    # orders in another row order give the same parameters to the last digit (and so the same stages).
    _, orders, _, models = world
    for seed in (1, 2):
        shuffled = orders.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        assert fit_customer_models(shuffled, as_of=AS_OF) == models
