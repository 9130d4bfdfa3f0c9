"""A rich table summarising what validation read, kept and quarantined (printed by segment and plan)."""

from __future__ import annotations

from rich.table import Table

from winback.sources.validate import Inputs

_DEFAULTS = {
    "customers.locale": "empty → default locale",
    "customers.email_opt_in": "empty → no consent",
    "customers.sms_opt_in": "empty → no consent",
    "orders.discount": "empty → 0",
    "complaints.resolved": "empty → unresolved",
    "complaints.kind": "empty → unspecified",
}


def render_validation_summary(inputs: Inputs) -> Table:
    """Rows read / valid / quarantined per table, quarantined rows per reason code, defaults applied."""
    table = Table(title="Input validation", title_justify="left", caption_justify="left")
    table.add_column("table / reason", no_wrap=True)
    table.add_column("source", overflow="fold", max_width=60)
    table.add_column("read", justify="right")
    table.add_column("valid", justify="right")
    table.add_column("quarantined", justify="right")
    valid = {"customers": len(inputs.customers), "orders": len(inputs.orders), "complaints": len(inputs.complaints)}
    for name, read in inputs.rows_read.items():
        bad = read - valid[name]
        table.add_row(
            name, inputs.sources.get(name, ""), f"{read:,}", f"{valid[name]:,}",
            f"[bold red]{bad:,}[/]" if bad else "0",
        )
    if inputs.counts:
        table.add_section()
        per_table = inputs.quarantine.groupby(["code", "table"]).size()
        for code, count in inputs.counts.items():
            where = ", ".join(t for (c, t) in per_table.index if c == code)
            table.add_row(f"  {code}", where, "", "", f"{count:,}")
    if inputs.filled:
        notes = [
            f"{column} {count:,} ({_DEFAULTS.get(column, f'empty → {inputs.default_timezone}')})"
            for column, count in sorted(inputs.filled.items())
        ]
        table.caption = "Defaults applied: " + "; ".join(notes)
    return table
