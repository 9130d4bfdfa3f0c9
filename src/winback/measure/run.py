"""The edge of measurement: read the ledger and the orders, measure, write the artifacts, store offer results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from winback.errors import ConfigError, DataError
from winback.measure.campaign import DEFAULT_BREAKDOWNS, MeasureResult, measure_campaign


@dataclass
class MeasureRun:
    """A measurement with its report text, written files and the offer results stored for learning."""

    result: MeasureResult
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)
    offer_results: pd.DataFrame | None = None
    offer_results_saved: int = 0

    def to_json(self) -> dict:
        """The figures for machines plus where the artifacts were written."""
        out = self.result.to_dict()
        out["artifacts"] = {k: str(v) for k, v in self.paths.items()}
        out["offer_results_saved"] = self.offer_results_saved
        return out

    def by_offer_records(self) -> list[dict]:
        """Per-offer rows (for a Prefect table artifact)."""
        return self.to_json().get("by_offer", [])

    def headline(self) -> str:
        """One line: return rates, uplift with CI, net value and ROI."""
        r = self.result
        t, h = r.arms["treatment"], r.arms["holdout"]
        rr = r.uplift["return_rate"]

        def pp(x):
            return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:+.2f}pp"

        def pct(x):
            return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.2f}%"

        roi = "n/a" if r.roi is None else f"{r.roi:.2f}"
        return (f"return rate {pct(t['return_rate'])} treated (n={t['n']}) vs {pct(h['return_rate'])} holdout "
                f"(n={h['n']}); uplift {pp(rr['diff'])} [{pp(rr['ci_low'])}, {pp(rr['ci_high'])}]; "
                f"net incremental value {r.net_incremental_value:,.2f}; ROI {roi}")


SMS_RENDER_LIMIT = 20_000  # beyond this many sent SMS, a seeded sample is rendered (about 100 µs each)


def sms_segments(rows: pd.DataFrame, campaign, *, public_url: str | None = None,
                 notes: list[str] | None = None, limit: int = SMS_RENDER_LIMIT) -> pd.Series:
    """Segments of each SMS really sent (NaN for other rows), rendered again from the ledger row's template
    and context with an unsubscribe link as long as the sender's. A row that cannot be rendered counts 1.
    More than `limit` SMS: a seeded sample of `limit` is rendered and the others get their (template,
    locale)'s mean segments (a note says so)."""
    import os

    from winback.errors import WinbackError
    from winback.render import Renderer, make_unsubscribe_token, unsubscribe_url

    out = pd.Series(float("nan"), index=rows.index)
    sent = (rows["channel"].astype("string").eq("sms") & rows["state"].astype("string").eq("sent")).fillna(False)
    if not sent.any():
        return out
    base = public_url or os.environ.get("WINBACK_PUBLIC_URL") or "https://example.com"
    renderer = Renderer(campaign.templates_path(), campaign.locale_fallback)
    todo = rows[sent]
    if len(todo) > limit:
        todo = todo.sample(n=limit, random_state=0)
    failed = 0
    for i, row in todo.iterrows():
        try:
            # Same length as the real link: a token's size depends on its ids, not on the secret.
            token = make_unsubscribe_token(str(row["campaign_id"]), str(row["customer_id"]), "sms", "x")
            message = renderer.render(str(row["template"]), "sms", row["locale"], row["context"] or "{}",
                                      unsubscribe_url=unsubscribe_url(base, token))
            out.loc[i] = float(message.sms_segments or 1)
        except (WinbackError, ValueError, TypeError):
            out.loc[i] = 1.0
            failed += 1
    rest = sent & out.isna()
    if rest.any():
        group = [rows["template"].astype("string"), rows["locale"].astype("string")]
        mean = out.groupby(group, dropna=False).transform("mean")
        out = out.mask(rest, mean.fillna(1.0))
        if notes is not None:
            notes.append(f"{int(rest.sum()):,} of {int(sent.sum()):,} sent SMS priced at the mean segments of a "
                         f"rendered sample of {limit:,} (per template and locale)")
    if failed and notes is not None:
        notes.append(f"{failed} sent SMS could not be rendered again to count segments: priced as 1 segment each")
    return out


def call_outcome_summary(rows: pd.DataFrame, outcomes: pd.DataFrame) -> dict:
    """Call tasks of the campaign and what came of them: tasks sent, outcomes by kind, tasks without one."""
    from winback.ledger.decisions import CALL_OUTCOMES

    calls = rows[(rows["channel"].astype("string") == "call_task") & (rows["arm"] == "treatment")]
    sent = calls[calls["state"].astype("string") == "sent"]
    latest = outcomes.drop_duplicates(["customer_id", "step"], keep="last") if len(outcomes) else outcomes
    keys = set(zip(sent["customer_id"].astype(str), sent["step"].astype(int), strict=True))
    known = latest[[(str(c), int(s)) in keys for c, s in zip(latest["customer_id"], latest["step"], strict=True)]] \
        if len(latest) else latest
    counts = {kind: int((known["outcome"] == kind).sum()) if len(known) else 0 for kind in CALL_OUTCOMES}
    return {"tasks": int(len(calls)), "sent": int(len(sent)), **counts,
            "no_outcome": int(len(sent) - len(known))}


def resolve_orders(orders: str | Path | None, world: str | Path | None, campaign_id: str | None = None,
                   *, option: str = "--orders") -> str:
    """The orders file: the explicit path, else the demo world's orders.parquet, else the campaign's own
    `sources.orders` (its campaign file found by id in campaigns/)."""
    if orders:
        return str(orders)
    if world:
        for name in ("orders.parquet", "orders.csv"):
            path = Path(world) / name
            if path.exists():
                return str(path)
        raise DataError("no orders.parquet or orders.csv in the world folder", file=str(world))
    if campaign_id:
        from winback.campaigns.loading import find_campaign

        spec = find_campaign(campaign_id)
        if spec is not None:
            own = spec.sources.resolved(spec.base_dir).get("orders")
            if own:
                return str(own)
    raise ConfigError("no orders to measure against", field=option,
                      hint=f"give {option} (CSV or Parquet), a demo world, or a campaign file in campaigns/ "
                      "whose sources.orders names them")


def campaigns_to_measure(ledger, *, now: pd.Timestamp, window_days: int, grace_days: int = 2) -> list[str]:
    """Campaigns in the ledger whose attribution window is open, or closed less than `grace_days` ago."""
    out = []
    for campaign_id in ledger.campaigns():
        rows = ledger.rows(campaign_id)
        first = pd.to_datetime(rows["sent_at"], utc=True).fillna(pd.to_datetime(rows["send_at_utc"], utc=True))
        start = first.min()
        if pd.isna(start) or start > now:
            continue
        last = first.max()
        if last + pd.Timedelta(days=window_days + grace_days) >= now:
            out.append(campaign_id)
    return out


def measure_from_ledger(
    campaign_id: str,
    *,
    ledger_url: str | None = None,
    ledger=None,
    window_days: int = 30,
    orders: str | Path | pd.DataFrame | None = None,
    world: str | Path | None = None,
    as_of: pd.Timestamp | None = None,
    out_dir: str | Path | None = None,
    learn: bool = True,
    by=DEFAULT_BREAKDOWNS,
    revenue_method: str = "welch",
    seed: int = 0,
    currency: str = "",
    orders_option: str = "--orders",
    campaign=None,
    public_url: str | None = None,
) -> MeasureRun:
    """Measure a campaign from the ledger against orders; write artifacts to `out_dir`; store offer results.

    `campaign` (default: its file found by id in campaigns/) prices the offers, the contacts and the margin;
    its templates count each sent SMS's segments (`public_url`, default WINBACK_PUBLIC_URL, sizes the
    unsubscribe link as the sender wrote it).
    """
    from winback.measure.learning import offer_results_from
    from winback.measure.report import render_markdown, write_outputs

    own = ledger is None
    if own:
        from winback.resources import Resources, RunSettings

        resources = Resources(RunSettings(ledger_url=ledger_url))
        ledger = resources.ledger
    try:
        rows = ledger.rows(campaign_id)
        if rows.empty:
            known = ledger.campaigns()
            raise DataError(f"no campaign {campaign_id!r} in the ledger; known: {', '.join(known[:20]) or '(none)'}",
                            hint="give the campaign id (the `id:` in its YAML), not its file name")
        source = orders if isinstance(orders, pd.DataFrame) else resolve_orders(orders, world, campaign_id,
                                                                                option=orders_option)
        if campaign is None:
            from winback.campaigns.loading import find_campaign

            campaign = find_campaign(campaign_id)
        notes: list[str] = []
        if campaign is not None:
            rows = rows.assign(sms_segments=sms_segments(rows, campaign, public_url=public_url, notes=notes))
        result = measure_campaign(rows, source, window_days=window_days, as_of=as_of, by=by,
                                  revenue_method=revenue_method, seed=seed, campaign=campaign)
        result.notes.extend(notes)
        from winback.ledger.decisions import call_outcomes

        result.call_outcomes = call_outcome_summary(rows, call_outcomes(ledger, campaign_id))
        run = MeasureRun(result=result, markdown=render_markdown(result, currency=currency))
        if out_dir is not None:
            run.paths = write_outputs(result, out_dir, currency=currency)
        if learn:
            run.offer_results = offer_results_from(result)
            run.offer_results_saved = ledger.save_offer_results(run.offer_results, now=as_of)
        return run
    finally:
        if own:
            resources.close()
