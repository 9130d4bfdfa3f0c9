"""Lapse segmentation: RFM, own rhythm and overdue ratio, BG/NBD, MBG/NBD or Pareto/NBD + Gamma-Gamma, value tiers, stages, reasons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "MODEL_NAMES",
    "SEGMENT_COLUMNS",
    "BgNbdParams",
    "CustomerModels",
    "GammaGammaParams",
    "HoldoutCheck",
    "MbgNbdParams",
    "ModelChoice",
    "ParetoNbdParams",
    "SegmentParams",
    "bgnbd_conditional_expected_purchases",
    "bgnbd_p_alive",
    "check_holdout",
    "choose_model",
    "fit_bgnbd",
    "fit_customer_models",
    "fit_gamma_gamma",
    "fit_mbgnbd",
    "fit_pareto_nbd",
    "fit_purchase_model",
    "gamma_gamma_expected_value",
    "holdout_summary",
    "purchase_expected",
    "purchase_p_alive",
    "render_segment_summary",
    "rfm_summary",
    "segment_customers",
    "segment_summary",
]

if TYPE_CHECKING:
    from winback.segments.core import (
        SEGMENT_COLUMNS,
        CustomerModels,
        SegmentParams,
        fit_customer_models,
        segment_customers,
    )
    from winback.segments.model_check import (
        MODEL_NAMES,
        HoldoutCheck,
        ModelChoice,
        check_holdout,
        choose_model,
        fit_purchase_model,
        purchase_expected,
        purchase_p_alive,
    )
    from winback.segments.models import (
        BgNbdParams,
        GammaGammaParams,
        MbgNbdParams,
        bgnbd_conditional_expected_purchases,
        bgnbd_p_alive,
        fit_bgnbd,
        fit_gamma_gamma,
        fit_mbgnbd,
        gamma_gamma_expected_value,
        holdout_summary,
        rfm_summary,
    )
    from winback.segments.pareto_nbd import ParetoNbdParams, fit_pareto_nbd
    from winback.segments.summary import render_segment_summary, segment_summary

_HOME = {
    "SEGMENT_COLUMNS": "core",
    "CustomerModels": "core",
    "SegmentParams": "core",
    "fit_customer_models": "core",
    "segment_customers": "core",
    "BgNbdParams": "models",
    "GammaGammaParams": "models",
    "bgnbd_conditional_expected_purchases": "models",
    "bgnbd_p_alive": "models",
    "fit_bgnbd": "models",
    "fit_gamma_gamma": "models",
    "gamma_gamma_expected_value": "models",
    "rfm_summary": "models",
    "MbgNbdParams": "models",
    "fit_mbgnbd": "models",
    "holdout_summary": "models",
    "ParetoNbdParams": "pareto_nbd",
    "fit_pareto_nbd": "pareto_nbd",
    "MODEL_NAMES": "model_check",
    "HoldoutCheck": "model_check",
    "ModelChoice": "model_check",
    "check_holdout": "model_check",
    "choose_model": "model_check",
    "fit_purchase_model": "model_check",
    "purchase_expected": "model_check",
    "purchase_p_alive": "model_check",
    "render_segment_summary": "summary",
    "segment_summary": "summary",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.segments.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.segments' has no attribute {name!r}")
