"""Previews: render_previews over a plan frame, and `winback preview` end to end on a small demo world."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from winback.cli import main
from winback.render import Renderer, sample_context
from winback.render.preview import render_previews

REPO = Path(__file__).resolve().parents[1]


def _plan() -> pd.DataFrame:
    rows = []
    for i, (arm, channel, template, locale) in enumerate([
        ("treatment", "email", "percent_off", "zh-CN"),
        ("treatment", "email", "percent_off", "zh-TW"),   # falls back to zh-CN: same preview group
        ("treatment", "sms", "percent_off", "zh-CN"),
        ("treatment", "email", "reminder", "en-US"),
        ("treatment", "call_task", "call_task", "en-US"),
        ("holdout", "email", "amount_off", "en-US"),     # never previewed: not contacted
        ("excluded", None, None, "en-US"),
        ("treatment", "sms", "missing_template", "en-US"),
    ]):
        ctx = sample_context(locale if locale != "zh-TW" else "zh-CN",
                             template if template not in (None, "call_task", "missing_template") else None)
        ctx["customer"]["customer_id"] = f"C{i:03d}"
        rows.append({"campaign_id": "c1", "customer_id": f"C{i:03d}", "arm": arm, "channel": channel,
                     "template": template, "locale": locale, "context": json.dumps(ctx, ensure_ascii=False)})
    return pd.DataFrame(rows)


def test_render_previews_writes_one_file_set_per_group(tmp_path):
    frame = render_previews(_plan(), Renderer(REPO / "templates", max_sms_segments=1), tmp_path)
    keys = list(zip(frame["template"], frame["channel"], frame["locale"], strict=True))
    assert keys == [("call_task", "call_task", "en-US"), ("missing_template", "sms", ""),
                    ("percent_off", "email", "zh-CN"), ("percent_off", "sms", "zh-CN"),
                    ("reminder", "email", "en-US")]
    zh = frame.set_index(["template", "channel"]).loc[("percent_off", "email")]
    assert zh["customer_id"] == "C000" and zh["n_customers"] == 2 and zh["customer_locales"] == "zh-CN, zh-TW"
    html = (tmp_path / "percent_off.zh-CN.email.html").read_text(encoding="utf-8")
    assert "8.5折" in html and "https://preview.invalid/unsubscribe/c1.C000" in html
    txt = (tmp_path / "percent_off.zh-CN.email.txt").read_text(encoding="utf-8")
    assert txt.startswith("Subject: 王芳，")
    sms = frame.set_index(["template", "channel"]).loc[("percent_off", "sms")]
    assert sms["sms_segments"] == 2 and sms["sms_encoding"] == "UCS-2"
    assert "SMS is 2 segments (max 1)" in sms["warnings"]
    assert "not found" in frame.set_index("template").loc["missing_template", "error"]
    assert "amount_off" not in set(frame["template"])
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'href="percent_off.zh-CN.email.html"' in index and "call_task.en-US.call_task.txt" in index


def test_render_previews_names_missing_plan_columns(tmp_path):
    with pytest.raises(Exception, match="context"):
        render_previews(_plan().drop(columns=["context"]), Renderer(REPO / "templates"), tmp_path)


def test_preview_cli_on_a_demo_world(tmp_path, capsys, monkeypatch):
    world = tmp_path / "world"
    assert main(["demo-data", "--out", str(world), "--customers", "400", "--as-of", "2026-11-23"]) == 0
    monkeypatch.setenv("WINBACK_UNSUBSCRIBE_SECRET", "preview-test-secret")
    monkeypatch.setenv("WINBACK_PUBLIC_URL", "https://crm.example.com")
    out = tmp_path / "previews"
    code = main(["preview", str(REPO / "campaigns" / "cn_retail_winback.yaml"), "--world", str(world),
                 "--as-of", "2026-11-23", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Wrote" in printed and (out / "index.html").is_file()
    htmls = sorted(out.glob("*.email.html"))
    assert htmls, list(out.iterdir())
    body = htmls[0].read_text(encoding="utf-8")
    assert "https://crm.example.com/unsubscribe/" in body and "preview-test-secret" not in body
    # the link carries a token the events server can verify
    from winback.render import verify_unsubscribe_token

    token = body.split("https://crm.example.com/unsubscribe/")[1].split('"')[0]
    campaign_id, _customer, channel = verify_unsubscribe_token(token, "preview-test-secret")
    assert channel == "email" and campaign_id


def test_preview_cli_bad_input_is_an_error_not_a_traceback(tmp_path, capsys):
    code = main(["preview", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code != 0 and "Error:" in err and "Traceback" not in err
