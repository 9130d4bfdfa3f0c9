"""Lapse segmentation: RFM, own rhythm and overdue ratio, BG/NBD + Gamma-Gamma, value tiers, stages, reasons."""

from winback.segments.core import (
    SEGMENT_COLUMNS,
    CustomerModels,
    SegmentParams,
    fit_customer_models,
    segment_customers,
)
from winback.segments.models import (
    BgNbdParams,
    GammaGammaParams,
    bgnbd_conditional_expected_purchases,
    bgnbd_p_alive,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
    rfm_summary,
)
from winback.segments.summary import render_segment_summary, segment_summary

__all__ = [
    "SEGMENT_COLUMNS",
    "BgNbdParams",
    "CustomerModels",
    "GammaGammaParams",
    "SegmentParams",
    "bgnbd_conditional_expected_purchases",
    "bgnbd_p_alive",
    "fit_bgnbd",
    "fit_customer_models",
    "fit_gamma_gamma",
    "gamma_gamma_expected_value",
    "render_segment_summary",
    "rfm_summary",
    "segment_customers",
    "segment_summary",
]
