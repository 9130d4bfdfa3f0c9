"""The `category_name` filter: category codes printed as customers read them in Chinese templates."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from winback.demo.names import CATEGORIES
from winback.render import Renderer, category_name, sample_context
from winback.vocab import OFFER_KINDS

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def test_every_demo_category_has_a_chinese_name():
    for code, _ in CATEGORIES:
        for locale in ("zh-CN", "zh-SG", "zh-TW", "zh-HK", "zh-Hant-TW"):
            name = category_name(code, locale)
            assert name != code and all("\u4e00" <= ch <= "\u9fff" or ch.isascii() for ch in name), (code, locale)
    simplified = {category_name(code, "zh-CN") for code, _ in CATEGORIES}
    assert len(simplified) == len(CATEGORIES)  # no two categories read the same


def test_category_name_values():
    assert category_name("books", "zh-CN") == "图书"
    assert category_name(" Beauty ", "zh_cn") == "美妆"
    assert category_name("books", "zh-TW") == "書籍"
    assert category_name("books", "zh-Hans-HK") == "图书"  # explicit script wins over the region
    assert category_name("books", "en-US") == "books"  # no table: the raw value
    assert category_name("茶具", "zh-CN") == "茶具"  # already written for customers
    assert category_name("garden-tools", "zh-CN") == "garden-tools"  # unknown: the raw value
    for missing in (None, float("nan"), pd.NA, "", "  "):
        assert category_name(missing, "zh-CN") == ""
    assert category_name(3, "zh-CN") == "3"  # a numeric code prints as text


def test_zh_cn_templates_print_the_chinese_category(renderer: Renderer):
    seen = 0
    for template in renderer.templates():
        kind = template if template in OFFER_KINDS else None
        for channel in renderer.channels(template, "zh-CN"):
            ctx = sample_context("zh-CN", kind)
            ctx["history"]["top_category"] = "books"
            msg = renderer.render(template, channel, "zh-CN", ctx, unsubscribe_url="https://crm.example.com/u/T")
            body = "\n".join(x for x in (msg.subject, msg.html, msg.text) if x)
            assert "books" not in body, (template, channel, body)
            seen += "图书" in body
            ctx["history"]["top_category"] = None
            sparse = renderer.render(template, channel, "zh-CN", ctx, unsubscribe_url="https://crm.example.com/u/T")
            assert "None" not in sparse.text
    assert seen >= 15  # most emails, SMS and call briefings mention the category


def test_en_us_templates_keep_the_category_text(renderer: Renderer):
    ctx = sample_context("en-US", "percent_off")
    ctx["history"]["top_category"] = "books"
    msg = renderer.render("percent_off", "call_task", "en-US", ctx)
    assert "books" in msg.text
