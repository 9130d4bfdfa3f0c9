"""Offers: the catalog (eligibility, priors, cost model), choice by expected net value, budget, coupon codes."""

from winback.offers.choice import apply_budget, choose_offers, offer_figures
from winback.offers.coupons import ALPHABET, check_unique_codes, generate_coupon_codes
from winback.offers.learning import Learner, NullLearner, PriorLearner

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
