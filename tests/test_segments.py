"""Segmentation on small literal frames: shrinkage, stage and tier rules, reasons, no-order customers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winback.errors import ConfigError
from winback.segments import (
    SEGMENT_COLUMNS,
    SegmentParams,
    fit_customer_models,
    render_segment_summary,
    segment_customers,
    segment_summary,
)
from winback.segments.core import NAN_FOR_NO_ORDERS
from winback.vocab import LAPSE_STAGES, REASONS, VALUE_TIERS

AS_OF = pd.Timestamp("2026-06-30 15:59:59", tz="UTC")  # end of 2026-06-30 in Asia/Shanghai


def _orders(rows) -> pd.DataFrame:
    """rows: (customer_id, days_before_as_of, amount[, category[, discount]])."""
    records = []
    for i, row in enumerate(rows):
        cid, days, amount, *rest = row
        records.append({
            "order_id": f"o{i}",
            "customer_id": cid,
            "ordered_at": AS_OF - pd.Timedelta(days=days),
            "amount": float(amount),
            "category": rest[0] if rest else "general",
            "discount": float(rest[1]) if len(rest) > 1 else 0.0,
        })
    return pd.DataFrame(records)


def _customers(ids, managers=None) -> pd.DataFrame:
    frame = pd.DataFrame({"customer_id": list(ids)})
    if managers is not None:
        frame["account_manager"] = managers
    return frame


def _regulars(n: int, gap: int, *, prefix: str = "r", span: int = 700, amount: float = 100.0,
              last: int | None = None):
    """n customers ordering every `gap` days; customer k's last order `last` (default k % gap) days ago."""
    rows = []
    for k in range(n):
        recent = (k % gap) if last is None else last
        rows += [(f"{prefix}{k}", d, amount) for d in range(recent, span, gap)]
    return rows


def test_one_big_order_is_not_lost_the_day_after_the_median_gap():
    # A population buying every 30 days, and one customer who spent 5,000 ¥ once, 31 days ago.
    rows = _regulars(60, 30) + [("whale", 31, 5000.0)]
    ids = [f"r{k}" for k in range(60)] + ["whale"]
    seg = segment_customers(_customers(ids), _orders(rows), as_of=AS_OF).set_index("customer_id")
    whale = seg.loc["whale"]
    assert whale["frequency"] == 0
    assert whale["expected_gap_days"] >= 30  # the population gap, never a gap from one data point
    assert whale["overdue_ratio"] < 1.1
    assert whale["lapse_stage"] in ("active", "at_risk")
    assert whale["value_tier"] in ("platinum", "gold")  # the first order's value counts
    assert whale["expected_order_value"] > 500  # shrunk toward the ~100 ¥ population, not to it
    # Without shrinkage the same customer would be long overdue: shrinkage is what protects them.
    strict = SegmentParams(rhythm_prior_strength=1e-6)
    assert segment_customers(_customers(ids), _orders(rows), as_of=AS_OF, params=strict) \
        .set_index("customer_id").loc["whale", "expected_gap_days"] >= 30  # single order: prior only


def test_thin_data_is_shrunk_toward_the_population_and_rich_data_is_not():
    rows = _regulars(60, 30)
    rows += [("thin", 40, 80.0), ("thin", 35, 80.0)]  # one gap of 5 days
    rows += [("rich", d, 80.0) for d in range(0, 700, 5)]  # 140 gaps of 5 days
    ids = [f"r{k}" for k in range(60)] + ["thin", "rich"]
    seg = segment_customers(_customers(ids), _orders(rows), as_of=AS_OF).set_index("customer_id")
    assert 5 < seg.loc["thin", "expected_gap_days"] < 30
    assert seg.loc["thin", "expected_gap_days"] > 15  # one 5-day gap does not make a 5-day customer
    assert seg.loc["rich", "expected_gap_days"] == pytest.approx(5.0, rel=0.15)


def test_stage_follows_the_overdue_ratio_thresholds():
    rows = _regulars(80, 20)
    # Regular 20-day buyers who stopped 10, 25, 40, 70 and 300 days ago.
    for name, days in {"s10": 10, "s25": 25, "s40": 40, "s70": 70, "s300": 300}.items():
        rows += [(name, d, 100.0) for d in range(days, 700, 20)]
    ids = [f"r{k}" for k in range(80)] + ["s10", "s25", "s40", "s70", "s300"]
    seg = segment_customers(_customers(ids), _orders(rows), as_of=AS_OF).set_index("customer_id")
    stage = seg["lapse_stage"]
    assert stage["s10"] == "active"
    assert stage["s25"] == "at_risk"
    assert stage["s40"] == "lapsing"
    assert stage["s70"] == "lapsed"
    assert stage["s300"] == "lost"
    # Every row obeys the documented thresholds (or the P(alive) rule for lost).
    t = SegmentParams().stage_thresholds
    ratio = seg["overdue_ratio"]
    expected = np.select([ratio >= t[3], ratio >= t[2], ratio >= t[1], ratio >= t[0]],
                         ["lost", "lapsed", "lapsing", "at_risk"], "active")
    by_p_alive = (seg["p_alive"] < 0.1) & (ratio >= t[0])
    assert ((stage == expected) | (by_p_alive & (stage == "lost"))).all()
    # Thresholds are configurable.
    loose = SegmentParams(stage_thresholds=(2.0, 4.0, 8.0, 20.0), lost_p_alive=0.0)
    assert segment_customers(_customers(ids), _orders(rows), as_of=AS_OF, params=loose) \
        .set_index("customer_id").loc["s25", "lapse_stage"] == "active"


def test_value_tiers_follow_clv_shares_and_negative_value_is_lead():
    rows = []
    for k in range(100):
        rows += [(f"c{k}", d, 10.0 + 10 * k) for d in range(k % 7, 400, 30)]
    rows += [("zero", 10, 0.0), ("zero", 40, 0.0)]
    ids = [f"c{k}" for k in range(100)] + ["zero", "never"]
    seg = segment_customers(_customers(ids), _orders(rows), as_of=AS_OF)
    tiers = seg.set_index("customer_id")["value_tier"]
    assert tiers["zero"] == "lead" and tiers["never"] == "lead"
    counts = seg.loc[seg["customer_id"].str.startswith("c"), "value_tier"].value_counts()
    assert counts["platinum"] == 5 and counts["gold"] == 15 and counts["iron"] == 40 and counts["lead"] == 40
    order = {t: i for i, t in enumerate(VALUE_TIERS)}
    ranked = seg[seg["customer_id"].str.startswith("c")].sort_values("clv", ascending=False)
    assert ranked["value_tier"].map(order).is_monotonic_increasing
    # Absolute floors instead of shares.
    absolute = SegmentParams(tier_method="absolute", tier_clv_floors=(1e9, 1e8, 0.01))
    seg_abs = segment_customers(_customers(ids), _orders(rows), as_of=AS_OF, params=absolute)
    assert set(seg_abs.loc[seg_abs["customer_id"].str.startswith("c"), "value_tier"]) == {"iron"}


def test_reason_priority_service_manager_price_competitor_forgotten():
    base = _regulars(60, 20)
    slipping = {}  # each of these bought every 20 days and stopped 45 days ago (lapsing)
    for name in ("service", "manager", "price", "forgotten", "all_three"):
        discount = 5.0 if name in ("price", "all_three") else 0.0
        slipping[name] = [(name, d, 100.0, "general", discount) for d in range(45, 700, 20)]
    # competitor: bought "coffee" every 20 days, still buys "tea" recently but no coffee for 200 days
    slipping["competitor"] = [("competitor", d, 100.0, "coffee") for d in range(200, 700, 20)] + [
        ("competitor", 90, 30.0, "tea"), ("competitor", 70, 30.0, "tea")]
    rows = base + [r for rs in slipping.values() for r in rs] + [("active_complainer", d, 50.0) for d in range(1, 700, 20)]
    ids = [f"r{k}" for k in range(60)] + list(slipping) + ["active_complainer"]
    managers = [None] * 60 + [None, "Li Lei", None, None, "Li Lei", None, "Li Lei"]
    complaints = pd.DataFrame({
        "customer_id": ["service", "all_three", "active_complainer", "forgotten", "price"],
        "created_at": [AS_OF - pd.Timedelta(days=d) for d in (50, 60, 5, 400, 30)],
        "kind": ["delivery"] * 5,
        "resolved": [False, False, False, False, True],
    })
    seg = segment_customers(_customers(ids, managers), _orders(rows), complaints, as_of=AS_OF,
                            departed_managers=["li lei "]).set_index("customer_id")
    reason = seg["likely_reason"]
    assert seg.loc[list(slipping), "lapse_stage"].isin(["at_risk", "lapsing", "lapsed", "lost"]).all()
    assert reason["service"] == "service"
    assert reason["all_three"] == "service"  # complaint beats manager and price
    assert reason["manager"] == "manager_left"
    assert reason["price"] == "price"  # its complaint is resolved
    assert reason["forgotten"] == "forgotten"  # its complaint is outside the window
    assert reason["competitor"] == "competitor"
    assert seg.loc["competitor", "category_drop"] and seg.loc["competitor", "top_category"] == "coffee"
    assert reason["active_complainer"] == "none" and seg.loc["active_complainer", "complaint_open"]
    assert seg.loc["service", "complaints_recent"] == 1 and seg.loc["forgotten", "complaints_recent"] == 0
    assert not seg.loc["price", "complaint_open"] and seg.loc["price", "discount_share"] == 1.0
    assert seg.loc["manager", "manager_departed"] and not seg.loc["service", "manager_departed"]
    assert set(reason) <= set(REASONS)


def test_an_unresolved_complaint_before_the_silence_is_open_however_long_ago():
    # Each bought every 20 days until 400 days ago. A complaint with the last orders that was never
    # resolved explains the silence (service recovery), a year or more later; a resolved one does
    # not, nor one the customer went on buying after.
    base = _regulars(60, 20)
    names = ("left_unresolved", "resolved", "bought_on_after", "complained_after")
    rows = base + [(name, d, 100.0) for name in names for d in range(400, 700, 20)]
    complaints = pd.DataFrame({
        "customer_id": list(names),
        "created_at": [AS_OF - pd.Timedelta(days=d) for d in (405, 405, 520, 200)],
        "kind": ["delivery"] * 4,
        "resolved": [False, True, False, False],
    })
    seg = segment_customers(_customers([f"r{k}" for k in range(60)] + list(names)), _orders(rows), complaints,
                            as_of=AS_OF).set_index("customer_id")
    assert (seg.loc[list(names), "lapse_stage"] == "lost").all()
    assert seg.loc[list(names), "complaint_open"].tolist() == [True, False, False, True]
    assert seg.loc[list(names), "likely_reason"].tolist() == ["service", "forgotten", "forgotten", "service"]
    assert seg.loc[list(names), "complaints_recent"].tolist() == [0, 0, 0, 0]  # none in the last 180 days
    # A shorter lead leaves out the complaint 5 days before the last order.
    strict = segment_customers(_customers(list(names)), _orders(rows), complaints, as_of=AS_OF,
                               params=SegmentParams(complaint_lead_days=0)).set_index("customer_id")
    assert strict["complaint_open"].tolist() == [False, False, False, True]


def test_departed_manager_entries_with_and_without_dates():
    from winback.segments.core import departed_manager_dates

    got = departed_manager_dates(["王芳,2025-08-20", " li lei ", "Li Lei,2025-03-01", "Smith, John",
                                  "Wang,Fang,2024-01-02", "王芳,2025-09-30", "", "  "])
    assert got == {"王芳": pd.Timestamp("2025-08-20", tz="UTC"), "li lei": pd.Timestamp("2025-03-01", tz="UTC"),
                   "smith, john": None, "wang,fang": pd.Timestamp("2024-01-02", tz="UTC")}
    assert departed_manager_dates(None) == {} and departed_manager_dates(("a",)) == {"a": None}
    with pytest.raises(ConfigError, match="2025-13-45"):  # a bad date is an error, not a silent other name
        departed_manager_dates(["王芳,2025-13-45"])


def test_customers_without_orders_and_future_orders():
    rows = _regulars(30, 15) + [("late", -3, 100.0)]  # an order after as_of is the future: ignored
    ids = [f"r{k}" for k in range(30)] + ["late", "never"]
    seg = segment_customers(_customers(ids), _orders(rows), as_of=AS_OF).set_index("customer_id")
    for cid in ("late", "never"):
        row = seg.loc[cid]
        assert row["lapse_stage"] == "no_orders" and row["value_tier"] == "lead" and row["likely_reason"] == "none"
        assert row["n_orders"] == 0 and row["frequency"] == 0 and row["clv"] == 0 and row["total_spend"] == 0
        assert all(pd.isna(row[c]) for c in NAN_FOR_NO_ORDERS)


def test_no_orders_at_all_and_everybody_once():
    seg = segment_customers(_customers(["a", "b"]), _orders([]).reindex(columns=[
        "order_id", "customer_id", "ordered_at", "amount"]), as_of=AS_OF)
    assert list(seg["lapse_stage"]) == ["no_orders", "no_orders"]
    single = segment_customers(_customers(["a", "b"]), _orders([("a", 3, 10.0)]), as_of=AS_OF)
    assert single.set_index("customer_id").loc["a", "lapse_stage"] == "active"


def test_frequency_trend_falls_when_purchases_thin_out():
    rows = _regulars(40, 20)
    rows += [("fading", d, 100.0) for d in range(185, 700, 10)] + [("fading", 100, 100.0)]
    rows += [("rising", d, 100.0) for d in range(0, 180, 5)] + [("rising", d, 100.0) for d in range(200, 700, 60)]
    ids = [f"r{k}" for k in range(40)] + ["fading", "rising"]
    seg = segment_customers(_customers(ids), _orders(rows), as_of=AS_OF).set_index("customer_id")
    assert seg.loc["fading", "frequency_trend"] < 0.5
    assert seg.loc["rising", "frequency_trend"] > 2
    assert seg.loc["r0", "frequency_trend"] == pytest.approx(1.0, abs=0.25)


def test_same_day_orders_are_one_transaction_in_the_business_time_zone():
    # 23:30 and 00:30 UTC are the same Shanghai day (07:30, 08:30); 15:30 and 16:30 UTC are not.
    day = pd.Timestamp("2026-06-01", tz="UTC")
    orders = pd.DataFrame({
        "order_id": ["1", "2", "3", "4"], "customer_id": ["a", "a", "b", "b"],
        "ordered_at": [day - pd.Timedelta(minutes=30), day + pd.Timedelta(minutes=30),
                       day + pd.Timedelta(hours=15, minutes=30), day + pd.Timedelta(hours=16, minutes=30)],
        "amount": [1.0, 2.0, 3.0, 4.0],
    })
    seg = segment_customers(_customers(["a", "b"]), orders, as_of=AS_OF).set_index("customer_id")
    assert seg.loc["a", "n_orders"] == 2 and seg.loc["a", "n_transactions"] == 1
    assert seg.loc["b", "n_transactions"] == 2 and seg.loc["b", "frequency"] == 1


def test_reused_models_give_the_same_segments_and_summary_counts():
    rows = _regulars(50, 12) + _regulars(30, 45, prefix="s", last=200)
    ids = [f"r{k}" for k in range(50)] + [f"s{k}" for k in range(30)] + ["never"]
    customers, orders = _customers(ids), _orders(rows)
    fresh = segment_customers(customers, orders, as_of=AS_OF)
    models = fit_customer_models(orders, as_of=AS_OF)
    reused = segment_customers(customers, orders, as_of=AS_OF, models=models)
    pd.testing.assert_frame_equal(fresh, reused)
    summary = segment_summary(fresh)
    assert list(summary.index) == [*LAPSE_STAGES, "total"]
    assert list(summary.columns) == [*VALUE_TIERS, "total"]
    assert summary.loc["total", "total"] == len(ids)
    assert summary.loc["no_orders", "lead"] == 1
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_segment_summary(fresh))
    assert "no_orders" in console.export_text()


def test_duplicate_customer_ids_and_naive_as_of_are_errors():
    from winback.errors import ConfigError, DataError

    with pytest.raises(DataError, match="duplicate customer_id"):
        segment_customers(_customers(["a", "a"]), _orders([("a", 1, 1.0)]), as_of=AS_OF)
    with pytest.raises(ConfigError):
        segment_customers(_customers(["a"]), _orders([("a", 1, 1.0)]), as_of=pd.Timestamp("2026-01-01"))
    with pytest.raises(ValueError):
        SegmentParams(stage_thresholds=(2.0, 1.0, 3.0, 4.0))


@st.composite
def _worlds(draw):
    n = draw(st.integers(1, 12))
    ids = [f"c{i}" for i in range(n)]
    rows = draw(st.lists(
        st.tuples(st.sampled_from(ids + ["ghost"]), st.integers(-5, 900),
                  st.floats(0, 5000, allow_nan=False), st.sampled_from(["a", "b", None]),
                  st.sampled_from([0.0, 0.0, 3.0])),
        max_size=40,
    ))
    complaints = draw(st.lists(
        st.tuples(st.sampled_from(ids), st.integers(0, 400), st.booleans()), max_size=5))
    return ids, rows, complaints


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_worlds())
def test_property_each_customer_exactly_once_with_complete_columns(world):
    ids, rows, complaint_rows = world
    orders = _orders(rows) if rows else _orders([]).reindex(columns=["order_id", "customer_id", "ordered_at", "amount"])
    complaints = pd.DataFrame({
        "customer_id": [c for c, _, _ in complaint_rows],
        "created_at": [AS_OF - pd.Timedelta(days=d) for _, d, _ in complaint_rows],
        "kind": ["x"] * len(complaint_rows),
        "resolved": [r for _, _, r in complaint_rows],
    })
    seg = segment_customers(_customers(ids), orders, complaints, as_of=AS_OF)
    assert list(seg.columns) == list(SEGMENT_COLUMNS)
    assert list(seg["customer_id"]) == ids  # each customer exactly once, in input order
    assert seg["value_tier"].isin(VALUE_TIERS).all()
    assert seg["lapse_stage"].isin(LAPSE_STAGES).all()
    assert seg["likely_reason"].isin(REASONS).all()
    buyers = seg["lapse_stage"] != "no_orders"
    allowed_nan = set(NAN_FOR_NO_ORDERS) | {"top_category"}
    for column in SEGMENT_COLUMNS:
        if column not in allowed_nan:
            assert seg[column].notna().all(), column
        elif column in NAN_FOR_NO_ORDERS:
            assert seg.loc[buyers, column].notna().all(), column
            assert seg.loc[~buyers, column].isna().all(), column
    assert (seg.loc[buyers, "p_alive"].between(0, 1)).all()
    assert (seg["clv"] >= 0).all() and (seg["expected_purchases_90d"] >= 0).all()
    assert (seg.loc[buyers, "expected_gap_days"] > 0).all()
    assert (seg["frequency"] == (seg["n_transactions"] - 1).clip(lower=0)).all()


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York", "Europe/Berlin", "UTC", "Australia/Lord_Howe"])
def test_calendar_days_match_pandas_across_dst(zone):
    import duckdb

    from winback.segments.aggregate import _day_offsets, _day_sql, local_days

    stamps = pd.date_range("2024-01-01", "2026-06-30", freq="37min", tz="UTC").as_unit("ns")
    expected = stamps.tz_convert(zone).tz_localize(None).as_unit("ns").asi8 // 86_400_000_000_000
    transitions, offsets = _day_offsets(int(stamps.asi8[0]), int(stamps.asi8[-1]), zone)
    assert (local_days(stamps.asi8, transitions, offsets) == expected).all()
    # The SQL expression DuckDB evaluates per order gives the same days.
    con = duckdb.connect()
    con.register("t", pa.table({"e": pa.array(stamps.asi8)}))
    days = con.sql(f"SELECT {_day_sql(transitions, offsets)} AS day FROM t").fetchnumpy()["day"]
    assert (days == expected).all()


def _reference_aggregates(orders: pd.DataFrame, zone: str, as_of: pd.Timestamp, window: int) -> pd.DataFrame:
    """Per-customer counts the slow, obvious way (pandas groupby on local calendar days)."""
    kept = orders[orders["ordered_at"] <= as_of].copy()
    kept["day"] = kept["ordered_at"].dt.tz_convert(zone).dt.tz_localize(None).dt.normalize()
    as_of_day = as_of.tz_convert(zone).tz_localize(None).normalize()
    recent_start = as_of_day - pd.Timedelta(days=window)
    earlier_start = recent_start - pd.Timedelta(days=window)
    days = kept.drop_duplicates(["customer_id", "day"])
    out = pd.DataFrame({
        "n_orders": kept.groupby("customer_id").size(),
        "n_transactions": days.groupby("customer_id").size(),
        "tx_recent": days[days["day"] > recent_start].groupby("customer_id").size(),
        "tx_earlier": days[(days["day"] > earlier_start) & (days["day"] <= recent_start)].groupby("customer_id").size(),
        "total_spend": kept.groupby("customer_id")["amount"].sum(),
    })
    return out.fillna(0)


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])
def test_order_aggregates_match_a_pandas_reference(zone, tmp_path):
    from winback.segments.aggregate import aggregate_orders, connect

    rng = np.random.default_rng(3)
    n_orders = 4_000
    ids = [f"c{i}" for i in range(300)]
    orders = pd.DataFrame({
        "customer_id": rng.choice(ids[:280], n_orders),  # c280.. have no orders
        # Clustered in time so that many customers buy twice on one day, across DST changes.
        "ordered_at": AS_OF - pd.to_timedelta(rng.integers(0, 900 * 24, n_orders) // 7 * 7, unit="h"),
        "amount": rng.gamma(2.0, 50.0, n_orders).round(2),
    })
    orders = pd.concat([orders, orders.assign(ordered_at=AS_OF + pd.Timedelta(days=3))])  # the future: ignored
    customers = pa.array(ids, pa.large_string())
    ref = _reference_aggregates(orders, zone, AS_OF, 180).reindex(ids, fill_value=0)
    path = tmp_path / "orders.parquet"
    orders.to_parquet(path, index=False)
    for source in (orders, path, pa.Table.from_pandas(orders, preserve_index=False)):
        with connect(customers) as con:
            agg = aggregate_orders(source, as_of=AS_OF, timezone=zone, trend_window_days=180, con=con,
                                   n_customers=len(customers))
        for column in ("n_orders", "n_transactions", "tx_recent", "tx_earlier"):
            assert (getattr(agg, column) == ref[column].to_numpy()).all(), column
        assert np.allclose(agg.total_spend, ref["total_spend"].to_numpy())


def test_category_counters_survive_heavy_buyers_and_many_categories():
    # 300 orders of one customer overflow an 8-bit counter; 40 categories use exact pair counts.
    heavy = [("heavy", d % 700, 10.0, "a", 0.0) for d in range(300)] + [("heavy", 5, 10.0, "b", 0.0)]
    light = [("light", 400, 10.0, "b"), ("light", 300, 10.0, "b"), ("light", 10, 10.0, "a")]
    few = segment_customers(_customers(["heavy", "light"]), _orders(heavy + light), as_of=AS_OF)
    assert few["top_category"].tolist() == ["a", "b"]
    assert few.loc[1, "category_drop"]  # b before the window, none of it since, bought a
    many = [(f"m{k}", 30 + k, 10.0, f"cat{k:02d}") for k in range(40)]
    seg = segment_customers(_customers(["heavy", "light"] + [f"m{k}" for k in range(40)]),
                            _orders(heavy + light + many), as_of=AS_OF)
    assert seg["top_category"].tolist()[:2] == ["a", "b"]
    assert seg["top_category"].tolist()[2:] == [f"cat{k:02d}" for k in range(40)]
    assert seg["category_drop"].tolist()[:2] == few["category_drop"].tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, -1.0, 1.0, 2.0, 2.0, 3.5, 10.0, 50.0, 1e4]), min_size=1, max_size=60))
def test_property_quantile_tiers_match_the_pandas_rank_definition(values):
    from winback.segments.core import _value_tiers

    clv = np.array(values)
    has = np.ones(len(clv), dtype=bool)
    params = SegmentParams()
    tiers = _value_tiers(clv, np.ones(len(clv)), has, params)
    positive = clv > 0
    expected = np.full(len(clv), VALUE_TIERS.index("lead"))
    if positive.any():
        share = pd.Series(clv[positive]).rank(method="min", ascending=False).to_numpy() / positive.sum()
        bounds = np.cumsum(params.tier_shares)
        sub = np.select([share <= bounds[0], share <= bounds[1], share <= bounds[2]],
                        [VALUE_TIERS.index(t) for t in ("platinum", "gold", "iron")], VALUE_TIERS.index("lead"))
        expected[positive] = sub
    assert tiers.tolist() == expected.tolist()


def test_parquet_orders_with_bad_columns_are_named_errors(tmp_path):
    from winback.errors import DataError

    customers = _customers(["a", "b"])
    good = _orders([("a", 10, 20.0), ("b", 40, 35.0)])
    cases = {
        "no_amount.parquet": (good.drop(columns="amount"), "amount"),
        "text_time.parquet": (good.assign(ordered_at=good["ordered_at"].astype(str)), "ordered_at"),
        "nan_amount.parquet": (good.assign(amount=[20.0, float("nan")]), "amount"),
        "huge_amount.parquet": (good.assign(amount=[20.0, 1e15]), "amount"),
    }
    for name, (frame, column) in cases.items():
        path = tmp_path / name
        frame.to_parquet(path, index=False)
        with pytest.raises(DataError) as err:
            segment_customers(customers, path, as_of=AS_OF)
        assert column in str(err.value), name
    with pytest.raises(DataError, match="no such file"):
        segment_customers(customers, tmp_path / "missing.parquet", as_of=AS_OF)
    # The same frame as a path, an Arrow table and a DataFrame gives the same segments.
    good.to_parquet(tmp_path / "good.parquet", index=False)
    expected = segment_customers(customers, good, as_of=AS_OF)
    for source in (tmp_path / "good.parquet", [tmp_path / "good.parquet"], pa.Table.from_pandas(good)):
        pd.testing.assert_frame_equal(segment_customers(customers, source, as_of=AS_OF), expected)


def test_thirty_years_of_history_count_distinct_days_without_a_bitmap():
    # A span beyond the day bitmap's width takes count(DISTINCT day): same counts as the bitmap path.
    from winback.segments.aggregate import _MAX_BITMAP_DAYS, aggregate_orders, connect

    rng = np.random.default_rng(1)
    ids = pa.array([f"c{i}" for i in range(50)], pa.large_string())
    recent = pd.DataFrame({"customer_id": rng.choice(ids.to_pylist(), 2000),
                           "ordered_at": AS_OF - pd.to_timedelta(rng.integers(0, 700 * 24, 2000), unit="h"),
                           "amount": 10.0})
    old = pd.DataFrame({"customer_id": ["c0"], "ordered_at": [AS_OF - pd.Timedelta(days=_MAX_BITMAP_DAYS + 400)],
                        "amount": [10.0]})
    runs = []
    for orders in (recent, pd.concat([recent, old])):
        with connect(ids) as con:
            runs.append(aggregate_orders(orders, as_of=AS_OF, timezone="America/New_York", trend_window_days=180,
                                         con=con, n_customers=len(ids)))
    bitmap, distinct = runs
    assert (distinct.n_transactions - bitmap.n_transactions).tolist() == [1] + [0] * 49
    assert (distinct.tx_recent == bitmap.tx_recent).all() and (distinct.tx_earlier == bitmap.tx_earlier).all()
