"""Rendering: formatting, SMS segments, unsubscribe tokens, the sandboxed Renderer and the shipped templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from babel.numbers import format_currency
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.errors import ConfigError, DataError
from winback.render import (
    InvalidUnsubscribeToken,
    Renderer,
    RenderError,
    format_date,
    make_unsubscribe_token,
    money,
    percent,
    sample_context,
    sms_segments,
    unsubscribe_url,
    verify_unsubscribe_token,
    zhe,
)
from winback.vocab import OFFER_KINDS

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
URL = "https://crm.example.com/unsubscribe/TOKEN"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


# ----- formatting ------------------------------------------------------------------------------------
def test_money_formats_per_locale():
    assert money(1280, "CNY", "zh-CN") == "¥1,280.00"
    assert money(1280, "USD", "en-US") == "$1,280.00"
    assert money(1280, "CNY", "en-US") == "CN¥1,280.00"
    assert money(2.675, "USD", "en-US") == "$2.68"  # rounds the decimal a person reads, like babel
    assert money(1280, "EUR", "de-DE") == "1.280,00\xa0€"
    assert money(1234567.891, "USD", "en-IN") == "$12,34,567.89"  # Indian grouping goes through babel


@settings(max_examples=200, deadline=None)
@given(amount=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
       locale=st.sampled_from(["zh-CN", "en-US", "de-DE", "fr-FR", "ja-JP", "pt-BR", "zh-Hant-TW"]),
       currency=st.sampled_from(["CNY", "USD", "EUR", "JPY", "KWD"]))
def test_money_matches_babel(amount, locale, currency):
    assert money(amount, currency, locale) == format_currency(amount, currency, locale=locale.replace("-", "_"))


def test_dates_and_percent():
    assert format_date("2026-11-23", "zh-CN") == "2026年11月23日"
    assert format_date("2026-11-23T10:00:00+00:00", "en-US") == "November 23, 2026"
    assert format_date("2026-11-23", "en-US", "MMM d") == "Nov 23"
    assert percent(0.15, "en-US") == "15%"
    assert percent(0.125, "zh-CN") == "12.5%"
    assert (zhe(15), zhe(20), zhe(12)) == ("8.5折", "8折", "8.8折")


def test_bad_formatting_input_is_a_config_error():
    with pytest.raises(ConfigError, match="currency"):
        money(1, "yuan", "zh-CN")
    with pytest.raises(ConfigError, match="locale"):
        money(1, "CNY", "xx-??")
    with pytest.raises(ConfigError, match="date"):
        format_date("someday", "en-US")


# ----- SMS segments -----------------------------------------------------------------------------------
def test_sms_segments_gsm7():
    assert sms_segments("a" * 160) == (1, "GSM-7")
    assert sms_segments("a" * 161) == (2, "GSM-7")
    assert sms_segments("a" * 306) == (2, "GSM-7")
    assert sms_segments("a" * 307) == (3, "GSM-7")
    assert sms_segments("") == (0, "GSM-7")
    assert sms_segments("Price: ¥50 @ shop") == (1, "GSM-7")  # ¥ and @ are in the GSM basic set


def test_sms_segments_extension_chars_count_two():
    assert sms_segments("€" * 80) == (1, "GSM-7")
    assert sms_segments("€" * 81) == (2, "GSM-7")
    assert sms_segments("a" * 159 + "{") == (2, "GSM-7")
    # 306 septets would fit two parts, but the escape pair cannot straddle the boundary
    assert sms_segments("a" * 152 + "€" + "a" * 152) == (3, "GSM-7")


def test_sms_segments_ucs2():
    assert sms_segments("a" * 69 + "中") == (1, "UCS-2")
    assert sms_segments("中" * 70) == (1, "UCS-2")
    assert sms_segments("中" * 71) == (2, "UCS-2")
    assert sms_segments("中" * 134) == (2, "UCS-2")
    assert sms_segments("中" * 135) == (3, "UCS-2")
    assert sms_segments("It’s") == (1, "UCS-2")  # a curly apostrophe leaves GSM-7


def test_sms_segments_emoji_count_two_units():
    assert sms_segments("😀" * 35) == (1, "UCS-2")
    assert sms_segments("😀" * 36) == (2, "UCS-2")
    assert sms_segments("中" * 66 + "😀" + "中" * 66) == (3, "UCS-2")  # surrogate pair not split


# ----- unsubscribe tokens -----------------------------------------------------------------------------
def test_token_round_trip_and_url():
    token = make_unsubscribe_token("cn-2026w", "C00012", "email", "s3cret")
    assert verify_unsubscribe_token(token, "s3cret") == ("cn-2026w", "C00012", "email")
    assert all(c.isalnum() or c in "-_." for c in token)
    assert unsubscribe_url("https://crm.example.com/", token) == f"https://crm.example.com/unsubscribe/{token}"
    unicode_token = make_unsubscribe_token("春季", "客户-1", "sms", b"k")
    assert verify_unsubscribe_token(unicode_token, b"k") == ("春季", "客户-1", "sms")


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature altered
    lambda t: make_unsubscribe_token("cn-2026w", "C00099", "email", "s3cret").split(".")[0] + "." + t.split(".")[1],
    lambda t: t.replace(".", ""),
    lambda t: "",
    lambda t: t + ".x",
    lambda t: "ü" + t,
])
def test_token_forgery_and_garbage_rejected(mutate):
    token = make_unsubscribe_token("cn-2026w", "C00012", "email", "s3cret")
    with pytest.raises(InvalidUnsubscribeToken):
        verify_unsubscribe_token(mutate(token), "s3cret")
    assert issubclass(InvalidUnsubscribeToken, DataError)


def test_token_with_another_secret_rejected_and_empty_secret_refused():
    token = make_unsubscribe_token("c", "1", "sms", "one")
    with pytest.raises(InvalidUnsubscribeToken):
        verify_unsubscribe_token(token, "two")
    with pytest.raises(ConfigError):
        make_unsubscribe_token("c", "1", "sms", "")
    with pytest.raises(ConfigError):
        make_unsubscribe_token("c", "1", "fax", "k")
    with pytest.raises(ConfigError):
        unsubscribe_url("crm.example.com", token)


# ----- the shipped templates ---------------------------------------------------------------------------
def test_every_offer_kind_has_a_template_in_both_locales(renderer):
    names = renderer.templates()
    for kind in (*OFFER_KINDS, "call_task"):
        assert kind in names
        assert {"zh-CN", "en-US"} <= set(renderer.inventory(kind))


@pytest.mark.parametrize("template", [*OFFER_KINDS, "call_task"])
def test_shipped_templates_validate_clean(renderer, template):
    assert renderer.validate(template) == []


@pytest.mark.parametrize("template", list(OFFER_KINDS))
@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
@pytest.mark.parametrize("sparse", [False, True])
def test_every_template_renders_every_channel(renderer, template, locale, sparse):
    ctx = sample_context(locale, template, sparse=sparse)
    email = renderer.render(template, "email", locale, ctx, unsubscribe_url=URL)
    assert email.locale == locale and email.subject and "\n" not in email.subject
    assert URL in email.html and URL in email.text
    assert email.html.lstrip().startswith("<!DOCTYPE html>") and f'lang="{locale}"' in email.html
    assert email.subject.upper() != email.subject or not any(c.isalpha() and c.isascii() for c in email.subject)
    sms = renderer.render(template, "sms", locale, ctx)
    assert 1 <= sms.sms_segments <= 3
    assert ("回T退订" if locale == "zh-CN" else "Reply STOP to opt out") in sms.text
    if locale == "zh-CN":
        assert sms.text.startswith(f"【{ctx['brand']['name']}】") and sms.sms_encoding == "UCS-2"
    else:
        assert sms.sms_encoding == "GSM-7"  # no curly quotes or dashes sneaked into the English SMS
    call = renderer.render(template, "call_task", locale, ctx)
    assert ctx["customer"]["customer_id"] in call.text
    if ctx["coupon_code"]:
        assert ctx["coupon_code"] in email.html and ctx["coupon_code"] in sms.text


def test_rendered_values_are_formatted_per_locale(renderer):
    zh = renderer.render("amount_off", "email", "zh-CN", sample_context("zh-CN", "amount_off"))
    assert "¥50.00" in zh.text and "满¥299.00" in zh.text and "2026年12月7日" in zh.text
    assert zh.subject == "王芳，一张¥50.00专属优惠券已放入您的账户"
    en = renderer.render("percent_off", "email", "en-US", sample_context("en-US", "percent_off"))
    assert en.subject == "Emma, we saved you 15% off your next order"
    assert "December 7, 2026" in en.text and "$299.00" in en.text
    zh_pct = renderer.render("percent_off", "sms", "zh-CN", sample_context("zh-CN", "percent_off"))
    assert "8.5折" in zh_pct.text and "12月7日" in zh_pct.text


def test_context_as_json_string_and_call_talking_point(renderer):
    ctx = sample_context("zh-CN", None)
    ctx["call"] = {"history": "…", "talking_point": "先问问上次的茶具是否满意"}
    msg = renderer.render("call_task", "call_task", "zh-CN", json.dumps(ctx, ensure_ascii=False))
    assert "建议切入点：先问问上次的茶具是否满意" in msg.text and msg.subject is None


# ----- escaping, headers, fallback ----------------------------------------------------------------------
def test_html_is_autoescaped_text_is_not(renderer):
    ctx = sample_context("en-US", "percent_off")
    ctx["customer"]["first_name"] = "<script>alert(1)</script>"
    msg = renderer.render("percent_off", "email", "en-US", ctx, unsubscribe_url=URL)
    assert "<script>" not in msg.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in msg.html
    assert "Hi <script>alert(1)</script>," in msg.text
    assert "<script>" in msg.subject  # a subject is plain text; the mail library encodes the header
    zh = sample_context("zh-CN", "birthday_gift")
    zh["customer"]["last_name"] = "<b>王</b>"
    html = renderer.render("birthday_gift", "email", "zh-CN", zh).html
    assert "<b>王</b>" not in html and "&lt;b&gt;王&lt;/b&gt;" in html


def test_subject_is_one_line_even_with_newlines_in_data(renderer):
    ctx = sample_context("en-US", "reminder")
    ctx["customer"]["first_name"] = "Emma\r\nBcc: victim@example.com"
    msg = renderer.render("reminder", "email", "en-US", ctx)
    assert "\n" not in msg.subject and "\r" not in msg.subject


def test_list_unsubscribe_headers(renderer):
    ctx = sample_context("en-US", "reminder")
    msg = renderer.render("reminder", "email", "en-US", ctx, unsubscribe_url="https://crm.example.com/unsubscribe/abc.def",
                          unsubscribe_mailto="unsubscribe@shop.example.com")
    assert msg.headers == {
        "List-Unsubscribe": "<https://crm.example.com/unsubscribe/abc.def>, "
                            "<mailto:unsubscribe@shop.example.com?subject=unsubscribe%20abc.def>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert renderer.render("reminder", "email", "en-US", ctx).headers == {}
    assert renderer.render("reminder", "sms", "en-US", ctx, unsubscribe_url=URL).headers == {}
    no_footer_link = renderer.render("reminder", "email", "en-US", ctx)
    assert 'Reply "unsubscribe"' in no_footer_link.text


@pytest.mark.parametrize(("asked", "resolved"), [
    ("zh-CN", "zh-CN"), ("zh_cn", "zh-CN"), ("zh-TW", "zh-CN"), ("zh-Hant-HK", "zh-CN"), ("zh", "zh-CN"),
    ("en-US", "en-US"), ("en-GB", "en-US"), ("fr-FR", "en-US"), (None, "en-US"), ("garbage!", "en-US"),
])
def test_locale_fallback_default(renderer, asked, resolved):
    ctx = sample_context(resolved, "reminder")
    assert renderer.render("reminder", "sms", asked, ctx).locale == resolved


def test_locale_fallback_configurable_and_same_language(tmp_path):
    for loc, text in (("zh-CN", "简体"), ("zh-TW", "繁體"), ("en-GB", "colour"), ("de-DE", "Hallo")):
        (tmp_path / "hello" / loc).mkdir(parents=True)
        (tmp_path / "hello" / loc / "sms.txt").write_text(f"{text} Reply STOP", encoding="utf-8")
    r = Renderer(tmp_path, {"zh-HK": "zh-TW", "zh-*": "zh-CN", "*": "de-DE"})
    assert r.resolve_locale("hello", "sms", "zh-HK") == "zh-TW"
    assert r.resolve_locale("hello", "sms", "zh-SG") == "zh-CN"
    assert r.resolve_locale("hello", "sms", "en-US") == "en-GB"  # same language before the default
    assert r.resolve_locale("hello", "sms", "ja-JP") == "de-DE"
    strict = Renderer(tmp_path, {})
    with pytest.raises(ConfigError, match="no sms files"):
        strict.resolve_locale("hello", "sms", "ja-JP")
    with pytest.raises(ConfigError, match="no email files"):
        r.render("hello", "email", "zh-CN", {})


# ----- validation ---------------------------------------------------------------------------------------
def _write(root: Path, template: str, locale: str, files: dict[str, str]) -> None:
    folder = root / template / locale
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


GOOD_EMAIL = {
    "email.subject": "Hi {{ customer.first_name or 'there' }}",
    "email.html": "<p>{{ brand.name }}</p><a href=\"{{ unsubscribe_url }}\">unsubscribe</a>",
    "email.txt": "{{ brand.name }} {{ unsubscribe_url }}",
}


def test_validate_catches_unknown_variable_not_at_send_time(tmp_path):
    _write(tmp_path, "promo", "en-US", {**GOOD_EMAIL, "sms.txt": "Hi {{ customer.nickname }} Reply STOP"})
    r = Renderer(tmp_path)
    problems = r.validate("promo")
    assert any("sms.txt" not in p and "sms fails" in p and "nickname" in p for p in problems), problems
    with pytest.raises(RenderError, match="nickname"):
        r.render("promo", "sms", "en-US", sample_context("en-US"))
    # a column the campaign's data is known to carry is accepted
    assert r.validate("promo", extra_customer_fields=("nickname",)) == []


def test_validate_catches_unguarded_optional_fields(tmp_path):
    # first_name may be null in real data: upper() on None fails only with the sparse sample
    _write(tmp_path, "promo", "en-US", {**GOOD_EMAIL, "sms.txt": "Hi {{ customer.first_name.upper() }} Reply STOP"})
    problems = Renderer(tmp_path).validate("promo")
    assert any("sparse sample context" in p for p in problems), problems


def test_validate_reports_syntax_missing_parts_unsubscribe_and_long_sms(tmp_path):
    _write(tmp_path, "broken", "en-US", {"email.subject": "x", "email.html": "{% if %}", "email.txt": "t"})
    _write(tmp_path, "partial", "en-US", {"email.subject": "x", "email.txt": "{{ unsubscribe_url }}"})
    _write(tmp_path, "nolink", "en-US", {"email.subject": "x", "email.html": "<p>hi</p>",
                                         "email.txt": "{{ unsubscribe_url }}"})
    _write(tmp_path, "chatty", "zh-CN", {"sms.txt": "【店】" + "您好" * 120 + "回T退订", "notes.md": "x"})
    _write(tmp_path, "chatty", "en-US", {"sms.txt": "Hello there"})
    r = Renderer(tmp_path, max_sms_segments=2)
    broken = r.validate("broken")
    assert any("email.html" in p and "line 1" in p for p in broken), broken
    assert any("email needs email.html" in p for p in r.validate("partial"))
    assert any("email.html" in p and "unsubscribe" in p for p in r.validate("nolink"))
    chatty = r.check("chatty")
    messages = [str(p) for p in chatty]
    assert any("warning: SMS is 4 segments" in m for m in messages), messages
    assert any("notes.md" in m and "warning: unknown file" in m for m in messages)
    assert any("en-US/sms.txt" in m and "opt-out" in m for m in messages)
    assert all(p.severity == "warning" for p in chatty)
    assert r.validate("missing") == [f"{tmp_path.name}/missing: template 'missing' not found"]


def test_sandbox_blocks_unsafe_attribute_access(tmp_path):
    _write(tmp_path, "evil", "en-US", {"sms.txt": "{{ brand.__class__.__mro__ }} Reply STOP"})
    problems = Renderer(tmp_path).validate("evil")
    assert len(problems) == 1 and "SecurityError" in problems[0], problems


def test_render_many_matches_render(renderer):
    rows = [{"template": k, "channel": ch, "locale": loc, "context": json.dumps(sample_context(loc, k)),
             "unsubscribe_url": URL}
            for k in ("percent_off", "reminder") for ch in ("email", "sms") for loc in ("zh-CN", "en-US")]
    many = list(renderer.render_many(rows))
    one = [renderer.render(r["template"], r["channel"], r["locale"], r["context"], unsubscribe_url=URL) for r in rows]
    assert many == one and len(many) == 8
