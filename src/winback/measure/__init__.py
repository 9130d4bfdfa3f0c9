"""Measurement and learning: attribution, uplift with confidence intervals, ROI, power, plots, feedback.

Pure core: `measure_campaign` (campaign.py), `stats`, `power`, `uplift_table`, the learner
(learning.py). Edges: `measure_from_ledger` (run.py) and the artifacts (report.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "MeasureResult",
    "MeasureRun",
    "measure_campaign",
    "measure_from_ledger",
    "min_detectable_effect",
    "required_sample_size",
]

if TYPE_CHECKING:
    from winback.measure.campaign import MeasureResult, measure_campaign
    from winback.measure.power import min_detectable_effect, required_sample_size
    from winback.measure.run import MeasureRun, measure_from_ledger

_HOME = {
    "MeasureResult": "campaign",
    "measure_campaign": "campaign",
    "min_detectable_effect": "power",
    "required_sample_size": "power",
    "MeasureRun": "run",
    "measure_from_ledger": "run",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.measure.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.measure' has no attribute {name!r}")
