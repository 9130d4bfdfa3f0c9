"""Coupon codes unique across campaigns (a ledger constraint, also under concurrent plans), the coupon export,
`winback validate` over every locale × channel × template, do-not-contact lists, the coupon-abuse guard."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from test_channels_support import make_plan
from test_offers import AS_OF as OFFER_AS_OF
from test_offers import CAMPAIGN as OFFER_CAMPAIGN
from test_offers import frame as offer_frame
from test_plan import AS_OF, campaign, population
from winback.campaigns import build_plan
from winback.cli import main as winback
from winback.errors import LedgerError
from winback.ledger import Ledger
from winback.ledger.ledger import Outcome
from winback.offers import choose_offers

REPO = Path(__file__).resolve().parents[1]


# -- coupon codes unique across campaigns -------------------------------------------------------------


def _codes_across_campaigns(url: str) -> None:
    with Ledger(url) as ledger:
        spring = make_plan(3, campaign_id="spring")
        ledger.plan(spring)
        again = make_plan(3, campaign_id="spring").assign(step=2)  # a reminder repeats its customer's code
        assert ledger.plan(again) == 3
        autumn = make_plan(3, campaign_id="autumn")
        autumn.loc[1, "coupon_code"] = spring.loc[2, "coupon_code"]  # another customer, another campaign
        with pytest.raises(LedgerError, match="coupon code already given"):
            ledger.plan(autumn)
        assert ledger.rows("autumn").empty  # the whole plan is refused, nothing half-stored
        mixed = make_plan(3, campaign_id="winter")
        mixed.loc[0, "coupon_code"] = spring.loc[0, "coupon_code"]
        mixed.loc[0, "customer_id"] = "C000000"  # the same customer, but another campaign: still refused
        with pytest.raises(LedgerError, match="coupon code already given"):
            ledger.plan(mixed)


def test_a_code_is_given_once_across_campaigns_on_sqlite(tmp_path) -> None:
    _codes_across_campaigns(f"sqlite:///{tmp_path / 'ledger.db'}")


def test_a_code_is_given_once_across_campaigns_on_postgres(postgres_schema) -> None:
    _codes_across_campaigns(postgres_schema)


PLANNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_channels_support import make_plan
    from winback.errors import LedgerError
    from winback.ledger import Ledger
    url, campaign, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    plan = make_plan(2000, campaign_id=campaign)
    plan["coupon_code"] = [f"{{campaign}}-{{i}}" for i in range(2000)]
    plan.loc[1999, "coupon_code"] = "SHARED-CODE"  # the last row of both plans: the same code
    with Ledger(url) as ledger:
        while time.time() < start:
            time.sleep(0.001)
        try:
            print("stored", ledger.plan(plan))
        except LedgerError as exc:
            print("refused", exc)
""")


def _concurrent_plans(url: str, tmp_path: Path) -> None:
    import time

    script = tmp_path / "planner.py"
    script.write_text(PLANNER.format(tests=str(REPO / "tests")), encoding="utf-8")
    Ledger(url).close()  # migrate once, so both processes race on the plan itself
    start = f"{time.time() + 3:.3f}"  # both start planning at the same moment
    procs = [subprocess.Popen([sys.executable, str(script), url, name, start], stdout=subprocess.PIPE, text=True,
                              cwd=REPO) for name in ("alpha", "beta")]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(o.split()[0] for o in outputs) == ["refused", "stored"], outputs
    assert any("coupon code already given" in o for o in outputs)
    with Ledger(url) as ledger:
        stored = [c for c in ("alpha", "beta") if len(ledger.rows(c))]
        assert len(stored) == 1 and len(ledger.rows(stored[0])) == 2000


def test_two_concurrent_plans_with_one_code_in_common_store_it_once_on_sqlite(tmp_path) -> None:
    _concurrent_plans(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)


def test_two_concurrent_plans_with_one_code_in_common_store_it_once_on_postgres(postgres_schema, tmp_path) -> None:
    _concurrent_plans(postgres_schema, tmp_path)


# -- coupon export ------------------------------------------------------------------------------------


def test_coupons_export_has_code_offer_value_and_validity(tmp_path, capsys) -> None:
    customers, segments = population(300, seed=2)
    plan = build_plan(campaign(), customers, segments, as_of=AS_OF)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as ledger:
        ledger.plan(plan, now=AS_OF)
        sent = plan[(plan["arm"] == "treatment") & plan["coupon_code"].notna()].head(5)
        rows = ledger.claim("plan-test", now=AS_OF + pd.Timedelta(days=2), limit=10_000, gate=False)
        ledger.record([Outcome("plan-test", c, 1, "sent" if c in set(sent["customer_id"]) else "failed")
                       for c in rows["customer_id"]], now=AS_OF + pd.Timedelta(days=2))
    out = tmp_path / "codes.csv"
    assert winback(["coupons", "export", "--campaign", "plan-test", "--out", str(out), "--ledger", url]) == 0
    codes = pd.read_csv(out)
    given = plan[(plan["arm"] == "treatment") & plan["coupon_code"].notna()]
    assert sorted(codes["code"]) == sorted(given["coupon_code"]) and codes["code"].is_unique
    assert set(codes.loc[codes["status"] == "sent", "code"]) == set(sent["coupon_code"])
    pct = codes[codes["offer"] == "pct15"].iloc[0]
    assert pct["value"] == "15% off" and pct["valid_until"] > pct["valid_from"]
    save = codes[codes["offer"] == "save50"]
    if len(save):
        assert save.iloc[0]["value"] == "50 CNY off from 300 CNY"
    assert "Wrote" in capsys.readouterr().out


def test_coupons_export_of_an_unknown_campaign_is_an_error(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert winback(["coupons", "export", "--campaign", "nope", "--out", str(tmp_path / "x.csv"), "--ledger", url]) == 1
    assert "no campaign 'nope'" in capsys.readouterr().err


# -- validate: every locale × channel × template --------------------------------------------------------


def test_validate_checks_every_locale_channel_and_template_the_campaign_can_produce(tmp_path, capsys) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    spec = (REPO / "campaigns" / "cn_retail_winback.yaml").read_text(encoding="utf-8")
    path = tmp_path / "campaign.yaml"
    path.write_text(spec.replace("templates_dir: ../templates", f"templates_dir: {templates}"), encoding="utf-8")
    assert winback(["validate", str(path)]) == 0
    (templates / "percent_off" / "zh-CN" / "sms.txt").unlink()  # zh-CN SMS would fall back to English
    (templates / "amount_off" / "en-US" / "sms.txt").unlink()
    (templates / "amount_off" / "zh-CN" / "sms.txt").unlink()  # no SMS at all for this offer
    capsys.readouterr()
    assert winback(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert "amount_off: sms in zh-CN" in captured.err
    assert "percent_off: warning: sms in zh-CN falls back to en-US" in captured.out


# -- do-not-contact lists -------------------------------------------------------------------------------


def test_suppress_import_by_id_or_address_and_export(tmp_path, capsys) -> None:
    customers, segments = population(200, seed=4)
    plain = build_plan(campaign(), customers, segments, as_of=AS_OF)
    treated = plain[plain["arm"] == "treatment"]
    by_id = treated.iloc[0]["customer_id"]
    by_mail = treated[treated["channel"] == "email"].iloc[1]
    by_phone = treated[treated["channel"] == "sms"].iloc[0]
    listing = tmp_path / "dnc.csv"
    pd.DataFrame({"customer_id": [by_id, None, None],
                  "address": [None, by_mail["to_address"].upper(), by_phone["to_address"][:4] + " "
                              + by_phone["to_address"][4:]],
                  "reason": [None, "complained", None]}).to_csv(listing, index=False)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert winback(["suppress", "import", str(listing), "--ledger", url]) == 0
    assert winback(["suppress", "import", str(listing), "--ledger", url]) == 0  # idempotent
    assert "0 new" in capsys.readouterr().out.splitlines()[-1]
    with Ledger(url) as ledger:
        sup = ledger.suppressions()
    assert set(sup.loc[sup["customer_id"] == by_id, "channel"]) == {"email", "sms", "webhook", "call_task"}
    assert sup.loc[sup["address"] == by_mail["to_address"].lower(), ["channel", "reason"]].values.tolist() == \
        [["email", "complained"]]
    plan = build_plan(campaign(), customers, segments, as_of=AS_OF, suppressions=sup).set_index("customer_id")
    assert plan.loc[by_id, "arm"] == "excluded" and plan.loc[by_id, "reason"].startswith("suppressed:")
    assert str(plan.loc[by_mail["customer_id"], "channel"]) != "email"  # another channel, or none
    assert str(plan.loc[by_phone["customer_id"], "channel"]) != "sms"
    out = tmp_path / "export.csv"
    assert winback(["suppress", "export", str(out), "--ledger", url]) == 0
    exported = pd.read_csv(out)
    assert len(exported) == 6 and exported["customer_id"].isna().sum() == 2  # the two address-only entries


def test_a_do_not_contact_list_needs_an_id_or_an_address(tmp_path) -> None:
    listing = tmp_path / "dnc.csv"
    pd.DataFrame({"name": ["x"]}).to_csv(listing, index=False)
    assert winback(["suppress", "import", str(listing), "--ledger", f"sqlite:///{tmp_path / 'l.db'}"]) == 1


# -- the coupon-abuse guard -----------------------------------------------------------------------------


def test_coupon_only_buyers_get_no_discount_offer_and_the_reason_is_recorded() -> None:
    guarded = OFFER_CAMPAIGN.model_copy(update={"offer_guard": OFFER_CAMPAIGN.offer_guard.model_copy(
        update={"max_discount_share": 0.8})})
    f = offer_frame(likely_reason=["price", "price", "price"], discount_share=[1.0, 0.5, 1.0], n_orders=[6, 6, 2])
    free = choose_offers(f, OFFER_CAMPAIGN, as_of=OFFER_AS_OF)
    assert free.loc[0, "offer_kind"] in ("percent_off", "amount_off")  # without the guard: a discount
    out = choose_offers(f, guarded, as_of=OFFER_AS_OF)
    assert out.loc[0, "offer_kind"] not in ("percent_off", "amount_off")
    assert out.loc[0, "offer_guard"] == "coupon_abuse: 100% of orders discounted (limit 80%)"
    assert pd.isna(out.loc[1, "offer_guard"]) and pd.isna(out.loc[2, "offer_guard"])  # too few orders to judge
    assert out.loc[1, "offer_kind"] == free.loc[1, "offer_kind"]
