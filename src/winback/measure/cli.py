"""`winback measure`, `winback uplift` and `winback power`: measurement from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from winback.errors import ConfigError


def _fmt(x, kind: str = "num") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if kind == "pct":
        return f"{100 * x:.2f}%"
    if kind == "pp":
        return f"{100 * x:+.2f} pp"
    if kind == "p":
        return "<0.0001" if x < 1e-4 else f"{x:.4f}"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.4f}" if abs(x) < 10 else f"{x:,.2f}"


def register(app: typer.Typer) -> None:
    """Add `measure`, `uplift` and `power` to the winback command line."""

    @app.command("measure")
    def measure(
        campaign_id: Annotated[str, typer.Argument(help="The campaign to measure (its id in the ledger).")],
        window_days: Annotated[int, typer.Option("--window-days", help="Attribution window after contact.")] = 30,
        orders: Annotated[str | None, typer.Option("--orders", help="Orders file (CSV or Parquet).")] = None,
        world: Annotated[str | None, typer.Option("--world", help="A demo-data folder (uses its orders).")] = None,
        ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")] = None,
        out: Annotated[str | None, typer.Option("--out", help="Folder for report.md, tables and PNG plots.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
        as_of: Annotated[str | None, typer.Option("--as-of", help="Count orders up to this date (default now).")] = None,
        revenue_method: Annotated[str, typer.Option("--revenue-method",
                                                    help="welch (default) or bootstrap.")] = "welch",
        seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
        learn: Annotated[bool, typer.Option("--learn/--no-learn",
                                            help="Store results per offer and tier for the next plan.")] = True,
    ) -> None:
        """Who came back because of the campaign: treated vs holdout, uplift with 95% CIs, cost and ROI."""
        if window_days <= 0:
            raise ConfigError("must be a positive number of days", field="--window-days")
        if revenue_method not in ("welch", "bootstrap"):
            raise ConfigError("must be welch or bootstrap", field="--revenue-method")
        from winback.campaigns.loading import find_campaign
        from winback.config import ledger_url, parse_timestamp, utc_now
        from winback.measure.run import measure_from_ledger, resolve_orders

        orders_path = resolve_orders(orders, world, campaign_id)
        spec = find_campaign(campaign_id)
        # A bare date is the end of that day in the campaign's own zone, as in `plan` and `run`.
        zone = spec.policy.default_timezone if spec is not None else None
        cutoff = (parse_timestamp(as_of, **({"tz": zone} if zone else {})) if as_of else utc_now())
        run = measure_from_ledger(
            campaign_id, ledger_url=ledger_url(ledger), window_days=window_days, orders=orders_path,
            as_of=cutoff, out_dir=Path(out) if out else None, learn=learn, revenue_method=revenue_method, seed=seed,
        )
        if as_json:
            typer.echo(json.dumps(run.to_json(), ensure_ascii=False, indent=2))
            return
        _print_measure(run)

    @app.command("uplift")
    def uplift(
        data: Annotated[str, typer.Argument(help="Experiment table (CSV or Parquet).")],
        arm: Annotated[str, typer.Option("--arm", help="Column naming each row's arm.")],
        control: Annotated[str, typer.Option("--control", help="The arm value of the control group.")],
        outcome: Annotated[str, typer.Option("--outcome", help="Outcome column (0/1 or a number).")],
        by: Annotated[str | None, typer.Option("--by", help="Also compare within each value of this column.")] = None,
        method: Annotated[str, typer.Option("--method", help="auto, newcombe, welch or bootstrap.")] = "auto",
        seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the comparisons as JSON.")] = False,
    ) -> None:
        """Uplift of each arm over the control, with 95% CIs and p-values, on any experiment table."""
        from winback.measure.uplift import uplift_table
        from winback.sources.files import read_table

        frame = read_table(data)
        out = uplift_table(frame, arm=arm, control=control, outcome=outcome, by=by, method=method, seed=seed,
                           source=data)
        if as_json:
            typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{outcome}: each arm vs {control!r} ({out['method']})")
        for col in ["arm"] + (["by"] if by else []) + ["n arm", "n control", "mean arm", "mean control", "diff",
                                                        "95% CI", "p"]:
            table.add_column(col, justify="left" if col in ("arm", "by") else "right")
        for c in out["comparisons"]:
            cells = [str(c["arm"])] + ([str(c["by"]) if c["by"] is not None else "all"] if by else [])
            cells += [_fmt(c["n_arm"]), _fmt(c["n_control"]), _fmt(c["mean_arm"]), _fmt(c["mean_control"]),
                      _fmt(c["diff"]), f"{_fmt(c['ci_low'])} … {_fmt(c['ci_high'])}", _fmt(c["p_value"], "p")]
            table.add_row(*cells)
        Console().print(table)

    @app.command("power")
    def power(
        baseline: Annotated[float, typer.Option("--baseline", help="Return rate without contact (0-1).")],
        mde: Annotated[float, typer.Option("--mde", help="Absolute uplift to detect (0.02 = 2 points).")],
        alpha: Annotated[float, typer.Option("--alpha", help="Two-sided significance level.")] = 0.05,
        power_: Annotated[float, typer.Option("--power", help="Chance of detecting the uplift.")] = 0.8,
        holdout_share: Annotated[float, typer.Option("--holdout-share", help="Share held out (0-1).")] = 0.5,
        as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    ) -> None:
        """Customers needed per arm (and in total) to detect an absolute return-rate uplift."""
        from winback.measure.power import required_sample_size

        size = required_sample_size(baseline, mde, alpha=alpha, power=power_, holdout_share=holdout_share)
        if as_json:
            typer.echo(json.dumps(size.to_dict()))
            return
        typer.echo(
            f"To detect {100 * mde:+.2f} points on a {100 * baseline:.2f}% return rate "
            f"(alpha {alpha:g} two-sided, power {power_:g}, holdout share {holdout_share:g}):\n"
            f"  treatment: {size.n_treatment:,} customers\n"
            f"  holdout:   {size.n_holdout:,} customers\n"
            f"  total audience: {size.total:,} customers"
        )


def _print_measure(run) -> None:
    """A rich table of the arms and the uplift for people."""
    from rich.console import Console
    from rich.table import Table

    r = run.result
    t, h = r.arms["treatment"], r.arms["holdout"]
    console = Console()
    arms = Table(title=f"Campaign {r.campaign_id}: {r.window_days}-day window, intention to treat")
    arms.add_column("")
    arms.add_column("Treatment", justify="right")
    arms.add_column("Holdout", justify="right")
    for label, key, kind in [("Customers", "n", "num"), ("Returned", "returned", "num"),
                             ("Return rate", "return_rate", "pct"), ("Orders", "orders", "num"),
                             ("Revenue", "revenue", "num"), ("Revenue / customer", "revenue_per_customer", "num"),
                             ("Coupons redeemed", "coupons_redeemed", "num"), ("Offer cost (realized)", "coupon_cost", "num"),
                             ("Contact cost", "contact_cost", "num")]:
        arms.add_row(label, _fmt(t[key], kind), _fmt(h[key], kind))
    console.print(arms)
    rr, rev = r.uplift["return_rate"], r.uplift["revenue_per_customer"]
    up = Table(title="Uplift (95% CI)")
    for col in ("Measure", "Difference", "95% CI", "p"):
        up.add_column(col, justify="left" if col == "Measure" else "right")
    up.add_row("Return rate", _fmt(rr["diff"], "pp"), f"{_fmt(rr['ci_low'], 'pp')} … {_fmt(rr['ci_high'], 'pp')}",
               _fmt(rr["p_value"], "p"))
    up.add_row("Revenue / customer", _fmt(rev["diff"]), f"{_fmt(rev['ci_low'])} … {_fmt(rev['ci_high'])}",
               _fmt(rev["p_value"], "p"))
    console.print(up)
    roi = "–" if r.roi is None else f"{r.roi:.2f}"
    m = r.incremental_margin
    console.print(
        f"Delivery rate {_fmt(r.delivery.get('delivery_rate'), 'pct')} · incremental returns "
        f"{_fmt(r.incremental_returns['estimate'])} · incremental revenue {_fmt(r.incremental_revenue['estimate'])}",
        highlight=False,
    )
    console.print(
        f"Incremental gross margin ({r.gross_margin:.0%}) {_fmt(m.get('estimate'))} "
        f"[{_fmt(m.get('ci_low'))} … {_fmt(m.get('ci_high'))}] − offer cost {_fmt(r.offer_cost)} − contact cost "
        f"{_fmt(r.contact_cost)} = net incremental value {_fmt(r.net_incremental_value)} · ROI {roi}",
        highlight=False,
    )
    calls = r.call_outcomes
    if calls.get("tasks"):
        from winback.ledger.decisions import CALL_OUTCOMES

        console.print(f"Call tasks {calls['sent']:,} sent: " + ", ".join(
            f"{kind.replace('_', ' ')} {calls.get(kind, 0):,}" for kind in CALL_OUTCOMES)
            + f", no outcome yet {calls['no_outcome']:,}", highlight=False)
    for note in r.notes:
        console.print(f"Note: {note}", highlight=False)
    if run.paths:
        console.print(f"Report and plots in {Path(run.paths['report']).parent}", highlight=False)
