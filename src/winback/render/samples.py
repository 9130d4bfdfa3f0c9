"""Sample render contexts built from the context contract (docs/CONTRACTS.md), for validation and previews.

`validate` renders every template with these: the complete context (every field the contract
promises, filled in) and a sparse one (every optional field empty, a later cadence step), so a
template that reads a variable the contract does not provide, or forgets that a name or an expiry
date may be missing, fails at `winback validate` time instead of at send time.
"""

from __future__ import annotations

from typing import Any

from winback.vocab import OFFER_KINDS

CUSTOMER_FIELDS = ("customer_id", "first_name", "last_name", "locale", "timezone", "birthday",
                   "account_manager")
OFFER_FIELDS = ("id", "kind", "title", "percent", "amount", "min_spend", "points", "expires_at", "currency")
HISTORY_FIELDS = ("last_order_at", "days_since_last_order", "total_spend", "orders", "top_category")
BRAND_FIELDS = ("name", "url", "currency", "support_phone")
CONTEXT_FIELDS = ("customer", "offer", "coupon_code", "history", "brand", "survey_url", "step")

# Which value fields an offer of each kind always carries; the others may be null in a real plan.
OFFER_VALUE_FIELDS: dict[str, tuple[str, ...]] = {
    "reminder": (),
    "percent_off": ("percent",),
    "amount_off": ("amount",),
    "bonus_points": ("points",),
    "free_shipping": (),
    "birthday_gift": (),
    "service_recovery": (),
}
_OPTIONAL_OFFER_FIELDS = ("percent", "amount", "min_spend", "points", "expires_at")

_PEOPLE = {
    "zh": {"first_name": "芳", "last_name": "王", "account_manager": "李娜", "timezone": "Asia/Shanghai",
           "top_category": "茶具", "brand": "山茶生活", "title": "会员专属礼遇", "phone": "400-820-8820"},
    "en": {"first_name": "Emma", "last_name": "Johnson", "account_manager": "Daniel Brooks",
           "timezone": "America/New_York", "top_category": "Kitchen", "brand": "Harbor & Pine",
           "title": "A thank-you offer for you", "phone": "(800) 555-0142"},
}


def sample_context(locale: str, offer_kind: str | None = "percent_off", *, sparse: bool = False,
                   currency: str | None = None, extra_customer_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """A render context with every contract field; `sparse=True` empties the optional ones.

    `offer_kind=None` gives `offer: null` (a reminder or a call without an incentive).
    `extra_customer_fields` adds extra customer columns a campaign's data is known to carry.
    """
    zh = locale.lower().startswith("zh")
    people = _PEOPLE["zh" if zh else "en"]
    currency = currency or ("CNY" if zh else "USD")
    customer: dict[str, Any] = {
        "customer_id": "C000123",
        "first_name": None if sparse else people["first_name"],
        "last_name": None if sparse else people["last_name"],
        "locale": locale,
        "timezone": people["timezone"],
        "birthday": None if sparse else "1988-11-30",
        "account_manager": None if sparse else people["account_manager"],
    }
    for name in extra_customer_fields:
        customer.setdefault(name, f"sample {name}")
    offer: dict[str, Any] | None = None
    if offer_kind is not None:
        kind = offer_kind if offer_kind in OFFER_KINDS else "percent_off"
        offer = {
            "id": f"{kind}-sample",
            "kind": kind,
            "title": people["title"],
            "percent": 15,
            "amount": 50.0,
            "min_spend": 299.0,
            "points": 500,
            "expires_at": "2026-12-07",
            "currency": currency,
        }
        if sparse:
            keep = OFFER_VALUE_FIELDS.get(offer_kind, ("percent", "amount", "points"))
            for name in _OPTIONAL_OFFER_FIELDS:
                if name not in keep:
                    offer[name] = None
    return {
        "customer": customer,
        "offer": offer,
        "coupon_code": None if sparse or offer is None or offer["kind"] == "reminder" else "WB7KX9QF2M",
        "history": {
            "last_order_at": None if sparse else "2026-06-14T10:32:00+00:00",
            "days_since_last_order": None if sparse else 162,
            "total_spend": 0.0 if sparse else 4280.5,
            "orders": 0 if sparse else 11,
            "top_category": None if sparse else people["top_category"],
        },
        "brand": {
            "name": people["brand"],
            "url": "https://shop.example.com",
            "currency": currency,
            "support_phone": None if sparse else people["phone"],
        },
        "survey_url": None if sparse else "https://shop.example.com/survey/s/7f3a",
        "step": 3 if sparse else 1,
    }
