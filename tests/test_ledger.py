"""The ledger over a real SQLite file and the real PostgreSQL: same test functions for both."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winback.errors import DataError, LedgerError
from winback.ledger import Ledger, Outcome

NOW = pd.Timestamp("2026-11-23 10:00", tz="UTC")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    """A fresh ledger URL: a SQLite file under tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_schema")


@pytest.fixture()
def ledger(url):
    with Ledger(url) as led:
        yield led


def plan_frame(n: int = 6, *, campaign: str = "spring", arms=None, step: int = 1, hours=None) -> pd.DataFrame:
    """A plan frame shaped like docs/CONTRACTS.md (build_plan's output)."""
    arms = arms or (["treatment"] * (n - 2) + ["holdout", "excluded"])
    hours = hours if hours is not None else [-1] * n
    return pd.DataFrame(
        {
            "campaign_id": campaign,
            "customer_id": [f"c{i:04d}" for i in range(n)],
            "step": step,
            "arm": arms,
            "reason": "overdue",
            "channel": ["email" if i % 2 == 0 else "sms" for i in range(n)],
            "to_address": [f"c{i}@example.cn" if i % 2 == 0 else f"+86138000{i:05d}" for i in range(n)],
            "send_at_utc": [NOW + pd.Timedelta(hours=h) for h in hours],
            "send_at_local": "2026-11-23T17:00:00+08:00",
            "timezone": "Asia/Shanghai",
            "locale": "zh-CN",
            "offer": "pct10",
            "offer_kind": "percent_off",
            "expected_cost": 3.5,
            "expected_net_value": [float(i) for i in range(n)],
            "p_return": 0.12,
            "template": "winback_basic",
            "coupon_code": [f"WB-{i:06d}" for i in range(n)],
            "value_tier": "gold",
            "lapse_stage": "lapsed",
            "likely_reason": "forgotten",
            "account_manager": pd.Series([None] * n, dtype="object"),
            "context": [json.dumps({"customer": {"customer_id": f"c{i:04d}", "first_name": "小明"}}) for i in range(n)],
            "as_of": NOW,
        }
    )


# -- plan --------------------------------------------------------------------------------------------


def test_plan_inserts_new_keys_only_and_maps_arms(ledger):
    frame = plan_frame(6)
    assert ledger.plan(frame) == 5  # the excluded row is not stored
    assert ledger.plan(frame) == 0  # idempotent
    more = pd.concat([frame, plan_frame(8, arms=["treatment"] * 8).iloc[6:]], ignore_index=True)
    assert ledger.plan(more) == 2
    rows = ledger.rows("spring")
    assert list(rows["customer_id"]) == ["c0000", "c0001", "c0002", "c0003", "c0004", "c0006", "c0007"]
    states = dict(zip(rows["customer_id"], rows["state"], strict=True))
    assert states["c0004"] == "held_out" and states["c0000"] == "planned"
    assert ledger.status("spring") == {"planned": 6, "sending": 0, "sent": 0, "failed": 0, "suppressed": 0,
                                       "held_out": 1, "uncertain": 0, "skipped": 0}
    assert ledger.campaigns() == ["spring"]


def test_plan_round_trips_every_column(ledger):
    frame = plan_frame(4, arms=["treatment", "holdout", "treatment", "treatment"])
    ledger.plan(frame)
    rows = ledger.rows("spring").set_index("customer_id")
    src = frame.set_index("customer_id")
    for col in ["arm", "channel", "to_address", "send_at_local", "offer", "coupon_code", "context", "template"]:
        assert list(rows[col]) == list(src[col]), col
    assert str(rows["send_at_utc"].dtype) == "datetime64[ns, UTC]"
    assert (rows["send_at_utc"] == src["send_at_utc"]).all()
    assert (rows["as_of"] == NOW).all()
    assert rows["account_manager"].isna().all()
    assert json.loads(rows.loc["c0000", "context"])["customer"]["first_name"] == "小明"
    assert list(rows["expected_net_value"]) == [0.0, 1.0, 2.0, 3.0]
    assert (rows["attempts"] == 0).all() and rows["claim_token"].isna().all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns=["step"]), "lacks column"),
        (lambda f: f.assign(arm=["treatment", "control", "holdout"]), "unknown arm"),
        (lambda f: f.assign(customer_id=["a", "a", "b"]), "duplicate"),
        (lambda f: f.assign(send_at_utc=[NOW, pd.NaT, NOW]), "no send_at_utc"),
        (lambda f: f.assign(customer_id=["a", None, "b"]), "customer_id is missing"),
    ],
)
def test_plan_rejects_bad_frames_with_a_clear_error(ledger, change, message):
    frame = change(plan_frame(3, arms=["treatment", "treatment", "holdout"]))
    with pytest.raises(DataError, match=message):
        ledger.plan(frame)
    assert ledger.status()["planned"] == 0  # nothing half-stored


# -- claim / record ----------------------------------------------------------------------------------


def test_claim_takes_due_rows_in_time_order_and_respects_filters(ledger):
    frame = plan_frame(6, arms=["treatment"] * 6, hours=[-3, -1, -2, 5, -1, -1])
    ledger.plan(frame)
    first = ledger.claim("spring", now=NOW, limit=2)
    assert list(first["customer_id"]) == ["c0000", "c0002"]  # the most overdue first
    assert (first["state"] == "sending").all() and (first["attempts"] == 1).all()
    assert first["claim_token"].nunique() == 1 and first.attrs["claim_token"] == first["claim_token"].iloc[0]
    sms = ledger.claim("spring", now=NOW, limit=10, channel="sms")
    assert list(sms["customer_id"]) == ["c0001", "c0005"]
    rest = ledger.claim(now=NOW, limit=10)
    assert list(rest["customer_id"]) == ["c0004"]  # c0003 is not due yet
    assert ledger.claim("other", now=NOW, limit=10).empty
    assert list(ledger.claim(now=NOW + pd.Timedelta(hours=6), limit=10)["customer_id"]) == ["c0003"]


def test_record_moves_claimed_rows_only(ledger):
    ledger.plan(plan_frame(6, arms=["treatment"] * 6))
    batch = ledger.claim("spring", now=NOW, limit=4)
    token = batch.attrs["claim_token"]
    outcomes = [
        Outcome("spring", "c0000", 1, "sent", "sendgrid", "msg-0"),
        Outcome("spring", "c0001", 1, "failed", "twilio", None, "21211 invalid number"),
        Outcome("spring", "c0002", 1, "suppressed", None, None, "unsubscribed"),
        Outcome("spring", "c0003", 1, "planned", "sendgrid", None, "provider outage"),
        Outcome("spring", "c0004", 1, "sent", "sendgrid", "msg-4"),  # not claimed: ignored
    ]
    assert ledger.record(outcomes, claim_token="someone-else", now=NOW) == 0
    assert ledger.record(outcomes, claim_token=token, now=NOW) == 4
    assert ledger.record(outcomes, claim_token=token, now=NOW) == 0  # final states are final
    rows = ledger.rows("spring").set_index("customer_id")
    assert rows.loc["c0000", "state"] == "sent" and rows.loc["c0000", "provider_message_id"] == "msg-0"
    assert rows.loc["c0000", "sent_at"] == NOW
    assert rows.loc["c0001", "state"] == "failed" and rows.loc["c0001", "error"] == "21211 invalid number"
    assert pd.isna(rows.loc["c0001", "sent_at"])
    assert rows.loc["c0002", "state"] == "suppressed"
    assert rows.loc["c0003", "state"] == "planned" and pd.isna(rows.loc["c0003", "claim_token"])
    assert rows.loc["c0004", "state"] == "planned"
    again = ledger.claim("spring", now=NOW, limit=10)
    assert set(again["customer_id"]) == {"c0003", "c0004", "c0005"}
    assert dict(zip(again["customer_id"], again["attempts"], strict=True))["c0003"] == 2
    with pytest.raises(DataError, match="outcome state"):
        ledger.record([Outcome("spring", "c0003", 1, "delivered")])
    history = ledger.contact_history(NOW - pd.Timedelta(days=1))
    assert list(history.columns) == ["customer_id", "channel", "sent_at", "campaign_id"]
    assert list(history["customer_id"]) == ["c0000"] and history["sent_at"].iloc[0] == NOW
    assert ledger.contact_history(NOW + pd.Timedelta(seconds=1)).empty
    assert ledger.contact_history(NOW - pd.Timedelta(days=1), channels=["sms"]).empty


def test_status_counts_every_state(ledger):
    ledger.plan(plan_frame(8, arms=["treatment"] * 6 + ["holdout", "holdout"]))
    batch = ledger.claim(now=NOW, limit=5)
    ledger.record([Outcome("spring", "c0000", 1, "sent"), Outcome("spring", "c0001", 1, "failed")],
                  claim_token=batch.attrs["claim_token"])
    ledger.mark_uncertain([("spring", "c0002", 1)], error="timeout, provider has no lookup")
    assert ledger.status() == {"planned": 1, "sending": 2, "sent": 1, "failed": 1, "suppressed": 0,
                               "held_out": 2, "uncertain": 1, "skipped": 0}
    assert ledger.status("nothing-here") == dict.fromkeys(ledger.status(), 0)


def _claim_until_empty(url: str, out: list, barrier: threading.Barrier) -> None:
    with Ledger(url) as led:  # its own engine, like a second process
        barrier.wait()
        while True:
            batch = led.claim("spring", now=NOW, limit=37)
            if batch.empty:
                return
            out.extend(batch["customer_id"])


def test_two_concurrent_claimers_never_get_the_same_row(ledger, url):
    ledger.plan(plan_frame(1500, arms=["treatment"] * 1500))
    got_a: list[str] = []
    got_b: list[str] = []
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=_claim_until_empty, args=(url, got, barrier)) for got in (got_a, got_b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not set(got_a) & set(got_b)
    assert len(got_a) + len(got_b) == 1500 == len(set(got_a) | set(got_b))
    assert got_a and got_b  # both really took part
    assert ledger.status()["sending"] == 1500


CLAIMER = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from winback.ledger import Ledger
    led = Ledger(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    got = []
    while True:
        batch = led.claim(now=pd.Timestamp("2026-11-23 10:00", tz="UTC"), limit=25)
        if batch.empty:
            break
        got.extend(batch["customer_id"])
    print(json.dumps(got))
    """
)


def test_two_processes_claiming_never_get_the_same_row(ledger, url):
    ledger.plan(plan_frame(600, arms=["treatment"] * 600))
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, cwd=REPO)
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    a, b = results
    assert not set(a) & set(b)
    assert len(a) + len(b) == 600 == len(set(a) | set(b))


CRASHER = textwrap.dedent(
    """
    import os, sys
    import pandas as pd
    from winback.ledger import Ledger, Outcome
    led = Ledger(sys.argv[1])
    batch = led.claim(now=pd.Timestamp("2026-11-23 10:00", tz="UTC"), limit=4)
    first = batch.iloc[0]
    led.record([Outcome(first.campaign_id, first.customer_id, int(first.step), "sent", "emulator", "m-1")],
               claim_token=batch.attrs["claim_token"])
    os._exit(9)  # die between "marked sending" and "outcome recorded" for the other three
    """
)


def test_rows_left_sending_after_a_crash_are_in_flight(ledger, url):
    ledger.plan(plan_frame(6, arms=["treatment"] * 6))
    proc = subprocess.run([sys.executable, "-c", CRASHER, url], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    with Ledger(url) as resumed:
        stuck = resumed.in_flight("spring")
        assert list(stuck["customer_id"]) == ["c0001", "c0002", "c0003"]
        assert stuck["claim_token"].notna().all()
        assert resumed.in_flight("spring", claimed_before=NOW).empty  # claimed exactly at NOW
        # A fresh claim never hands out rows stuck in sending.
        assert set(resumed.claim(now=NOW, limit=10)["customer_id"]) == {"c0004", "c0005"}
        # Reconciliation: found at the provider → sent; unknown → uncertain; policy resend → planned.
        assert resumed.record([Outcome("spring", "c0001", 1, "sent", "emulator", "m-found")]) == 1
        assert resumed.mark_uncertain(stuck.iloc[[1]], error="no lookup") == 1
        assert resumed.release([("spring", "c0003", 1)]) == 1
        assert resumed.release([("spring", "c0002", 1)], from_states=("uncertain",)) == 1
        assert resumed.in_flight("spring").shape[0] == 2  # c0004, c0005 from the fresh claim
        assert set(resumed.claim(now=NOW, limit=10)["customer_id"]) == {"c0002", "c0003"}
        assert resumed.status("spring")["sent"] == 2


# -- suppressions, events, offer results ------------------------------------------------------------


def test_suppressions_are_idempotent(ledger):
    assert ledger.add_suppression("c1", "email", "c1@example.cn", "unsubscribed", "link", now=NOW) is True
    assert ledger.add_suppression("c1", "email", "c1@example.cn", "bounced", "sendgrid") is False
    assert ledger.add_suppression("c1", "sms", "+8613800000001", "complained", "twilio") is True
    sup = ledger.suppressions()
    assert list(sup.columns) == ["customer_id", "channel", "address", "reason", "source", "created_at"]
    assert list(sup["reason"]) == ["unsubscribed", "complained"]
    assert sup["created_at"].iloc[0] == NOW and str(sup["created_at"].dtype) == "datetime64[ns, UTC]"
    assert len(ledger.suppressions("sms")) == 1
    with pytest.raises(DataError, match="reason"):
        ledger.add_suppression("c1", "email", None, "angry")


def test_events_dedup_update_delivery_status_and_suppress(ledger):
    ledger.plan(plan_frame(4, arms=["treatment"] * 4))
    batch = ledger.claim(now=NOW, limit=4)
    ledger.record([Outcome("spring", f"c000{i}", 1, "sent", "sendgrid", f"sg-{i}") for i in range(4)],
                  claim_token=batch.attrs["claim_token"])
    # By provider message id.
    assert ledger.record_event("sendgrid", "ev-1", "delivered", provider_message_id="sg-0", occurred_at=NOW,
                               payload={"event": "delivered"})
    assert not ledger.record_event("sendgrid", "ev-1", "delivered", provider_message_id="sg-0")  # replay
    # By our key (custom args) — a click, then a late delivered must not downgrade it.
    assert ledger.record_event("sendgrid", "ev-2", "clicked", campaign_id="spring", customer_id="c0001", step=1)
    assert ledger.record_event("sendgrid", "ev-3", "delivered", campaign_id="spring", customer_id="c0001", step=1)
    # A bounce suppresses the address the row was sent to.
    assert ledger.record_event("sendgrid", "ev-4", "bounced", provider_message_id="sg-2")
    # Unknown message: stored, nothing else changes.
    assert ledger.record_event("sendgrid", "ev-5", "bounced", provider_message_id="nope")
    rows = ledger.rows("spring").set_index("customer_id")
    assert rows.loc["c0000", "delivery_status"] == "delivered"
    assert rows.loc["c0001", "delivery_status"] == "clicked"
    assert rows.loc["c0002", "delivery_status"] == "bounced"
    assert pd.isna(rows.loc["c0003", "delivery_status"])
    sup = ledger.suppressions()
    assert sup[["customer_id", "channel", "address", "reason", "source"]].values.tolist() == [
        ["c0002", "email", "c2@example.cn", "bounced", "sendgrid"]
    ]
    ev = ledger.events()
    assert list(ev["provider_event_id"]) == ["ev-1", "ev-2", "ev-3", "ev-4", "ev-5"]
    assert ev.loc[0, "customer_id"] == "c0000" and ev.loc[0, "occurred_at"] == NOW
    assert json.loads(ev.loc[0, "payload"]) == {"event": "delivered"}
    assert pd.isna(ev.loc[4, "customer_id"])


def test_unsubscribe_event_without_step_finds_the_latest_step_of_the_channel(ledger):
    ledger.plan(plan_frame(2, arms=["treatment"] * 2))
    ledger.plan(plan_frame(2, arms=["treatment"] * 2, step=2))
    assert ledger.record_event("winback", "unsub:spring:c0000:email", "unsubscribed", campaign_id="spring",
                               customer_id="c0000", channel="email")
    rows = ledger.rows("spring")
    status = dict(zip(zip(rows["customer_id"], rows["step"], strict=True), rows["delivery_status"], strict=True))
    assert status[("c0000", 2)] == "unsubscribed" and pd.isna(status[("c0000", 1)])
    assert ledger.suppressions()["reason"].tolist() == ["unsubscribed"]


def test_offer_results_round_trip_and_upsert(ledger):
    first = pd.DataFrame({"campaign_id": ["spring", "spring"], "offer_kind": ["reminder", "percent_off"],
                          "value_tier": ["gold", "gold"], "n_treated": [100, 80], "returned_treated": [12, 15],
                          "n_holdout": [20, 20], "returned_holdout": [2, 2]})
    assert ledger.save_offer_results(first, now=NOW) == 2
    update = first.iloc[[0]].assign(n_treated=120, returned_treated=20)
    ledger.save_offer_results(update, now=NOW + pd.Timedelta(days=1))
    got = ledger.offer_results()
    assert list(got["offer_kind"]) == ["percent_off", "reminder"]
    assert got.loc[1, ["n_treated", "returned_treated"]].tolist() == [120, 20]
    assert got.loc[0, "measured_at"] == NOW and got.loc[1, "measured_at"] == NOW + pd.Timedelta(days=1)
    assert str(got["n_treated"].dtype) == "int64"
    with pytest.raises(DataError, match="lack"):
        ledger.save_offer_results(first.drop(columns=["n_holdout"]))


# -- schema, errors ----------------------------------------------------------------------------------


def test_migrations_are_idempotent_on_reopen(ledger, url):
    assert ledger.migrations_applied == [1, 2, 3]
    ledger.plan(plan_frame(3))
    with Ledger(url) as again:
        assert again.migrations_applied == []
        assert again.status()["planned"] == 1
        with again.engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from schema_version")).scalar_one() == 3


def test_two_processes_opening_a_fresh_database_migrate_once(url):
    opened: list[list[int]] = []
    barrier = threading.Barrier(2)

    def open_it():
        barrier.wait()
        with Ledger(url) as led:
            opened.append(led.migrations_applied)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(opened) == [[], [1, 2, 3]]


def test_bad_urls_raise_ledger_errors(tmp_path):
    with pytest.raises(LedgerError, match="not a database URL"):
        Ledger("not a url")
    with pytest.raises(LedgerError, match="unsupported"):
        Ledger("mysql+pymysql://x/y")
    with pytest.raises(LedgerError, match="cannot open the ledger") as err:
        Ledger("postgresql+psycopg://nobody:sekret@127.0.0.1:1/none?connect_timeout=2")
    assert "sekret" not in str(err.value)


def test_default_url_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WINBACK_LEDGER_URL", f"sqlite:///{tmp_path / 'env' / 'l.db'}")
    with Ledger() as led:
        assert led.url.endswith("env/l.db")
    assert (tmp_path / "env" / "l.db").exists()


# -- properties --------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@st.composite
def plan_frames(draw):
    n = draw(st.integers(1, 12))
    ids = draw(st.lists(_text.filter(bool), min_size=n, max_size=n, unique=True))
    arms = draw(st.lists(st.sampled_from(["treatment", "holdout", "excluded"]), min_size=n, max_size=n))
    minutes = draw(st.lists(st.integers(-10_000, 10_000), min_size=n, max_size=n))
    micros = draw(st.lists(st.integers(0, 999_999), min_size=n, max_size=n))
    costs = draw(st.lists(st.none() | st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n))
    codes = draw(st.lists(st.none() | _text, min_size=n, max_size=n))
    codes = [c if c is None or codes.index(c) == i else None for i, c in enumerate(codes)]  # a code is given once
    return pd.DataFrame(
        {
            "campaign_id": draw(_text.filter(bool)),
            "customer_id": ids,
            "step": draw(st.integers(1, 5)),
            "arm": arms,
            "channel": "email",
            "send_at_utc": [NOW + pd.Timedelta(minutes=m, microseconds=u) for m, u in zip(minutes, micros, strict=True)],
            "expected_cost": pd.Series(costs, dtype="float64"),
            "coupon_code": pd.Series(codes, dtype="object"),
            "context": [json.dumps({"customer": {"customer_id": i}}, ensure_ascii=False) for i in ids],
        }
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=plan_frames())
def test_property_plan_round_trips(tmp_path, frame):
    """Whatever a plan holds, the ledger stores the treatment/holdout rows exactly, once."""
    with Ledger(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db") as led:
        kept = frame[frame["arm"] != "excluded"]
        assert led.plan(frame) == len(kept)
        assert led.plan(frame) == 0
        got = led.rows(frame["campaign_id"].iloc[0]).set_index("customer_id").loc[kept["customer_id"]]
        assert list(got["step"]) == list(kept["step"])
        assert list(got["send_at_utc"]) == list(kept["send_at_utc"])
        assert list(got["state"]) == ["planned" if a == "treatment" else "held_out" for a in kept["arm"]]
        assert got["expected_cost"].fillna(-0.5).tolist() == kept["expected_cost"].fillna(-0.5).tolist()
        assert [None if pd.isna(c) else c for c in got["coupon_code"]] == list(kept["coupon_code"])
        assert list(got["context"]) == list(kept["context"])
