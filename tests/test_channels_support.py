"""Literal plans and a tiny real templates folder for the channel and send tests (no other package's data)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

TEMPLATE_FILES = {
    "winback/en-US/email.subject": "We miss you, {{ customer.first_name }}",
    "winback/en-US/email.html": "<p>Hello {{ customer.first_name }}, use {{ coupon_code }}.</p>"
                                "<p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>",
    "winback/en-US/email.txt": "Hello {{ customer.first_name }}, use {{ coupon_code }}. Unsubscribe: {{ unsubscribe_url }}",
    "winback/en-US/sms.txt": "{{ brand.name }}: {{ customer.first_name }}, code {{ coupon_code }}",
    "winback/en-US/webhook.txt": "{{ customer.first_name }}, code {{ coupon_code }}",
    "winback/en-US/call.txt": "Call {{ customer.first_name }}: offer {{ coupon_code }}",
    "winback/zh-CN/email.subject": "{{ customer.first_name }}，好久不见",
    "winback/zh-CN/email.html": "<p>{{ customer.first_name }}您好，优惠码 {{ coupon_code }}</p>",
    "winback/zh-CN/email.txt": "{{ customer.first_name }}您好，优惠码 {{ coupon_code }}",
    "winback/zh-CN/sms.txt": "【{{ brand.name }}】{{ customer.first_name }}您好，优惠码{{ coupon_code }}",
    "winback/zh-CN/call.txt": "致电{{ customer.first_name }}：优惠码{{ coupon_code }}",
    "broken/en-US/email.subject": "Hi {{ customer.no_such_field }}",
    "broken/en-US/email.html": "<p>x</p>",
    "broken/en-US/email.txt": "x",
}


def write_templates(root: Path) -> Path:
    """Write the tiny templates folder under `root` and return it."""
    for rel, text in TEMPLATE_FILES.items():
        path = root / "templates" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "templates"


def make_plan(n: int, *, campaign_id: str = "spring", channel: str | list[str] = "email",
              send_at: str = "2026-11-20T02:00:00Z", holdout_every: int = 0, template: str = "winback") -> pd.DataFrame:
    """A plan frame shaped like `build_plan`'s output (docs/CONTRACTS.md), n treatment rows."""
    rows = []
    for i in range(n):
        ch = channel if isinstance(channel, str) else channel[i % len(channel)]
        cid = f"C{i:06d}"
        code = f"WB{i:05d}" if campaign_id == "spring" else f"WB-{campaign_id}-{i:05d}"  # unique across campaigns
        locale = "zh-CN" if i % 3 == 0 and ch != "webhook" else "en-US"
        address = {"email": f"{cid.lower()}@example.com", "sms": f"+86138{i:08d}", "webhook": f"openid-{cid}",
                   "call_task": "王经理" if i % 2 else "Alice Smith"}[ch]
        context = {
            "customer": {"customer_id": cid, "first_name": "小明" if locale == "zh-CN" else "Ann", "last_name": "Li",
                         "locale": locale, "timezone": "Asia/Shanghai", "phone": f"+86138{i:08d}"},
            "offer": {"id": "pct15", "kind": "percent_off", "percent": 15},
            "coupon_code": code, "history": {}, "brand": {"name": "Club", "url": "https://shop.example.com",
                                                                 "currency": "CNY"},
            "survey_url": None, "step": 1,
        }
        rows.append({
            "campaign_id": campaign_id, "customer_id": cid, "step": 1,
            "arm": "holdout" if holdout_every and i % holdout_every == 0 else "treatment",
            "reason": "eligible", "channel": ch, "to_address": address,
            "send_at_utc": pd.Timestamp(send_at), "send_at_local": "2026-11-20T10:00:00+08:00",
            "timezone": "Asia/Shanghai", "locale": locale, "offer": "pct15", "offer_kind": "percent_off",
            "expected_cost": 1.0, "expected_net_value": 5.0, "p_return": 0.1, "template": template,
            "coupon_code": code, "value_tier": "gold", "lapse_stage": "lapsed", "likely_reason": "forgotten",
            "account_manager": address if ch == "call_task" else "Alice Smith",
            "context": json.dumps(context, ensure_ascii=False), "as_of": pd.Timestamp("2026-11-19T00:00:00Z"),
        })
    frame = pd.DataFrame(rows)
    frame["send_at_utc"] = pd.to_datetime(frame["send_at_utc"], utc=True)
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    return frame
