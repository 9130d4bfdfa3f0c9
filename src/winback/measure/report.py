"""Artifacts of a measurement: the markdown report, the CSV/Parquet tables and the PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from winback.measure.campaign import MeasureResult

DIMENSION_TITLES = {
    "offer": "By offer",
    "value_tier": "By value tier",
    "lapse_stage": "By lapse stage",
    "likely_reason": "By likely reason",
    "channel": "By channel",
    "step": "By cadence step",
}


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.2f}%"


def _pp(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:+.2f} pp"


def _money(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:,.2f}"


def _ratio(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2f}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def render_markdown(result: MeasureResult, *, currency: str = "") -> str:
    """The human report: arms, uplift with CIs, money, breakdowns and the methods used."""
    t, h = result.arms["treatment"], result.arms["holdout"]
    rr, rev = result.uplift["return_rate"], result.uplift["revenue_per_customer"]
    cur = f" {currency}" if currency else ""
    lines = [
        f"# Campaign {result.campaign_id or '(unnamed)'}: measured against the holdout",
        "",
        f"Attribution window: {result.window_days} days after each customer's first contact "
        "(holdout: the time they would have been contacted)"
        + (f"; orders up to {result.as_of.isoformat()}." if result.as_of is not None else "."),
        "Intention to treat: every customer assigned to treatment counts, delivered or not "
        f"(delivery rate {_pct(result.delivery.get('delivery_rate'))}).",
        "",
        "| | Treatment | Holdout |",
        "|---|---:|---:|",
        f"| Customers | {t['n']:,} | {h['n']:,} |",
        f"| Returned (≥ 1 order) | {t['returned']:,} | {h['returned']:,} |",
        f"| Return rate | {_pct(t['return_rate'])} | {_pct(h['return_rate'])} |",
        f"| Orders | {t['orders']:,} | {h['orders']:,} |",
        f"| Revenue{cur} | {_money(t['revenue'])} | {_money(h['revenue'])} |",
        f"| Revenue per customer{cur} | {_money(t['revenue_per_customer'])} | {_money(h['revenue_per_customer'])} |",
        f"| Coupons redeemed | {t['coupons_redeemed']:,} | {h['coupons_redeemed']:,} |",
        f"| Offer cost (realized){cur} | {_money(t['coupon_cost'])} | {_money(h['coupon_cost'])} |",
        f"| Contact cost{cur} | {_money(t['contact_cost'])} | {_money(h['contact_cost'])} |",
        "",
        "## Uplift",
        "",
        "| Measure | Difference | 95% CI | p-value |",
        "|---|---:|---:|---:|",
        f"| Return rate | {_pp(rr['diff'])} | {_pp(rr['ci_low'])} … {_pp(rr['ci_high'])} | {_p(rr['p_value'])} |",
        f"| Revenue per customer{cur} | {_money(rev['diff'])} | {_money(rev['ci_low'])} … {_money(rev['ci_high'])} "
        f"| {_p(rev['p_value'])} |",
        "",
        f"- Incremental returns: {_money(result.incremental_returns['estimate'])} "
        f"(95% CI {_money(result.incremental_returns['ci_low'])} … {_money(result.incremental_returns['ci_high'])})",
        f"- Incremental revenue{cur}: {_money(result.incremental_revenue['estimate'])} "
        f"(95% CI {_money(result.incremental_revenue['ci_low'])} … {_money(result.incremental_revenue['ci_high'])})",
        f"- Incremental gross margin{cur} ({result.gross_margin:.0%} of incremental order value): "
        f"{_money(result.incremental_margin.get('estimate'))} (95% CI {_money(result.incremental_margin.get('ci_low'))}"
        f" … {_money(result.incremental_margin.get('ci_high'))})",
        f"- Offer cost (realized){cur}: {_money(result.offer_cost)}",
        f"- Contact cost{cur}: {_money(result.contact_cost)}",
        f"- Net incremental value{cur}: {_money(result.net_incremental_value)}",
        f"- ROI (net / total cost): {'–' if result.roi is None else f'{result.roi:.2f}'}",
        "",
    ]
    for dim, frame in result.breakdowns.items():
        if frame.empty:
            continue
        lines += [
            f"## {DIMENSION_TITLES.get(dim, dim)}",
            "",
            "| Group | Treated | Holdout | Rate treated | Rate holdout | Uplift | 95% CI | p | p (Holm) "
            f"| Redeemed | Offer cost{cur} | Contact cost{cur} | Margin{cur} | Net value{cur} | ROI |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in frame.to_dict("records"):
            lines.append(
                f"| {r[dim]} | {r['n_treated']:,} | {r['n_holdout']:,} | {_pct(r['return_rate_treated'])} | "
                f"{_pct(r['return_rate_holdout'])} | {_pp(r['uplift'])} | {_pp(r['ci_low'])} … {_pp(r['ci_high'])} | "
                f"{_p(r['p_value'])} | {_p(r['p_holm'])} | {r['coupons_redeemed']:,} | {_money(r['offer_cost'])} | "
                f"{_money(r['contact_cost'])} | {_money(r['incremental_margin'])} | {_money(r['net_incremental_value'])} "
                f"| {_ratio(r['roi'])} |"
            )
        lines.append("")
    lines += [
        "## Methods",
        "",
        "- Return rate: difference in proportions with Newcombe's hybrid score interval (Wilson score limits, "
        "Newcombe 1998 method 10); p-value from the two-proportion z-test with the pooled standard error.",
        "- Revenue per customer: "
        + ("Welch's t interval and test (unequal variances)." if result.revenue_method == "welch"
           else "seeded percentile bootstrap; p-value by inverting the percentile interval."),
        "- Multiple comparisons: the breakdowns run one test per subgroup, so some will look significant by "
        "chance. `p (Holm)` is the Holm-Bonferroni adjusted p-value within each dimension; judge subgroups "
        "by it, and treat subgroup findings as hypotheses for the next campaign.",
        "- Money (docs/MONEY.md): offer cost is what the coupons redeemed in the treatment arm really cost (the "
        "discount applied capped by the offer's rules, points at their value, a shipment, a gift); contact cost "
        "is every message really sent at its channel's rate (SMS per segment); incremental gross margin is the "
        "incremental order value (before coupon discounts) × the gross margin; net = margin − offer cost − "
        "contact cost; ROI = net / (offer cost + contact cost).",
    ]
    calls = result.call_outcomes
    if calls.get("tasks"):
        lines += ["", "## Call tasks", "", "| Sent | Reached | No answer | Declined | Won back | No outcome yet |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {calls['sent']:,} | {calls['reached']:,} | {calls['no_answer']:,} | {calls['declined']:,} | "
                  f"{calls['won_back']:,} | {calls['no_outcome']:,} |"]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def plot_return_curve(result: MeasureResult, path: str | Path) -> Path:
    """PNG: cumulative return rate by day since contact, treated vs holdout."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot()
    styles = {"treatment": ("#1f77b4", "Treatment"), "holdout": ("#7f7f7f", "Holdout")}
    for arm, (color, label) in styles.items():
        c = result.curve[result.curve["arm"] == arm]
        n = result.arms[arm]["n"]
        ax.step(c["day"], 100 * c["cumulative_return_rate"], where="post", color=color, label=f"{label} (n={n:,})")
    ax.set_xlabel("Days since (would-be) contact")
    ax.set_ylabel("Returned (%)")
    ax.set_title(f"Cumulative return rate — {result.campaign_id or ''}".strip(" —"))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_uplift_by_offer(result: MeasureResult, path: str | Path) -> Path:
    """PNG: return-rate uplift per offer with 95% CI bars (and the overall uplift)."""
    from matplotlib.figure import Figure

    frame = result.breakdowns.get("offer", pd.DataFrame())
    rr = result.uplift["return_rate"]
    labels = ["all offers"] + (frame["offer"].astype(str).tolist() if len(frame) else [])
    diffs = [rr["diff"]] + (frame["uplift"].tolist() if len(frame) else [])
    lows = [rr["ci_low"]] + (frame["ci_low"].tolist() if len(frame) else [])
    highs = [rr["ci_high"]] + (frame["ci_high"].tolist() if len(frame) else [])

    def num(v):
        return math.nan if v is None else float(v)

    d = [100 * num(v) for v in diffs]
    lo = [max(0.0, a - 100 * num(b)) if math.isfinite(a) and math.isfinite(num(b)) else 0.0 for a, b in zip(d, lows, strict=True)]
    hi = [max(0.0, 100 * num(b) - a) if math.isfinite(a) and math.isfinite(num(b)) else 0.0 for a, b in zip(d, highs, strict=True)]
    fig = Figure(figsize=(7, 0.6 * len(labels) + 1.6), dpi=110)
    ax = fig.add_subplot()
    y = list(range(len(labels)))[::-1]
    ax.errorbar(d, y, xerr=[lo, hi], fmt="o", color="#1f77b4", ecolor="#1f77b4", capsize=4)
    ax.axvline(0, color="#444444", lw=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel("Return-rate uplift vs holdout (percentage points, 95% CI)")
    ax.set_title("Uplift per offer")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_outputs(result: MeasureResult, out_dir: str | Path, *, currency: str = "") -> dict[str, Path]:
    """Write report.md, measure.csv/.parquet, curve.csv, measure.json and the two PNGs into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out / "report.md",
        "table_csv": out / "measure.csv",
        "table_parquet": out / "measure.parquet",
        "curve_csv": out / "curve.csv",
        "json": out / "measure.json",
        "curve_png": out / "return_curve.png",
        "uplift_png": out / "uplift_by_offer.png",
    }
    paths["report"].write_text(render_markdown(result, currency=currency), encoding="utf-8")
    table = result.table()
    table.to_csv(paths["table_csv"], index=False, encoding="utf-8-sig")
    table.to_parquet(paths["table_parquet"], index=False)
    result.curve.to_csv(paths["curve_csv"], index=False)
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    plot_return_curve(result, paths["curve_png"])
    plot_uplift_by_offer(result, paths["uplift_png"])
    return paths
