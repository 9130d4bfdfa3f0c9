"""simulate_returns and true_uplift against the demo world's ground truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from winback.demo import generate_world, simulate_returns, simulated_order_prefix, true_uplift
from winback.demo.returns import contacts_from_ledger, replace_simulated_orders
from winback.demo.truth import PROBABILITY_COLUMNS, TRUTH_COLUMNS
from winback.errors import DataError
from winback.vocab import OFFER_KINDS

AS_OF = pd.Timestamp("2026-11-23 16:00", tz="UTC")
SENT = pd.Timestamp("2026-11-24 02:00", tz="UTC")


@pytest.fixture(scope="module")
def world():
    return generate_world(8000, seed=21, as_of=AS_OF)


def _contacts(customer_ids, arm="treatment", kind="percent_off", channel="email", contacted=True,
              coupon=True, campaign="spring-2026", at=SENT):
    n = len(customer_ids)
    ids = pd.Series(customer_ids, dtype="str").reset_index(drop=True)
    return pd.DataFrame({
        "campaign_id": campaign,
        "customer_id": ids,
        "step": 1,
        "arm": arm,
        "contacted": contacted,
        "offer_kind": kind,
        "channel": channel,
        "coupon_code": ("WB-" + ids) if coupon else pd.Series([pd.NA] * n, dtype="str"),
        "contact_at": at,
    })


def _returned(contacts, orders):
    return contacts["customer_id"].isin(orders["customer_id"])


def _within(observed_rate, expected_p, n, sigmas=4.0):
    se = np.sqrt(np.mean(expected_p) * (1 - np.mean(expected_p)) / n)
    return abs(observed_rate - np.mean(expected_p)) <= sigmas * se + 1e-9


def test_holdout_returns_at_the_baseline_rate(world):
    contacts = _contacts(world.truth["customer_id"], arm="holdout", contacted=False)
    orders = simulate_returns(contacts, world.truth, seed=1)
    rate = _returned(contacts, orders).mean()
    assert _within(rate, world.truth["p_base"], len(contacts))
    assert orders["coupon_code"].isna().all()  # nobody held out got a coupon


def test_contacted_customers_return_at_their_treated_rate(world):
    lapsed = world.truth[~world.truth["alive"]]
    for kind in ("reminder", "service_recovery", "percent_off"):
        contacts = _contacts(lapsed["customer_id"], kind=kind)
        orders = simulate_returns(contacts, world.truth, seed=2)
        assert _within(_returned(contacts, orders).mean(), lapsed[f"p_{kind}"], len(contacts)), kind
    calls = _contacts(lapsed["customer_id"], channel="call_task", kind="reminder", coupon=False)
    orders = simulate_returns(calls, world.truth, seed=2)
    assert _within(_returned(calls, orders).mean(), lapsed["p_call"], len(calls))


def test_treated_but_not_contacted_return_at_baseline(world):
    contacts = _contacts(world.truth["customer_id"], contacted=False)
    orders = simulate_returns(contacts, world.truth, seed=3)
    assert _within(_returned(contacts, orders).mean(), world.truth["p_base"], len(contacts))
    assert orders["coupon_code"].isna().all()


def test_measured_uplift_matches_the_true_uplift(world):
    lapsed = world.truth.loc[~world.truth["alive"], "customer_id"].to_numpy()
    arm = np.where(np.arange(len(lapsed)) % 2 == 0, "treatment", "holdout")
    contacts = pd.concat([
        _contacts(lapsed[arm == "treatment"], kind="amount_off"),
        _contacts(lapsed[arm == "holdout"], arm="holdout", contacted=False, kind="amount_off"),
    ], ignore_index=True)
    orders = simulate_returns(contacts, world.truth, seed=4)
    back = _returned(contacts, orders)
    t = contacts["arm"] == "treatment"
    measured = back[t].mean() - back[~t].mean()
    truth_uplift = true_uplift(world.truth, contacts[t])
    se = np.sqrt(back[t].var() / t.sum() + back[~t].var() / (~t).sum())
    assert truth_uplift > 0.01
    assert abs(measured - truth_uplift) < 4 * se


def test_orders_are_inside_the_window_with_prefixed_unique_ids(world):
    ids = world.truth["customer_id"].iloc[:3000]
    contacts = _contacts(ids, kind="percent_off")
    contacts["contact_at"] = SENT + pd.to_timedelta(np.arange(len(ids)) % 48, unit="h")
    orders = simulate_returns(contacts, world.truth, days=14, seed=5)
    assert len(orders) > 100
    assert orders["order_id"].is_unique
    assert orders["order_id"].str.startswith(simulated_order_prefix("spring-2026")).all()
    start = contacts.set_index("customer_id")["contact_at"].reindex(orders["customer_id"]).reset_index(drop=True)
    assert (orders["ordered_at"] > start).all()
    assert (orders["ordered_at"] < start + pd.Timedelta(days=14)).all()
    assert str(orders["ordered_at"].dtype) == "datetime64[ns, UTC]"
    assert (orders["amount"] >= 0).all() and (orders["discount"] >= 0).all()
    used = orders.dropna(subset=["coupon_code"])
    assert len(used) > 0 and (used["coupon_code"] == "WB-" + used["customer_id"]).all()
    assert (used["discount"] > 0).all()
    assert (orders.loc[orders["coupon_code"].isna(), "discount"] == 0).all()
    # At most one coupon redemption per customer (on the first returning order).
    assert used["customer_id"].is_unique
    assert list(orders.columns) == ["order_id", "customer_id", "ordered_at", "amount", "category",
                                    "discount", "coupon_code"]


def test_treated_returners_come_back_earlier_than_baseline_ones(world):
    lapsed = world.truth.loc[~world.truth["alive"], "customer_id"]
    treated = simulate_returns(_contacts(lapsed, kind="reminder"), world.truth, seed=6)
    base = simulate_returns(_contacts(world.truth["customer_id"], arm="holdout", contacted=False),
                            world.truth, seed=6)
    first_t = treated.groupby("customer_id")["ordered_at"].min() - SENT
    first_b = base.groupby("customer_id")["ordered_at"].min() - SENT
    assert first_t.median() < first_b.median()


def test_deterministic_by_seed_and_independent_of_the_other_customers(world):
    contacts = _contacts(world.truth["customer_id"].iloc[:4000], kind="bonus_points")
    a = simulate_returns(contacts, world.truth, seed=7)
    b = simulate_returns(contacts.sample(frac=1.0, random_state=3), world.truth, seed=7)
    c = simulate_returns(contacts, world.truth, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a["order_id"].equals(c["order_id"])
    half = simulate_returns(contacts.iloc[:2000], world.truth, seed=7)
    pd.testing.assert_frame_equal(half, a[a["customer_id"].isin(contacts["customer_id"].iloc[:2000])]
                                  .reset_index(drop=True))


def test_cadence_steps_combine_their_effects(world):
    lapsed = world.truth.loc[~world.truth["alive"], "customer_id"]
    step1 = _contacts(lapsed, kind="reminder")
    step2 = _contacts(lapsed, kind="percent_off", at=SENT + pd.Timedelta(days=5)).assign(step=2)
    both = pd.concat([step1, step2], ignore_index=True)
    orders = simulate_returns(both, world.truth, seed=9)
    per = true_uplift(world.truth, both)
    single = true_uplift(world.truth, step1)
    assert per > single
    rate = lapsed.isin(orders["customer_id"]).mean()
    base = world.truth.set_index("customer_id").loc[lapsed, "p_base"].mean()
    assert abs(rate - (base + per)) < 4 * np.sqrt((base + per) * (1 - base - per) / len(lapsed))


def test_true_uplift_on_a_literal_truth_table():
    truth = pd.DataFrame({"customer_id": ["a", "b", "c"], "p_base": [0.1, 0.2, 0.0]})
    for i, kind in enumerate(OFFER_KINDS):
        truth[f"p_{kind}"] = [0.1 + 0.01 * i, 0.2, 0.0]
    truth["p_call"] = [0.5, 0.6, 0.1]
    a = pd.DataFrame({"customer_id": ["a", "b", "c"], "offer_kind": ["percent_off", "reminder", "reminder"],
                      "channel": ["email", "email", "call_task"], "tier": ["gold", "lead", "lead"]})
    # a: 0.11 − 0.1; b: 0; c: call 0.1 − 0
    assert true_uplift(truth, a) == pytest.approx((0.01 + 0.0 + 0.1) / 3)
    by = true_uplift(truth, a, by="tier").set_index("tier")
    assert by.loc["gold", "uplift"] == pytest.approx(0.01)
    assert by.loc["lead", "uplift"] == pytest.approx(0.05) and by.loc["lead", "n"] == 2
    not_sent = a.assign(contacted=[False, True, True])
    assert true_uplift(truth, not_sent) == pytest.approx(0.1 / 3)
    # Two steps for `a`: u = 1 − 0.89/0.9 each; combined 1 − (1 − u)²; p = 1 − 0.9(1 − u)².
    two = pd.DataFrame({"customer_id": ["a", "a"], "offer_kind": ["percent_off", "percent_off"]})
    u = 1 - 0.89 / 0.9
    assert true_uplift(truth, two) == pytest.approx(1 - 0.9 * (1 - u) ** 2 - 0.1)


def test_bad_contacts_are_clear_errors(world):
    good = _contacts(world.truth["customer_id"].iloc[:5])
    with pytest.raises(DataError, match="contact_at"):
        simulate_returns(good.drop(columns="contact_at"), world.truth, seed=1)
    with pytest.raises(DataError, match="not in the demo world"):
        simulate_returns(_contacts(["nobody"]), world.truth, seed=1)
    with pytest.raises(DataError, match="offer_kind 'bogus'"):
        simulate_returns(good.assign(offer_kind="bogus"), world.truth, seed=1)
    with pytest.raises(DataError, match="no contact time"):
        simulate_returns(good.assign(contact_at=pd.NaT), world.truth, seed=1)
    with pytest.raises(DataError, match="window"):
        simulate_returns(good, world.truth, days=0, seed=1)
    assert simulate_returns(good.iloc[:0], world.truth, seed=1).empty


def test_truth_columns_are_those_of_the_contract():
    assert TRUTH_COLUMNS[:4] == ("customer_id", "true_reason", "alive", "p_base")
    assert set(PROBABILITY_COLUMNS) == {f"p_{k}" for k in OFFER_KINDS} | {"p_call"}
    assert "return_order_value" in TRUTH_COLUMNS


def test_contacts_from_ledger_rows_and_idempotent_replacement(world):
    ids = world.truth["customer_id"].iloc[:6].tolist()
    rows = pd.DataFrame({
        "campaign_id": "c1", "customer_id": ids, "step": 1,
        "arm": ["treatment"] * 4 + ["holdout"] * 2,
        "state": ["sent", "failed", "sent", "uncertain", "held_out", "held_out"],
        "offer_kind": "percent_off", "channel": "email",
        "coupon_code": ["X1", "X2", "X3", "X4", None, None],
        "send_at_utc": SENT, "sent_at": [SENT + pd.Timedelta(minutes=5), pd.NaT, SENT, pd.NaT, pd.NaT, pd.NaT],
        "context": [json.dumps({"offer": {"percent": 20, "amount": None}}), None, "{}", "not json", None, None],
    })
    contacts = contacts_from_ledger(rows)
    assert contacts["contacted"].tolist() == [True, False, True, False, False, False]
    assert contacts["contact_at"].iloc[0] == SENT + pd.Timedelta(minutes=5)
    assert (contacts["contact_at"].iloc[1:] == SENT).all()
    assert contacts["offer_percent"].iloc[0] == 20 and np.isnan(contacts["offer_percent"].iloc[1])
    with pytest.raises(DataError, match="state"):
        contacts_from_ledger(rows.drop(columns="state"))

    history = world.orders.iloc[:100]
    sim = simulate_returns(_contacts(world.truth["customer_id"].iloc[:3000], campaign="c1"), world.truth, seed=1)
    once, replaced0 = replace_simulated_orders(history, sim, "c1")
    twice, replaced1 = replace_simulated_orders(once, sim, "c1")
    assert replaced0 == 0 and replaced1 == len(sim)
    pd.testing.assert_frame_equal(once, twice)
    other, _ = replace_simulated_orders(once, sim.assign(order_id=sim["order_id"].str.replace("SIM-c1-", "SIM-c2-")),
                                        "c2")
    assert len(other) == len(once) + len(sim)
