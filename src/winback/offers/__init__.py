"""Offers: the catalog (eligibility, priors, cost model), choice by expected net value, budget, coupon codes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ALPHABET",
    "Learner",
    "NullLearner",
    "PriorLearner",
    "apply_budget",
    "check_unique_codes",
    "choose_offers",
    "generate_coupon_codes",
    "offer_figures",
]

if TYPE_CHECKING:
    from winback.offers.choice import apply_budget, choose_offers, offer_figures
    from winback.offers.coupons import ALPHABET, check_unique_codes, generate_coupon_codes
    from winback.offers.learning import Learner, NullLearner, PriorLearner

_HOME = {
    "apply_budget": "choice",
    "choose_offers": "choice",
    "offer_figures": "choice",
    "ALPHABET": "coupons",
    "check_unique_codes": "coupons",
    "generate_coupon_codes": "coupons",
    "Learner": "learning",
    "NullLearner": "learning",
    "PriorLearner": "learning",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.offers.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.offers' has no attribute {name!r}")
