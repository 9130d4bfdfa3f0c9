"""The stage × tier summary of a segmentation, as a frame and as a rich table."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from winback.vocab import LAPSE_STAGES, VALUE_TIERS


def segment_summary(segments: pd.DataFrame) -> pd.DataFrame:
    """Customer counts per lapse stage (rows, in LAPSE_STAGES order) × value tier (columns), with totals."""
    table = pd.crosstab(
        pd.Categorical(segments["lapse_stage"], categories=LAPSE_STAGES),
        pd.Categorical(segments["value_tier"], categories=VALUE_TIERS),
        dropna=False,
    )
    table = table.reindex(index=list(LAPSE_STAGES), columns=list(VALUE_TIERS), fill_value=0).astype("int64")
    table.index.name = "lapse_stage"
    table.columns.name = "value_tier"
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    return table


def render_segment_summary(segments: pd.DataFrame, *, title: str = "Customers by lapse stage × value tier") -> Table:
    """A rich Table of `segment_summary`, plus the CLV at stake, the likely reasons of slipping customers
    and the purchase model used (with why, from `segments.attrs["purchase_model"]`)."""
    counts = segment_summary(segments)
    clv = segments.groupby("lapse_stage", observed=True)["clv"].sum() if "clv" in segments else pd.Series()
    table = Table(title=title, show_footer=False)
    table.add_column("stage")
    for tier in VALUE_TIERS:
        table.add_column(tier, justify="right")
    table.add_column("total", justify="right", style="bold")
    table.add_column("CLV", justify="right")
    for stage in counts.index:
        row = counts.loc[stage]
        value = clv.sum() if stage == "total" else clv.get(stage, 0.0)
        table.add_row(
            stage, *(f"{int(row[t]):,}" for t in VALUE_TIERS), f"{int(row['total']):,}", f"{value:,.0f}",
            style="bold" if stage == "total" else None, end_section=stage == LAPSE_STAGES[-1],
        )
    captions = []
    if "likely_reason" in segments:
        reasons = segments.loc[segments["likely_reason"] != "none", "likely_reason"].value_counts()
        if len(reasons):
            captions.append("likely reasons (slipping): " + ", ".join(f"{k} {v:,}" for k, v in reasons.items()))
    chosen = segments.attrs.get("purchase_model")
    if chosen:
        captions.append(f"P(alive) and CLV from {chosen.get('label', chosen.get('model'))}: {chosen.get('reason', '')}")
    if captions:
        table.caption = "\n".join(captions)
    return table
