"""`make demo`: a whole win-back campaign, end to end and offline, on a seeded demo world.

1. generate the demo world (20,000 customers by default, `WINBACK_DEMO_CUSTOMERS` to change);
2. start the local provider emulator on free ports (HTTP + SMTP);
3. run the `winback-campaign` flow through Prefect (ephemeral API): segment → plan → ledger → send;
4. run `winback-dispatch` on the following days: quiet-hour deferrals go out on day 1, later cadence
   steps reach only the customers who have not come back;
5. once step 1 has reached everyone, simulate the customers' returns over the attribution window from
   the world's ground truth (contacted customers with their true treated probability);
6. the account managers' call lists come back with outcomes (`winback calls import`; demo only: won
   back when the customer returned, else reached or no answer);
7. run `winback-measure` and print, per offer and value tier, return rate treated vs holdout, the
   measured uplift with its 95% CI next to the true uplift, coupons redeemed, their realized cost,
   contact cost, incremental gross margin with its CI, net value and ROI on margin, and call outcomes;
8. show that the Thompson-sampling learner moves offer choice toward the truly best offer per tier
   over six simulated rounds on the whole win-back audience (share given the best offer, and the
   true uplift of the offers given as a share of the best possible).

The emulator is stopped at the end; nothing is left running. Output goes to `demo-out/`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

OUT = Path("demo-out")
CAMPAIGN = Path("campaigns/cn_retail_winback.yaml")
AS_OF = "2026-11-23"  # the history ends that day (Asia/Shanghai); the campaign starts the next morning
START = pd.Timestamp("2026-11-24 09:30", tz="Asia/Shanghai")
SEED = 7

# Wide enough for the result tables when output is piped (CI logs) or the terminal is narrow.
console = Console(width=max(Console().width, 190))


def _pct(x: float | None) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def _pp(x: float | None) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:+.1f}"


def _money(x: float | None) -> str:
    return "–" if x is None or pd.isna(x) else f"¥{x:,.0f}"


def _environment() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The ephemeral Prefect server's own services log a full traceback when its SQLite is briefly
    # locked under load ("Error flushing 1 events (1 to retry, 0 dropped)"), then retry: nothing of
    # the demo's is lost, and a failed flow or task still shows through its state.
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    # A throwaway signing key for this local run's unsubscribe links (never a production key).
    os.environ.setdefault("WINBACK_UNSUBSCRIBE_SECRET", secrets.token_urlsafe(32))
    os.environ.setdefault("WINBACK_PUBLIC_URL", "https://winback.example.com")
    os.environ.setdefault("WINBACK_CALL_LIST_DIR", str(OUT / "call-lists"))


def make_world(n_customers: int):
    """Generate and write the demo world; print what it holds."""
    from winback.config import parse_timestamp
    from winback.demo import generate_world, write_world

    started = time.perf_counter()
    world = generate_world(n_customers, seed=SEED, as_of=parse_timestamp(AS_OF))
    write_world(world, OUT / "world")
    console.print(
        f"[bold]1. Demo world[/]: {len(world.customers):,} customers, {len(world.orders):,} orders over two years, "
        f"{len(world.complaints):,} complaints ({time.perf_counter() - started:.1f} s) → {OUT / 'world'}",
        highlight=False,
    )
    return world


def print_segments(world) -> pd.DataFrame:
    """The customer pyramid × lapse stage, as the campaign flow will see it."""
    from winback.config import parse_timestamp
    from winback.segments import render_segment_summary, segment_customers

    segments = segment_customers(world.customers, world.orders, world.complaints, as_of=parse_timestamp(AS_OF),
                                 departed_managers=tuple(world.departed_manager_entries))
    console.print(render_segment_summary(segments))
    console.print(reason_table(segments, world.truth))
    return segments


def reason_table(segments: pd.DataFrame, truth: pd.DataFrame) -> Table:
    """How often `likely_reason` names the world's true reason, among slipping customers."""
    from winback.vocab import REASONS

    both = segments[["customer_id", "likely_reason"]].merge(truth[["customer_id", "true_reason"]], on="customer_id")
    both = both[both["likely_reason"] != "none"]
    table = Table(title="likely_reason against the demo world's true reason (slipping customers)")
    for col in ("reason", "named", "truly", "precision", "recall"):
        table.add_column(col, justify="left" if col == "reason" else "right")
    for reason in REASONS:
        if reason == "none":
            continue
        named = both["likely_reason"] == reason
        truly = both["true_reason"] == reason
        table.add_row(reason, f"{named.sum():,}", f"{truly.sum():,}",
                      _pct((named & truly).sum() / named.sum() if named.any() else None),
                      _pct((named & truly).sum() / truly.sum() if truly.any() else None))
    return table


def results_table(run, truth: pd.DataFrame, ledger_rows: pd.DataFrame, dim: str, title: str) -> Table:
    """Per group of `dim`: treated vs holdout return rate, uplift [95% CI] next to the truth, and money —
    coupons redeemed, their realized cost, contact cost, incremental gross margin, net value and ROI on margin."""
    from winback.demo import true_uplift
    from winback.demo.returns import contacts_from_ledger

    table = Table(title=title)
    for col in (dim.replace("_", " "), "n T", "n H", "return T", "return H", "uplift pp [95% CI]", "truth pp",
                "redeemed", "offer cost", "contact", "incr. margin [95% CI]", "net", "ROI"):
        table.add_column(col, justify="left" if col == dim.replace("_", " ") else "right", no_wrap=True)
    cells = run.result.breakdowns.get(dim)
    if cells is None or cells.empty:
        return table
    treated = ledger_rows[ledger_rows["arm"] == "treatment"]
    first = treated.sort_values("step").drop_duplicates("customer_id")[["customer_id", dim]]
    contacts = contacts_from_ledger(treated).merge(first, on="customer_id", how="left")
    truth_by = true_uplift(truth, contacts, by=dim).set_index(dim)["uplift"]
    for row in cells.to_dict("records"):
        table.add_row(
            str(row[dim]), f"{row['n_treated']:,}", f"{row['n_holdout']:,}",
            _pct(row["return_rate_treated"]), _pct(row["return_rate_holdout"]),
            f"{_pp(row['uplift'])} [{_pp(row['ci_low'])}, {_pp(row['ci_high'])}]",
            _pp(truth_by.get(row[dim])), f"{row['coupons_redeemed']:,}", _money(row["offer_cost"]),
            _money(row["contact_cost"]),
            f"{_money(row['incremental_margin'])} [{_money(row['margin_ci_low'])}, {_money(row['margin_ci_high'])}]",
            _money(row["net_incremental_value"]), _roi(row["roi"]),
        )
    return table


def _roi(x: float | None) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.1f}×"


def money_line(run) -> str:
    """The campaign's money in one line: margin with its CI, costs, net and ROI on margin."""
    r = run.result
    m = r.incremental_margin
    return (f"Incremental gross margin ({r.gross_margin:.0%} of order value) {_money(m.get('estimate'))} "
            f"[95% CI {_money(m.get('ci_low'))}, {_money(m.get('ci_high'))}] − offer cost {_money(r.offer_cost)} "
            f"({r.arms['treatment']['coupons_redeemed']:,} coupons redeemed) − contact cost {_money(r.contact_cost)} "
            f"= net {_money(r.net_incremental_value)}; ROI on margin {_roi(r.roi)}")


def report_calls(campaign_id: str, world_dir: str, ledger_url: str) -> int:
    """Fill in the call lists as the managers would (demo only: won back when the customer ordered within the
    window, else reached or no answer) and bring them back with `winback calls import`."""
    import hashlib

    from winback.cli import main as winback
    from winback.demo.returns import simulated_order_prefix

    folder = Path(os.environ["WINBACK_CALL_LIST_DIR"]) / campaign_id
    lists = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not lists:
        console.print("   no call lists were written", highlight=False)
        return 0
    orders = pd.read_parquet(Path(world_dir) / "orders.parquet", columns=["customer_id", "order_id"])
    simulated = orders["order_id"].astype(str).str.startswith(simulated_order_prefix(campaign_id))
    returned = set(orders.loc[simulated, "customer_id"].astype(str))
    filled = []
    for path in lists:
        calls = pd.read_csv(path, encoding="utf-8-sig", dtype=str)
        coin = calls["customer_id"].map(lambda c: hashlib.sha256(c.encode()).digest()[0] % 3)
        calls["outcome"] = ["won_back" if c in returned else ("no_answer" if k == 0 else "reached")
                            for c, k in zip(calls["customer_id"], coin, strict=True)]
        calls["note"] = calls["outcome"].map({"won_back": "下单了 / ordered again", "reached": "聊过 / talked",
                                              "no_answer": "未接 / no answer"})
        out = OUT / "call-outcomes" / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        calls.to_csv(out, index=False, encoding="utf-8-sig")
        filled.append(out)
    for path in filled:
        code = winback(["calls", "import", str(path), "--ledger", ledger_url])
        if code:
            return code
    return 0


def main() -> int:
    """Run the whole demo; returns the process exit code."""
    _environment()
    n_customers = int(os.environ.get("WINBACK_DEMO_CUSTOMERS", "20000"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    ledger_url = f"sqlite:///{(OUT / 'ledger.db').resolve()}"
    started = time.perf_counter()
    console.rule("[bold]winback demo[/]")
    world = make_world(n_customers)
    segments = print_segments(world)

    from flows.campaign import campaign_flow
    from flows.dispatch import dispatch_flow
    from flows.measure import measure_flow

    from winback.campaigns import load_campaign
    from winback.channels.emulator import EmulatorServer
    from winback.cli import main as winback
    from winback.resources import Resources, RunSettings

    campaign = load_campaign(CAMPAIGN)
    world_dir = str(OUT / "world")
    with EmulatorServer() as emulator:
        emulator_url = emulator.url
        console.print(f"[bold]2. Provider emulator[/] listening on {emulator.url}", highlight=False)
        console.print(f"[bold]3. Campaign flow[/] `{campaign.id}` through Prefect, as of {AS_OF}, "
                      f"starting {START:%Y-%m-%d %H:%M %Z}…", highlight=False)
        summary = campaign_flow(campaign=str(CAMPAIGN), as_of=AS_OF, world=world_dir, ledger_url=ledger_url,
                                emulator_url=emulator_url, now=START.isoformat())
        console.print(f"   audience {summary['audience']:,}: "
                      + ", ".join(f"{k} {v:,}" for k, v in summary["arms"].items()), highlight=False)

        simulated = False
        # The first day and each step's day and the next: what quiet hours deferred goes out in the next
        # window of each zone (every message within a day of its planned time).
        days = sorted({0, 1, *[s.day + k for s in campaign.cadence[1:] for k in (0, 1)]})
        # The every-15-minutes deployment, sampled: a Shanghai late morning and a New York / London
        # morning each simulated day, so every zone's send window comes round.
        slots = [pd.Timedelta(hours=1, minutes=30), pd.Timedelta(hours=13, minutes=30)]
        console.print(f"[bold]4. Dispatch[/] on days {', '.join(map(str, days))} at 11:00 and 23:00 Shanghai time: "
                      "sends deferred by quiet hours, then later cadence steps (only for customers who have not "
                      "come back)")
        for day in days:
            if day > 1 and not simulated:  # step 1 has reached every zone by then
                # Step 1 has gone out to everyone (quiet-hour deferrals included): play the return window.
                console.print("[bold]5. Return window[/]: customers respond according to the world's ground truth")
                code = winback(["simulate-returns", "--campaign", campaign.id, "--world", world_dir,
                                "--days", str(campaign.attribution_window_days), "--ledger", ledger_url])
                if code:
                    return code
                simulated = True
            planned = sent = failed = deferred = 0
            for slot in slots:
                when = (START + pd.Timedelta(days=day) + slot).isoformat()
                r = dispatch_flow(campaign=str(CAMPAIGN), now=when, world=world_dir, ledger_url=ledger_url,
                                  emulator_url=emulator_url).get(campaign.id, {})
                planned += r.get("followups_planned", 0)
                sent += r.get("sent", 0)
                failed += sum(r.get("failed", {}).values())
                deferred += sum(n for k, n in r.get("gated", {}).items() if k.startswith("deferred"))
            console.print(f"   day {day:>2}: {planned:,} follow-ups planned, {sent:,} sent, {failed:,} failed, "
                          f"{deferred:,} deferred to the recipient's next send window", highlight=False)
        with Resources(RunSettings(ledger_url=ledger_url)) as resources:
            book = resources.ledger.rows(campaign.id)
        treated = book[book["arm"] == "treatment"]
        by_step = treated.groupby("step")["state"].value_counts().unstack(fill_value=0)
        console.print("   treatment rows by cadence step: " + "; ".join(
            f"step {step}: " + ", ".join(f"{state} {n:,}" for state, n in row.items() if n)
            for step, row in by_step.iterrows()), highlight=False)
        sent = treated[treated["state"] == "sent"]
        late = (pd.to_datetime(sent["sent_at"], utc=True) - pd.to_datetime(sent["planned_at"], utc=True)).max()
        console.print(f"   every treatment message sent within {late.total_seconds() / 3600:.1f} h of being planned "
                      "(simulated time: sent_at follows the run's clock)", highlight=False)
        stats = emulator.stats()
        console.print(f"   the emulator accepted {stats['accepted']:,} messages for {stats['unique_keys']:,} "
                      f"ledger keys: {stats['duplicates']} duplicates", highlight=False)

    console.print("[bold]6. Call outcomes[/] come back from the account managers' lists")
    code = report_calls(campaign.id, world_dir, ledger_url)
    if code:
        return code
    console.print("[bold]7. Measure flow[/]")
    measure_as_of = (START + pd.Timedelta(days=campaign.attribution_window_days + 1)).isoformat()
    measure_flow(campaign=campaign.id, window_days=campaign.attribution_window_days, world=world_dir,
                 ledger_url=ledger_url, as_of=measure_as_of, out_dir=str(OUT / "report"))
    from winback.measure import measure_from_ledger

    run = measure_from_ledger(campaign.id, ledger_url=ledger_url, window_days=campaign.attribution_window_days,
                              world=world_dir, as_of=pd.Timestamp(measure_as_of), learn=False)
    with Resources(RunSettings(ledger_url=ledger_url)) as resources:
        rows = resources.ledger.rows(campaign.id)
    truth = pd.read_parquet(OUT / "world" / "truth.parquet")
    window = campaign.attribution_window_days
    console.print(results_table(run, truth, rows, "offer", f"Return within {window} days, by offer (intention to treat)"))
    console.print(results_table(run, truth, rows, "value_tier", f"Return within {window} days, by value tier"))
    console.print(run.headline(), highlight=False)
    console.print(money_line(run), highlight=False)
    calls = run.result.call_outcomes
    if calls.get("tasks"):
        console.print(f"Call tasks: {calls['sent']:,} on the managers' lists: won back {calls['won_back']:,}, "
                      f"reached {calls['reached']:,}, no answer {calls['no_answer']:,}, declined "
                      f"{calls['declined']:,}, no outcome yet {calls['no_outcome']:,}", highlight=False)
    console.print(f"Report, table and plots: {OUT / 'report'}", highlight=False)

    console.print("[bold]8. Learning[/]: share of each tier's customers given its truly best offer, campaign by campaign")
    from winback.measure.learning import simulate_learning

    # The learner's arms are (offer kind, value tier): the world's truth joined with the segments' tiers.
    # Each round contacts every customer unlikely to come back unaided (a win-back audience, about
    # 17,000 here): the offers' true uplifts differ by about a point within a tier, which 3,000
    # customers split over 4 tiers × 5 offers cannot tell apart in a few rounds.
    truth_tiers = world.truth.merge(segments[["customer_id", "value_tier"]], on="customer_id")
    truth_tiers = truth_tiers[truth_tiers["p_base"] < 0.5].reset_index(drop=True)
    learning = simulate_learning(truth_tiers, n_campaigns=6, audience_size=len(truth_tiers), seed=SEED)
    names = {tier: f"{tier} ({best})" for tier, best in zip(learning["value_tier"], learning["best_offer"], strict=True)}
    shares = learning.pivot(index="campaign", columns="value_tier", values="share_best").rename(columns=names)
    console.print(shares.map(_pct).to_string(), highlight=False)
    # Where two offers are within a tenth of a point of each other, which one a tier gets hardly
    # matters: the true uplift of the offers given, as a share of the tier's best, says how much is won.
    captured = learning.assign(share=learning["true_uplift_chosen"] / learning["true_uplift_best"])
    console.print("True uplift of the offers given, as a share of each tier's best offer:", highlight=False)
    console.print(captured.pivot(index="campaign", columns="value_tier", values="share").rename(columns=names)
                  .map(_pct).to_string(), highlight=False)
    total = learning.assign(chosen=learning["true_uplift_chosen"] * learning["treated"],
                            best=learning["true_uplift_best"] * learning["treated"]).groupby("campaign")[
        ["chosen", "best", "treated"]].sum()
    first, last = total.index[0], total.index[-1]
    console.print(f"all tiers: {_pp(total.loc[first, 'chosen'] / total.loc[first, 'treated'])}pp true uplift in campaign "
                  f"{first}, {_pp(total.loc[last, 'chosen'] / total.loc[last, 'treated'])}pp in campaign {last}; the best "
                  f"offer per tier for everyone: {_pp(total.loc[last, 'best'] / total.loc[last, 'treated'])}pp",
                  highlight=False)
    console.rule(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
