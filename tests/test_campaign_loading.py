"""Campaign files: the examples load, and every validation error names the file and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from winback.campaigns import load_campaign, parse_campaign
from winback.cli import main
from winback.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = """\
id: spring
name: Spring win-back
offers:
  - {id: hello, kind: reminder, template: reminder}
  - {id: pct15, kind: percent_off, percent: 15, template: percent_off}
  - {id: pct95, kind: percent_off, percent: 95, template: percent_off}
"""


def _error(text: str, tmp_path: Path, name: str = "spring.yaml") -> ConfigError:
    folder = tmp_path / "campaigns"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_campaign(path)
    return info.value


@pytest.mark.parametrize("name", ["cn_retail_winback.yaml", "us_winback.yaml"])
def test_example_campaigns_load(name: str) -> None:
    campaign = load_campaign(REPO / "campaigns" / name)
    assert campaign.offers and campaign.cadence[0].step == 1
    assert {o.kind for o in campaign.offers} >= {"percent_off", "amount_off", "birthday_gift", "service_recovery"}
    sources = campaign.sources.resolved(campaign.base_dir)
    assert sources["customers"].endswith("demo-out/world/customers.parquet")
    assert campaign.templates_path() == (REPO / "templates").resolve()


def test_cn_example_is_zh_first_with_calls_for_platinum() -> None:
    campaign = load_campaign(REPO / "campaigns" / "cn_retail_winback.yaml")
    assert campaign.brand.currency == "CNY" and campaign.policy.default_locale == "zh-CN"
    assert campaign.channels == ["email", "sms"]
    assert campaign.human_followup.rules[0].value_tiers == ["platinum"]
    assert campaign.policy.window("sms").start.hour == 10


def test_error_names_file_and_indexed_field(tmp_path: Path) -> None:
    err = _error(MINIMAL, tmp_path)
    assert str(err).endswith("campaigns/spring.yaml: offers[2].percent: must be between 1 and 90")
    assert err.field == "offers[2].percent"


def test_unknown_field_suggests_the_right_one(tmp_path: Path) -> None:
    err = _error(MINIMAL.replace("percent: 15", "percnt: 15"), tmp_path)
    assert "offers[1].percnt: unknown field; did you mean 'percent'?" in str(err)


def test_kind_specific_required_field(tmp_path: Path) -> None:
    err = _error("id: x\nname: y\noffers: [{id: a, kind: amount_off, template: t}]\n", tmp_path)
    assert "spring.yaml: offers[0].amount: required for amount_off offers" in str(err)


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    err = _error("id: x\nname: [unclosed\noffers: []\n", tmp_path)
    assert "spring.yaml: line" in str(err) and "invalid YAML" in str(err)


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("offers: [{id: a, kind: reminder, template: t}, {id: a, kind: reminder, template: t}]",
         "offers[1].id", "duplicate offer id 'a'"),
        ("offers: [{id: a, kind: reminder, template: t}]\ncadence: [{step: 1, day: 0}, {step: 2, day: 3, channel: webhook}]",
         "cadence[1].channel", "not one of the campaign's channels"),
        ("offers: [{id: a, kind: reminder, template: t}]\ncadence: [{step: 1, day: 0}, {step: 2, day: 3, offer: nope}]",
         "cadence[1].offer", "unknown offer 'nope'"),
        ("offers: [{id: a, kind: reminder, template: t}]\ncadence: [{step: 1, day: 0}, {step: 3, day: 3}]",
         "cadence", "numbered 1, 2, 3"),
        ("offers: [{id: a, kind: reminder, template: t}]\ncadence: [{step: 1, day: 0}, {step: 2, day: 0}]",
         "cadence[1].day", "must be later"),
        ("offers: [{id: a, kind: reminder, template: t}]\nholdout: {share: 1.5}", "holdout.share",
         "must be between 0 and 0.9"),
        ("offers: [{id: a, kind: gift, template: t}]", "offers[0].kind", "'gift' is not allowed"),
        ("offers: [{id: a, kind: reminder, template: t}]\npolicy: {quiet_hours: {sms: {start: '21:00', end: '08:00'}}}",
         "policy.quiet_hours.sms.end", "must be after start"),
        ("offers: [{id: a, kind: reminder, template: t}]\npolicy: {default_timezone: Mars/Base}",
         "policy.default_timezone", "unknown IANA time zone"),
        ("offers: [{id: a, kind: percent_off, percent: 10, template: t}]\npolicy: {negative_value: reminder}",
         "policy.negative_value", "needs an offer of kind reminder"),
        ("offers: [{id: a, kind: reminder, template: t}]\nbrand: {currency: yuan}", "brand.currency", "ISO 4217"),
        ("offers: [{id: a, kind: reminder, template: t, percent: 10}]", "offers[0].percent",
         "only used by percent_off"),
        ("offers: []", "offers", "at least one offer"),
    ],
)
def test_reference_and_range_errors(tmp_path: Path, extra: str, field: str, words: str) -> None:
    err = _error(f"id: x\nname: y\n{extra}\n", tmp_path)
    assert str(err).startswith(str(tmp_path / "campaigns" / "spring.yaml") + f": {field}: "), str(err)
    assert words in str(err)


def test_missing_required_top_level_field(tmp_path: Path) -> None:
    err = _error("id: x\noffers: [{id: a, kind: reminder, template: t}]\n", tmp_path)
    assert "spring.yaml: name: required field is missing" in str(err)


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    assert "must be a YAML mapping" in str(_error("- a\n- b\n", tmp_path))
    with pytest.raises(ConfigError, match="campaign file not found"):
        load_campaign(tmp_path / "nope.yaml")


def test_defaults_are_sensible() -> None:
    campaign = parse_campaign("id: x\nname: y\noffers: [{id: s, kind: service_recovery, template: t, "
                              "survey_url: 'https://s'}]\n")
    assert campaign.holdout.share == 0.10
    assert campaign.offers[0].eligibility.reasons == ["service"]  # service recovery targets complaints
    assert campaign.offers[0].coupon is False
    assert campaign.policy.window("sms").start.hour == 10 and campaign.policy.window("email").end.hour == 21
    assert [s.day for s in campaign.cadence] == [0]


def test_cli_validate_ok_and_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "campaigns" / "cn_retail_winback.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL, encoding="utf-8")
    assert main(["validate", str(bad)]) == 1
    assert "offers[2].percent: must be between 1 and 90" in capsys.readouterr().err


def test_cli_validate_reports_missing_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "templates").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text("id: x\nname: y\noffers: [{id: a, kind: reminder, template: no_such_template}]\n",
                    encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    assert "template 'no_such_template' not found" in capsys.readouterr().err
