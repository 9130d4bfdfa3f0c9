"""The demo world: determinism, contract shapes, valid contact details, mixture, value pyramid, truth model."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.demo import generate_world, read_world, write_world
from winback.demo.names import TIMEZONES
from winback.demo.truth import (
    EFFECT_COLUMNS,
    PROBABILITY_COLUMNS,
    TRUTH_COLUMNS,
    incremental_effects,
)
from winback.errors import ConfigError, DataError
from winback.sources.files import read_table
from winback.vocab import OFFER_KINDS, REASONS, VALUE_TIERS

AS_OF = pd.Timestamp("2026-11-23 16:00", tz="UTC")


@pytest.fixture(scope="module")
def world():
    return generate_world(4000, seed=11, as_of=AS_OF)


def test_same_seed_same_world_other_seed_other_world():
    a = generate_world(600, seed=3, as_of=AS_OF)
    b = generate_world(600, seed=3, as_of=AS_OF)
    c = generate_world(600, seed=4, as_of=AS_OF)
    for name in ("customers", "orders", "complaints", "truth", "managers"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.orders["amount"].equals(c.orders["amount"])
    assert not a.truth["p_base"].equals(c.truth["p_base"])


def test_frames_follow_the_contract(world):
    c, o, k, t = world.customers, world.orders, world.complaints, world.truth
    for col in ("customer_id", "email", "phone", "locale", "timezone", "first_name", "last_name",
                "account_manager"):
        assert c[col].dtype == "str", col
    assert c["email_opt_in"].dtype == bool and c["sms_opt_in"].dtype == bool
    assert c["birthday"].dtype == "datetime64[ns]"
    assert c["customer_id"].is_unique
    assert list(o.columns) == ["order_id", "customer_id", "ordered_at", "amount", "category", "discount",
                               "coupon_code"]
    assert str(o["ordered_at"].dtype) == "datetime64[ns, UTC]"
    assert o["amount"].dtype == "float64" and o["discount"].dtype == "float64"
    assert o["order_id"].is_unique
    assert o["customer_id"].isin(c["customer_id"]).all()
    assert (o["amount"] >= 0).all() and (o["discount"] >= 0).all()
    assert o["coupon_code"].isna().all()  # history has no win-back coupons
    assert o["category"].notna().all()
    assert (o["ordered_at"] < AS_OF).all()
    assert o["ordered_at"].min() >= AS_OF - pd.Timedelta(days=731)
    assert {"customer_id", "created_at", "kind", "resolved"} <= set(k.columns)
    assert str(k["created_at"].dtype) == "datetime64[ns, UTC]" and k["resolved"].dtype == bool
    assert (k["created_at"] < AS_OF).all()
    placed = o.set_index("order_id")["ordered_at"].reindex(k["order_id"]).to_numpy()
    assert (k["created_at"].to_numpy() >= placed).all()
    assert tuple(t.columns) == TRUTH_COLUMNS
    assert t["customer_id"].equals(c["customer_id"])
    assert set(t["true_reason"]) <= set(REASONS) and set(t["true_tier"]) <= set(VALUE_TIERS)
    assert t["alive"].dtype == bool


def test_orders_per_customer_and_two_years_of_history(world):
    per = len(world.orders) / len(world.customers)
    assert 7 <= per <= 13
    span = world.orders["ordered_at"].max() - world.orders["ordered_at"].min()
    assert span > pd.Timedelta(days=700)
    never = ~world.customers["customer_id"].isin(world.orders["customer_id"])
    assert 0.005 < never.mean() < 0.05  # a few registered but never ordered


def test_every_email_is_valid_unique_and_on_a_reserved_domain(world):
    emails = world.customers["email"].dropna()
    assert emails.is_unique
    for e in emails:
        try:
            validate_email(e, check_deliverability=False)
        except EmailNotValidError as exc:  # pragma: no cover - the assertion message
            pytest.fail(f"{e}: {exc}")
    assert set(emails.str.split("@").str[1]) <= {"example.com", "example.net", "example.org"}


def test_every_phone_is_valid_e164_in_a_reserved_or_documented_range(world):
    c = world.customers.dropna(subset=["phone"])
    for number in c["phone"]:
        parsed = phonenumbers.parse(number)
        assert phonenumbers.is_valid_number(parsed), number
        assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == number
    us = c.loc[c["phone"].str.startswith("+1"), "phone"]
    assert len(us) > 0 and us.str.match(r"^\+1\d{3}55501\d{2}$").all()  # NANP fictional 555-01XX
    uk = c.loc[c["phone"].str.startswith("+44"), "phone"]
    assert len(uk) > 0 and uk.str.match(r"^\+44(\d{3}4960|\d{3}4980|2079460)\d{3}$").all()  # Ofcom drama
    cn = c.loc[c["phone"].str.startswith("+86"), "phone"]
    assert cn.is_unique and (c.loc[cn.index, "locale"] == "zh-CN").all()


def test_locales_time_zones_and_names_are_mixed_and_fitting(world):
    c = world.customers
    share_zh = (c["locale"] == "zh-CN").mean()
    assert 0.7 < share_zh < 0.8
    assert set(c["locale"]) == {"zh-CN", "en-US"}
    assert set(c["timezone"]) == set(TIMEZONES)
    assert c["timezone"].value_counts().idxmax() == "Asia/Shanghai"
    assert (c["timezone"] == "Asia/Shanghai").mean() > 0.6
    zh = c[c["locale"] == "zh-CN"]
    en = c[c["locale"] == "en-US"]
    cjk = re.compile(r"^[\u4e00-\u9fff]+$")
    assert zh["first_name"].map(lambda s: bool(cjk.match(s))).all()
    assert zh["last_name"].map(lambda s: bool(cjk.match(s))).all()
    assert en["first_name"].str.match(r"^[A-Z][a-z]+$").all()
    assert en["timezone"].isin(["America/New_York", "America/Los_Angeles", "Europe/London"]).mean() > 0.6


def test_consent_missing_contact_points_and_birthdays(world):
    c = world.customers
    assert 0.02 < c["email"].isna().mean() < 0.1
    assert 0.02 < c["phone"].isna().mean() < 0.15
    assert not c.loc[c["email"].isna(), "email_opt_in"].any()
    assert not c.loc[c["phone"].isna(), "sms_opt_in"].any()
    with_email = c[c["email"].notna()]
    assert 0.05 < (~with_email["email_opt_in"]).mean() < 0.3  # some opted out
    assert 0.2 < (~c.loc[c["phone"].notna(), "sms_opt_in"]).mean() < 0.5
    ages = (AS_OF.tz_localize(None) - c["birthday"].dropna()).dt.days / 365.25
    assert ages.between(17.9, 76).all()
    assert 0.05 < c["birthday"].isna().mean() < 0.2


def test_value_pyramid_managers_and_departures(world):
    tiers = world.truth["true_tier"].value_counts()
    assert tiers["platinum"] < tiers["gold"] < tiers["iron"] < tiers["lead"]
    managed = world.customers["account_manager"].notna()
    top = world.truth["true_tier"].isin(["platinum", "gold"])
    assert managed[top].mean() > 0.6 and not managed[~top].any()
    assert len(world.departed_managers) >= 1
    assert set(world.departed_managers) <= set(world.customers["account_manager"].dropna())
    left = world.managers.dropna(subset=["left_at"])
    assert (left["left_at"] < AS_OF).all()


def test_discounts_follow_price_sensitivity(world):
    o = world.orders.merge(world.truth[["customer_id", "price_sensitivity"]], on="customer_id")
    share = (o["discount"] > 0).groupby(o["price_sensitivity"] > 0.5).mean()
    assert share[True] > 0.5 > share[False]


def test_truth_probabilities_are_consistent(world):
    t = world.truth
    probs = t[["p_base", *PROBABILITY_COLUMNS]]
    assert ((probs >= 0) & (probs <= 1)).all().all()
    for col in PROBABILITY_COLUMNS:
        assert (t[col] >= t["p_base"] - 1e-12).all(), col
    assert t.loc[t["alive"], "p_base"].mean() > 5 * t.loc[~t["alive"], "p_base"].mean()
    # Slipping customers (faded or dead) carry every reason; alive slipping ones buy less than healthy ones.
    lapsed = t[~t["alive"] & t["true_reason"].ne("none")]
    assert set(lapsed["true_reason"]) == set(REASONS) - {"none"}
    fading = t["alive"] & t["true_reason"].ne("none")
    healthy = t["alive"] & t["true_reason"].eq("none")
    assert 0.1 < fading.sum() / t["alive"].sum() < 0.7
    assert t.loc[fading, "p_base"].mean() < t.loc[healthy, "p_base"].mean()
    assert (~t["alive"] & t["true_reason"].eq("none")).sum() == (~world.customers["customer_id"].isin(
        world.orders["customer_id"])).sum()  # only those who never ordered are dead without a reason
    # Offers matched to the reason move the needle more than mismatched ones.
    svc = t[t["true_reason"] == "service"]
    assert (svc["p_service_recovery"] - svc["p_base"]).mean() > 2 * (svc["p_reminder"] - svc["p_base"]).mean()
    price = t[t["true_reason"] == "price"]
    assert (price["p_percent_off"] - price["p_base"]).mean() > 3 * (price["p_reminder"] - price["p_base"]).mean()
    bday = t[t["birthday_window"] & ~t["alive"]]
    no_bday = t[~t["birthday_window"] & ~t["alive"]]
    assert (bday["p_birthday_gift"] - bday["p_base"]).mean() > 3 * (no_bday["p_birthday_gift"] - no_bday["p_base"]).mean()
    assert (t["return_order_value"] > 0).all()


def test_every_offer_kind_is_truly_best_for_some_group_and_effects_are_realistic():
    reasons, tiers, bdays = zip(*[(r, tier, b) for r in REASONS for tier in VALUE_TIERS for b in (False, True)],
                                strict=True)
    n = len(reasons)
    effects = incremental_effects(np.array(reasons), np.array(tiers), np.zeros(n, bool), np.full(n, 30.0),
                                  np.array(bdays), np.ones(n, bool))
    table = pd.DataFrame({k: effects[k] for k in OFFER_KINDS})
    best = set(table.idxmax(axis=1))
    assert best == set(OFFER_KINDS)
    assert 0.10 <= max(effects[k].max() for k in EFFECT_COLUMNS) <= 0.16
    # Every slipping reason has an offer worth ≥ 5 points for a gold customer lapsed a month ago.
    frame = table.assign(reason=reasons, tier=tiers, bday=bdays)
    gold = frame[(frame["tier"] == "gold") & ~frame["bday"] & (frame["reason"] != "none")]
    assert (gold[list(OFFER_KINDS)].max(axis=1) >= 0.05).all()
    none = frame[frame["reason"] == "none"]
    assert none[list(OFFER_KINDS)].to_numpy().max() < 0.10  # pull-forward only


def test_bgnbd_fit_on_the_world_recovers_sensible_parameters():
    fit_bgnbd = pytest.importorskip("winback.segments.models").fit_bgnbd
    w = generate_world(6000, seed=5, as_of=AS_OF)
    day = w.orders["ordered_at"].dt.tz_convert("Asia/Shanghai").dt.tz_localize(None).dt.normalize()
    tx = pd.DataFrame({"c": w.orders["customer_id"], "d": day}).drop_duplicates()
    end = AS_OF.tz_convert("Asia/Shanghai").tz_localize(None).normalize()
    s = tx.groupby("c")["d"].agg(["min", "max", "count"])
    fit = fit_bgnbd(s["count"] - 1, (s["max"] - s["min"]).dt.days, (end - s["min"]).dt.days)
    assert 0.4 < fit.r < 1.8
    assert 0.03 < fit.r / fit.alpha < 0.09  # mean purchase rate per day (truth 1.1/18 ≈ 0.061, thinned)
    assert 0.04 < fit.a / (fit.a + fit.b) < 0.2  # mean dropout per purchase


def test_write_and_read_round_trip_with_csv_copies(world, tmp_path):
    files = write_world(world, tmp_path / "w", csv=True)
    names = {f.name for f in files}
    for frame in ("customers", "orders", "complaints", "truth"):
        assert f"{frame}.parquet" in names and f"{frame}.csv" in names
    back = read_world(tmp_path / "w")
    for frame in ("customers", "orders", "complaints", "truth"):
        pd.testing.assert_frame_equal(getattr(back, frame), getattr(world, frame))
    assert back.as_of == AS_OF and back.seed == 11 and back.departed_managers == world.departed_managers
    lines = (tmp_path / "w" / "departed_managers.txt").read_text(encoding="utf-8").splitlines()
    assert lines == world.departed_manager_entries
    assert [line.split(",")[0] for line in lines] == world.departed_managers  # name,YYYY-MM-DD
    csv_orders = read_table(tmp_path / "w" / "orders.csv")
    assert len(csv_orders) == len(world.orders)
    assert csv_orders["order_id"].tolist() == world.orders["order_id"].tolist()
    csv_customers = read_table(tmp_path / "w" / "customers.csv")
    assert csv_customers["first_name"].tolist() == world.customers["first_name"].tolist()  # UTF-8 names survive


def test_bad_arguments_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="positive integer"):
        generate_world(0, seed=1, as_of=AS_OF)
    with pytest.raises(DataError, match="not found"):
        read_world(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="customers.parquet is missing"):
        read_world(tmp_path / "half")


def test_naive_as_of_is_read_as_utc():
    a = generate_world(50, seed=1, as_of=pd.Timestamp("2026-11-23 16:00"))
    assert a.as_of == AS_OF


def test_the_world_passes_input_validation_without_quarantine(world, tmp_path):
    from winback.sources import load_inputs

    write_world(world, tmp_path / "w", csv=True)
    for ext in ("parquet", "csv"):
        inputs = load_inputs(*(tmp_path / "w" / f"{name}.{ext}" for name in ("customers", "orders", "complaints")),
                             departed_managers=world.departed_managers)
        assert inputs.counts == {} and inputs.quarantine.empty, ext
        assert len(inputs.customers) == len(world.customers) and len(inputs.orders) == len(world.orders)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(min_value=1, max_value=60), seed=st.integers(min_value=0, max_value=2**31))
def test_any_size_and_seed_gives_a_consistent_world(n, seed):
    w = generate_world(n, seed=seed, as_of=AS_OF)
    assert len(w.customers) == len(w.truth) == n
    assert w.customers["customer_id"].is_unique and w.orders["order_id"].is_unique
    assert w.orders["customer_id"].isin(w.customers["customer_id"]).all()
    assert w.complaints["customer_id"].isin(w.orders["customer_id"]).all()
    probs = w.truth[["p_base", *PROBABILITY_COLUMNS]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    assert (w.orders["ordered_at"] < AS_OF).all()
