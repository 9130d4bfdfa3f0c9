"""The send-time gate and the one clock: what holds at the moment a message leaves, on any date.

Quiet hours in the recipient's zone, a frequency cap shared by two campaigns (one process, two
processes, SQLite and PostgreSQL), if_not_returned steps of customers who ordered after planning,
throttled messages deferred at their deadline, the ledger's v1 → v2 migration, and that no module
but `winback.clock` reads the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from test_channels_support import make_plan, write_templates
from winback.channels.dispatch import Backoff, SendSettings, dispatch
from winback.channels.emulator import EmulatorServer
from winback.channels.providers import Router, provider_config_for_emulator
from winback.clock import FrozenClock
from winback.ledger import Ledger
from winback.policy.gate import SendRules, decide
from winback.render import Renderer

REPO = Path(__file__).resolve().parents[1]
SECRET = "unsubscribe-secret-for-tests"
SHARED_CAP = SendRules(window=("09:00", "21:00"), caps=(("any", 1, 14),), if_not_returned=True)


@pytest.fixture(scope="module")
def emu():
    with EmulatorServer(seed=7, smtp=False) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(emu):
    emu.reset()
    emu.set_faults(0.0)
    yield


@pytest.fixture()
def templates(tmp_path):
    return write_templates(tmp_path)


def gated_plan(n: int, *, campaign_id: str, rules: SendRules = SHARED_CAP, zones=("Asia/Shanghai",),
               send_at: str = "2026-11-20T02:00:00Z") -> pd.DataFrame:
    """`make_plan` rows with send rules and customers spread over `zones`."""
    plan = make_plan(n, campaign_id=campaign_id, send_at=send_at)
    plan["coupon_code"] = [f"{campaign_id[:2].upper()}{i:06d}" for i in range(n)]  # codes are unique across campaigns
    plan["timezone"] = [zones[i % len(zones)] for i in range(n)]
    plan["send_rules"] = rules.to_json()
    return plan


def send(emu, tmp_path, templates, ledger, *, now, plan=None, last_orders=None, campaign_id=None, **kw):
    config = provider_config_for_emulator(emu.url, out_dir=str(tmp_path / "calls"), timeout_s=2.0)

    async def go():
        async with Router(config) as router:
            settings = SendSettings(router=router, renderer=Renderer(templates), unsubscribe_secret=SecretStr(SECRET),
                                    public_url="https://events.example.com", backoff=Backoff(0.01, 0.05), seed=1,
                                    clock=FrozenClock(now), **kw)
            return await dispatch(ledger, settings, plan=plan, campaign_id=campaign_id, batch_size=50,
                                  last_orders=last_orders)

    return asyncio.run(go())


# -- the pure gate ---------------------------------------------------------------------------------


def _rows(**columns) -> pd.DataFrame:
    n = len(columns["customer_id"])
    base = {"campaign_id": ["a"] * n, "channel": ["email"] * n, "timezone": ["Asia/Shanghai"] * n,
            "send_rules": [SHARED_CAP.to_json()] * n, "as_of": [pd.Timestamp("2026-11-23T16:00Z")] * n}
    base.update(columns)
    return pd.DataFrame(base)


def test_rules_round_trip_through_their_json():
    rules = SendRules(window=("10:00", "20:00"), caps=(("sms", 1, 14), ("any", 3, 14)), own_counts=True,
                      if_not_returned=True, throttle_wait_minutes=45)
    assert SendRules.parse(rules.to_json()) == rules
    assert SendRules.parse(None) == SendRules() and SendRules.parse("not json") == SendRules()


def test_quiet_hours_defer_in_the_recipients_own_zone():
    now = pd.Timestamp("2026-11-24T15:30:00Z")  # 23:30 in Shanghai, 10:30 in New York
    rows = _rows(customer_id=["sh", "ny"], timezone=["Asia/Shanghai", "America/New_York"])
    sh, ny = decide(rows, None, now)
    assert sh.action == "defer" and sh.reason == "quiet_hours"
    assert sh.until == pd.Timestamp("2026-11-25T01:00:00Z")  # 09:00 Shanghai the next morning
    assert ny.action == "send"


def test_the_cap_counts_other_campaigns_sent_in_flight_and_this_claims_grants():
    now = pd.Timestamp("2026-11-24T03:00:00Z")
    rows = _rows(customer_id=["c1", "c2", "c3", "c3"], campaign_id=["a", "a", "a", "b"])
    history = pd.DataFrame({"customer_id": ["c1", "c2"], "campaign_id": ["b", "b"], "channel": ["sms", "email"],
                            "at": [now - pd.Timedelta(days=2), now - pd.Timedelta(days=20)]})
    d = decide(rows, history, now)
    assert [x.action for x in d] == ["skip", "send", "send", "skip"]
    assert d[0].reason == d[3].reason == "frequency_cap"


def test_own_earlier_steps_do_not_count_unless_the_campaign_says_so():
    now = pd.Timestamp("2026-11-24T03:00:00Z")
    history = pd.DataFrame({"customer_id": ["c1"], "campaign_id": ["a"], "channel": ["email"],
                            "at": [now - pd.Timedelta(days=3)]})
    assert decide(_rows(customer_id=["c1"]), history, now)[0].action == "send"
    own = SendRules(window=("09:00", "21:00"), caps=(("any", 1, 14),), own_counts=True).to_json()
    assert decide(_rows(customer_id=["c1"], send_rules=[own]), history, now)[0].action == "skip"


def test_an_order_after_the_decision_cancels_an_if_not_returned_step_only():
    now = pd.Timestamp("2026-12-08T02:00:00Z")
    plain = SendRules(window=("00:00", "23:59")).to_json()
    rows = _rows(customer_id=["back", "away", "back"],
                 send_rules=[SendRules(window=("00:00", "23:59"), if_not_returned=True).to_json()] * 2 + [plain],
                 as_of=[pd.Timestamp("2026-12-07T00:00Z")] * 3)
    orders = {"back": pd.Timestamp("2026-12-07T22:00:00Z"), "away": pd.Timestamp("2026-11-01T00:00Z")}
    d = decide(rows, None, now, orders)
    assert (d[0].action, d[0].reason) == ("skip", "ordered_since_planned")
    assert d[1].action == "send" and d[2].action == "send"


# -- the engine, over the emulator ------------------------------------------------------------------


def test_a_send_at_2330_shanghai_reaches_new_york_only(emu, tmp_path, templates):
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    plan = gated_plan(40, campaign_id="spring", zones=("Asia/Shanghai", "America/New_York"))
    summary = send(emu, tmp_path, templates, ledger, now="2026-11-24T15:30:00Z", plan=plan)
    rows = ledger.rows("spring")
    sh, ny = rows[rows["timezone"] == "Asia/Shanghai"], rows[rows["timezone"] == "America/New_York"]
    assert (sh["state"] == "planned").all() and (sh["gate_reason"] == "quiet_hours").all()
    assert (pd.to_datetime(sh["send_at_utc"], utc=True) == pd.Timestamp("2026-11-25T01:00:00Z")).all()
    assert (ny["state"] == "sent").all()
    assert summary.sent == 20 and summary.gated == {"deferred: quiet_hours": 20}
    sent_at = pd.to_datetime(ny["sent_at"], utc=True)
    assert (sent_at == pd.Timestamp("2026-11-24T15:30:00Z")).all(), "sent_at is the run's clock, not the wall clock"
    assert emu.stats()["unique_keys"] == 20

    # The next Shanghai morning the deferred messages go out, once.
    again = send(emu, tmp_path, templates, ledger, now="2026-11-25T01:30:00Z")
    assert again.sent == 20 and ledger.status("spring")["planned"] == 0
    assert emu.stats()["duplicates"] == 0


def test_two_campaigns_sharing_a_cap_never_reach_one_customer_twice(emu, tmp_path, templates):
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    ledger.plan(gated_plan(60, campaign_id="autumn"))
    ledger.plan(gated_plan(60, campaign_id="winter"))  # the same 60 customers
    now = "2026-11-24T02:00:00Z"  # 10:00 in Shanghai
    first = send(emu, tmp_path, templates, ledger, now=now, campaign_id="autumn")
    second = send(emu, tmp_path, templates, ledger, now=now, campaign_id="winter")
    assert first.sent == 60 and second.sent == 0
    assert second.gated == {"skipped: frequency_cap": 60}
    rows = ledger.rows("winter")
    assert (rows["state"] == "skipped").all() and (rows["gate_reason"] == "frequency_cap").all()
    assert _messages_per_customer(emu).max() == 1


def test_a_customer_who_ordered_after_planning_gets_no_if_not_returned_step(emu, tmp_path, templates):
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    plan = gated_plan(4, campaign_id="spring")
    plan["step"] = 2
    orders = {"C000000": pd.Timestamp("2026-11-23T22:00:00Z"), "C000001": pd.Timestamp("2026-11-01T00:00Z")}
    summary = send(emu, tmp_path, templates, ledger, now="2026-11-24T02:00:00Z", plan=plan, last_orders=orders)
    rows = ledger.rows("spring").set_index("customer_id")
    assert rows.loc["C000000", "state"] == "skipped"
    assert rows.loc["C000000", "gate_reason"] == "ordered_since_planned"
    assert (rows.drop(index="C000000")["state"] == "sent").all()
    assert summary.gated == {"skipped: ordered_since_planned": 1}


def test_a_throttled_message_is_deferred_at_its_deadline_not_failed(emu, tmp_path, templates):
    emu.set_faults(1.0, kinds=("429",), retry_after="0.05")
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    rules = SendRules(window=("09:00", "21:00"), throttle_wait_minutes=0)
    summary = send(emu, tmp_path, templates, ledger, now="2026-11-24T02:00:00Z",
                   plan=gated_plan(5, campaign_id="spring", rules=rules))
    rows = ledger.rows("spring")
    assert summary.throttled == 5 and not summary.failed
    assert (rows["state"] == "planned").all() and (rows["gate_reason"] == "throttled").all()
    assert (pd.to_datetime(rows["send_at_utc"], utc=True) > pd.Timestamp("2026-11-24T02:00:00Z")).all()


def _messages_per_customer(emu) -> pd.Series:
    messages = emu.messages()
    return pd.Series([m["key"].rsplit(":", 2)[1] for m in messages]).value_counts()


# -- two processes racing for the same customers -----------------------------------------------------


def _write_plan(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def _race_two_senders(emu, tmp_path, templates, ledger_url: str, extra: list[str]) -> None:
    a = _write_plan(gated_plan(150, campaign_id="autumn"), tmp_path / "a.parquet")
    b = _write_plan(gated_plan(150, campaign_id="winter"), tmp_path / "b.parquet")
    env = {"WINBACK_UNSUBSCRIBE_SECRET": SECRET, "WINBACK_PUBLIC_URL": "https://events.example.com",
           "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-m", "winback.cli", "send", "--plan", str(p), "--ledger", ledger_url,
                               "--emulator", emu.url, "--now", "2026-11-24T02:00:00Z", "--templates", str(templates),
                               "--no-progress", "--json", *extra],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in (a, b)]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        json.loads(out.strip().splitlines()[-1])


def test_two_sender_processes_sharing_a_cap_on_sqlite(emu, tmp_path, templates):
    _race_two_senders(emu, tmp_path, templates, f"sqlite:///{tmp_path}/l.db", ["--workers", "2"])
    counts = _messages_per_customer(emu)
    assert len(counts) == 150 and counts.max() == 1
    status = Ledger(f"sqlite:///{tmp_path}/l.db").status()
    assert status["sent"] == 150 and status["skipped"] == 150


@pytest.mark.postgres
def test_two_sender_processes_sharing_a_cap_on_postgres(emu, tmp_path, templates, postgres_schema):
    _race_two_senders(emu, tmp_path, templates, postgres_schema, ["--workers", "2"])
    counts = _messages_per_customer(emu)
    assert len(counts) == 150 and counts.max() == 1
    status = Ledger(postgres_schema).status()
    assert status["sent"] == 150 and status["skipped"] == 150


# -- the ledger's migration and the clock -------------------------------------------------------------


def test_a_version_1_ledger_migrates_with_its_rows(tmp_path):
    from winback.ledger import migrations

    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        from winback.ledger import schema

        schema.schema_version.create(conn)
        for statement in migrations._v1(conn.dialect):
            conn.execute(statement)
        conn.execute(sa.insert(schema.schema_version).values(version=1, applied_at=pd.Timestamp("2026-01-01")))
        conn.execute(sa.text("insert into ledger (campaign_id, customer_id, step, arm, state, attempts, planned_at, "
                             "updated_at, send_at_utc) values ('old', 'c1', 1, 'treatment', 'planned', 0, "
                             "'2026-01-01T00:00:00.000000', '2026-01-01T00:00:00.000000', "
                             "'2026-01-01T00:00:00.000000')"))
    engine.dispose()
    with Ledger(url, clock=FrozenClock("2026-01-02T00:00Z")) as ledger:
        assert ledger.migrations_applied == [2, 3]
        assert ledger.status("old")["planned"] == 1
        batch = ledger.claim(limit=5)
        assert len(batch) == 1 and batch["lease_until"].notna().all()


# Wall-clock reads: only winback.clock may make them (durations use time.monotonic/perf_counter).
_WALL_CLOCK = re.compile(r"datetime\.now\(|datetime\.utcnow\(|date\.today\(|Timestamp\.now\(|Timestamp\.today\("
                         r"|Timestamp\.utcnow\(|time\.time\(\)")


def test_no_module_reads_the_wall_clock_but_the_clock():
    offenders = []
    for folder in ("src/winback", "flows"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in ("src/winback/clock.py",):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                code = line.split("#", 1)[0]
                if _WALL_CLOCK.search(code) and "def utc_now" not in code:
                    offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
