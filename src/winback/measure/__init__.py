"""Measurement and learning: attribution, uplift with confidence intervals, ROI, power, plots, feedback.

Pure core: `measure_campaign` (campaign.py), `stats`, `power`, `uplift_table`, the learner
(learning.py). Edges: `measure_from_ledger` (run.py) and the artifacts (report.py).
"""

from __future__ import annotations

from winback.measure.campaign import MeasureResult, measure_campaign
from winback.measure.power import min_detectable_effect, required_sample_size
from winback.measure.run import MeasureRun, measure_from_ledger

__all__ = [
    "MeasureResult",
    "MeasureRun",
    "measure_campaign",
    "measure_from_ledger",
    "min_detectable_effect",
    "required_sample_size",
]
