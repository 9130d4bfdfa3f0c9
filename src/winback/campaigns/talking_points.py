"""Call-task fields for the account manager: the customer's history in one line and a talking point.

Written in the customer's language (Chinese for zh-*, English otherwise), because the manager calls in it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from winback.campaigns.model import Campaign

REASON_LABEL = {
    "zh": {"service": "服务问题（投诉未解决）", "price": "价格敏感", "manager_left": "原客户经理离职",
           "competitor": "可能转向竞品", "forgotten": "渐渐淡忘", "none": "无明显原因"},
    "en": {"service": "service (unresolved complaint)", "price": "price-sensitive", "manager_left":
           "their account manager left", "competitor": "buying elsewhere", "forgotten": "drifting away",
           "none": "no clear signal"},
}

TALKING_POINT = {
    "zh": {
        "service": "先为上次的问题真诚致歉，确认投诉是否已彻底解决，听取意见后再邀请回来。",
        "price": "了解预算和价格顾虑，说明会员专属价格与优惠。",
        "manager_left": "介绍自己是新的客户经理，回顾过往合作，询问近期需求。",
        "competitor": "了解{category}的需求有何变化，介绍新品和我们的服务优势。",
        "forgotten": "问候近况，提醒会员权益，分享近期新品。",
        "none": "例行回访，感谢长期支持，询问有什么可以帮忙。",
    },
    "en": {
        "service": "Apologise sincerely for the last experience, confirm the complaint is fully resolved, "
                   "listen, then invite them back.",
        "price": "Ask about budget and price concerns; explain member pricing and offers.",
        "manager_left": "Introduce yourself as their new account manager, recap the relationship, ask about "
                        "current needs.",
        "competitor": "Ask what changed in their {category} needs; present what is new and where we do better.",
        "forgotten": "Check in personally, remind them of member benefits, share what is new.",
        "none": "Routine check-in: thank them for their loyalty and ask how we can help.",
    },
}
OFFER_SUFFIX = {"zh": "可提供：{title}（券码 {code}）。", "en": "You can offer: {title} (code {code})."}
OFFER_SUFFIX_NO_CODE = {"zh": "可提供：{title}。", "en": "You can offer: {title}."}
KIND_LABEL = {
    "zh": {"percent_off": "专属折扣", "amount_off": "满减券", "bonus_points": "额外积分", "free_shipping": "免运费",
           "birthday_gift": "生日礼", "service_recovery": "服务回访与满意度调查", "reminder": "问候"},
    "en": {"percent_off": "a personal discount", "amount_off": "an amount-off voucher", "bonus_points":
           "bonus points", "free_shipping": "free shipping", "birthday_gift": "a birthday gift",
           "service_recovery": "a service follow-up and satisfaction survey", "reminder": "a check-in"},
}


def _lang(locale: object) -> str:
    return "zh" if isinstance(locale, str) and locale.lower().startswith("zh") else "en"


@lru_cache(maxsize=8)
def _babel_locale(lang: str):
    from babel import Locale

    return Locale.parse("zh_CN" if lang == "zh" else "en_US")


def _money(amount: float, currency: str, lang: str) -> str:
    try:
        from babel.numbers import format_currency

        return format_currency(amount, currency, locale=_babel_locale(lang))
    except Exception:  # an unknown currency code must not stop a call list
        return f"{amount:,.2f} {currency}"


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as plain dicts of the given columns (absent ones → None); much faster than iterrows."""
    data = {c: (frame[c].tolist() if c in frame.columns else [None] * len(frame)) for c in columns}
    return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)] \
        if len(frame) else []


def call_history_line(frame: pd.DataFrame, campaign: Campaign, *, as_of: pd.Timestamp) -> list[str]:
    """One line per row: last order (and how long ago), total spend, orders, likely reason, open complaint."""
    out: list[str] = []
    currency = campaign.brand.currency
    last = pd.to_datetime(frame["last_order_at"], utc=True) if "last_order_at" in frame else \
        pd.Series(pd.NaT, index=frame.index)
    rows = _records(frame, ["locale", "total_spend", "n_orders", "likely_reason", "complaint_open"])
    for i, row in enumerate(rows):
        lang = _lang(row.get("locale"))
        ts = last.iloc[i]
        spend = row.get("total_spend")
        orders = row.get("n_orders")
        reason = REASON_LABEL[lang].get(str(row.get("likely_reason")), str(row.get("likely_reason")))
        flag = row.get("complaint_open")
        complaint = bool(flag) if flag is not None and not pd.isna(flag) else False
        days = None if pd.isna(ts) else int((as_of - ts).total_seconds() // 86400)
        if lang == "zh":
            parts = ["从未下单" if days is None else f"上次下单 {ts:%Y-%m-%d}（{days} 天前）"]
            if pd.notna(spend):
                parts.append(f"累计消费 {_money(float(spend), currency, lang)}")
            if pd.notna(orders):
                parts.append(f"共 {int(orders)} 单")
            parts.append(f"可能原因：{reason}")
            if complaint:
                parts.append("有未解决的投诉")
        else:
            parts = ["never ordered" if days is None else f"last order {ts:%Y-%m-%d} ({days} days ago)"]
            if pd.notna(spend):
                parts.append(f"spent {_money(float(spend), currency, lang)}")
            if pd.notna(orders):
                parts.append(f"{int(orders)} orders")
            parts.append(f"likely reason: {reason}")
            if complaint:
                parts.append("open complaint")
        out.append(" · ".join(parts))
    return out


def talking_point(frame: pd.DataFrame, campaign: Campaign) -> list[str]:
    """A suggested opening for the call by likely reason, plus the offer and code the manager may give."""
    from winback.campaigns.plan import _title

    offers = {o.id: o for o in campaign.offers}
    out: list[str] = []
    for row in _records(frame, ["locale", "top_category", "likely_reason", "offer", "coupon_code"]):
        lang = _lang(row.get("locale"))
        category = row.get("top_category")
        category = category if isinstance(category, str) and category else ("常购品类" if lang == "zh" else "usual")
        text = TALKING_POINT[lang].get(str(row.get("likely_reason")), TALKING_POINT[lang]["none"])
        text = text.format(category=category)
        offer = offers.get(row.get("offer")) if isinstance(row.get("offer"), str) else None
        if offer is not None and offer.kind != "reminder":
            title = _title(offer.title, str(row.get("locale") or ""), campaign.locale_fallback) \
                or KIND_LABEL[lang].get(offer.kind, offer.id)
            code = row.get("coupon_code")
            if isinstance(code, str):
                suffix = OFFER_SUFFIX[lang].format(title=title, code=code)
            else:
                suffix = OFFER_SUFFIX_NO_CODE[lang].format(title=title)
            text = f"{text} {suffix}"
        out.append(text)
    return out
