"""`winback demo-data` (generate a demo world) and `winback simulate-returns` (returns from its ground truth)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add `demo-data` and `simulate-returns` to the winback command line."""

    @app.command("demo-data")
    def demo_data(
        out: Annotated[Path, typer.Option("--out", help="Folder to write the demo world into.")],
        customers: Annotated[int, typer.Option("--customers", help="Number of customers.")] = 20_000,
        seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same world).")] = 42,
        as_of: Annotated[str | None, typer.Option(
            "--as-of", help="End of the history: a date (end of that day, Asia/Shanghai) or a timestamp; default now.")] = None,
        csv: Annotated[bool, typer.Option("--csv", help="Also write CSV copies (UTF-8 with BOM).")] = False,
    ) -> None:
        """Generate a deterministic demo world: customers, orders, complaints and the ground truth."""
        from rich.console import Console
        from rich.table import Table

        from winback import config
        from winback.demo import generate_world, write_world
        from winback.errors import ConfigError

        if customers < 1:
            raise ConfigError(f"must be at least 1, got {customers}", field="--customers")
        stamp = config.parse_timestamp(as_of) if as_of else config.utc_now().floor("s")
        started = time.perf_counter()
        world = generate_world(customers, seed=seed, as_of=stamp)
        generated = time.perf_counter() - started
        files = write_world(world, out, csv=csv)
        elapsed = time.perf_counter() - started
        truth = world.truth
        table = Table(title=f"Demo world · seed {seed} · as of {stamp:%Y-%m-%d %H:%M} UTC", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("customers", f"{len(world.customers):,}")
        table.add_row("orders", f"{len(world.orders):,}")
        table.add_row("complaints", f"{len(world.complaints):,} ({int((~world.complaints['resolved']).sum()):,} unresolved)")
        table.add_row("still buying (truth)", f"{truth['alive'].mean():.1%}")
        table.add_row("account managers", f"{len(world.managers)} ({len(world.departed_managers)} departed)")
        table.add_row("locales", ", ".join(f"{k} {v:.0%}" for k, v in
                                          world.customers["locale"].value_counts(normalize=True).items()))
        table.add_row("time", f"{elapsed:.1f} s (generate {generated:.1f} s, "
                              f"{len(world.orders) / max(generated, 1e-9):,.0f} orders/s)")
        console = Console()
        console.print(table)
        console.print(f"Wrote {len(files)} files to [bold]{out}[/]: " + ", ".join(f.name for f in files),
                      highlight=False)

    @app.command("simulate-returns")
    def simulate_returns_command(
        campaign: Annotated[str, typer.Option("--campaign", help="Campaign id in the ledger.")],
        world: Annotated[Path, typer.Option("--world", help="A folder written by `winback demo-data`.")],
        days: Annotated[int, typer.Option("--days", help="Attribution window in days after first contact.")] = 30,
        ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default: the world's seed).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Demo only: simulate the campaign's customers' returns from the ground truth into WORLD/orders.parquet."""
        import pandas as pd

        from winback.demo.returns import contacts_from_ledger, replace_simulated_orders, simulate_returns
        from winback.demo.storage import METADATA_FILE
        from winback.errors import DataError
        from winback.resources import Resources, RunSettings
        from winback.sources.files import read_table, write_table

        truth_file, orders_file = world / "truth.parquet", world / "orders.parquet"
        for file in (truth_file, orders_file):
            if not file.exists():
                raise DataError("not found; is this a demo world folder?", file=str(file),
                                hint="create one with `winback demo-data --out DIR`")
        if seed is None:
            meta = world / METADATA_FILE
            seed = int(json.loads(meta.read_text(encoding="utf-8")).get("seed") or 0) if meta.exists() else 0
        with Resources(RunSettings(ledger_url=ledger)) as resources:
            rows = resources.ledger.rows(campaign)
        if rows.empty:
            raise DataError(f"the ledger has no rows for campaign {campaign!r}",
                            hint="plan and send the campaign first (`winback run …`)")
        contacts = contacts_from_ledger(rows)
        truth = read_table(truth_file)
        new_orders = simulate_returns(contacts, truth, days=days, seed=seed)
        orders, replaced = replace_simulated_orders(read_table(orders_file), new_orders, campaign)
        # Write beside and rename: a crash never leaves a half-written orders file.
        tmp = world / f".orders.{os.getpid()}.parquet"
        write_table(orders, tmp)
        os.replace(tmp, orders_file)
        csv_copy = world / "orders.csv"
        if csv_copy.exists():
            write_table(orders, csv_copy)
        returned = set(new_orders["customer_id"])
        per_customer = contacts.groupby("customer_id", sort=False).agg(
            arm=("arm", "first"), contacted=("contacted", "any")).reset_index()
        per_customer["returned"] = per_customer["customer_id"].isin(returned)
        summary = {"campaign_id": campaign, "days": days, "seed": seed, "new_orders": len(new_orders),
                   "replaced_orders": replaced, "revenue": round(float(new_orders["amount"].sum()), 2),
                   "coupons_redeemed": int(new_orders["coupon_code"].notna().sum()), "arms": {}}
        for arm, grp in per_customer.groupby("arm"):
            summary["arms"][str(arm)] = {"customers": len(grp), "contacted": int(grp["contacted"].sum()),
                                         "returned": int(grp["returned"].sum()),
                                         "return_rate": round(float(grp["returned"].mean()), 4)}
        if as_json:
            typer.echo(json.dumps(summary, ensure_ascii=False))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Simulated returns · {campaign} · {days} days · seed {seed}")
        for col in ("arm", "customers", "contacted", "returned", "return rate"):
            table.add_column(col, justify="left" if col == "arm" else "right")
        for arm, s in summary["arms"].items():
            table.add_row(arm, f"{s['customers']:,}", f"{s['contacted']:,}", f"{s['returned']:,}",
                          f"{s['return_rate']:.2%}")
        console = Console()
        console.print(table)
        console.print(f"{len(new_orders):,} simulated orders ({pd.Series(new_orders['amount']).sum():,.2f} revenue, "
                      f"{summary['coupons_redeemed']:,} coupons) written to {orders_file}"
                      + (f"; replaced {replaced:,} from an earlier run" if replaced else ""), highlight=False)
