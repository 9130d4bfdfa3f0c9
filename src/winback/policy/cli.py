"""`winback suppress import|export PATH`: do-not-contact lists in and out of the ledger's suppression list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")]
# An entry known only by its address is stored under this customer id (the list's key is customer + channel);
# the planner and the send engine match it by address.
ADDRESS_ONLY = "address:"


def register(app: typer.Typer) -> None:
    """Add `suppress import` and `suppress export` to the winback command line."""
    group = typer.Typer(help="Do-not-contact lists: import them into the ledger's suppression list, export it.",
                        no_args_is_help=True)
    app.add_typer(group, name="suppress")

    @group.command("import")
    def import_cmd(
        path: Annotated[Path, typer.Argument(help="CSV or Parquet with customer_id and/or address (e-mail or "
                                                   "phone); optional channel and reason columns.")],
        reason: Annotated[str, typer.Option("--reason", help="Reason for rows that give none.")] = "unsubscribed",
        channel: Annotated[str | None, typer.Option("--channel", help="Channel for rows that give none "
                                                    "(default: the address's, or every channel for an id).")] = None,
        ledger: LedgerOpt = None,
    ) -> None:
        """Add a do-not-contact list (by customer id or by address) to the suppression list."""
        from winback.ledger.decisions import import_suppressions
        from winback.resources import Resources, RunSettings
        from winback.sources.files import read_table

        rows = suppression_rows(read_table(str(path)), reason=reason, channel=channel, source=f"import:{path.name}")
        with Resources(RunSettings.from_env(ledger_url=ledger)) as resources:
            added = import_suppressions(resources.ledger, rows)
        typer.echo(f"Suppressed {added:,} new (customer or address, channel) pair(s) from {path} "
                   f"({len(rows) - added:,} already on the list)")

    @group.command("export")
    def export_cmd(
        path: Annotated[Path, typer.Argument(help="File to write, .csv or .parquet.")],
        ledger: LedgerOpt = None,
    ) -> None:
        """Write the suppression list (customer_id, channel, address, reason, source, created_at)."""
        from winback.resources import Resources, RunSettings
        from winback.sources.files import table_format, write_table

        table_format(path)
        with Resources(RunSettings.from_env(ledger_url=ledger)) as resources:
            rows = resources.ledger.suppressions()
        ids = rows["customer_id"].astype("string")
        rows["customer_id"] = ids.mask(ids.str.startswith(ADDRESS_ONLY).fillna(False))
        write_table(rows, path)
        typer.echo(f"Wrote {len(rows):,} suppression(s) to {path}")


def suppression_rows(frame, *, reason: str, channel: str | None, source: str):
    """Normalise a do-not-contact list into suppression rows: an id without a channel is suppressed on every
    channel; an address on its own channel (e-mail by its @, else SMS), addresses normalised as the policy
    compares them. Errors name the file and row."""
    import pandas as pd

    from winback.errors import DataError
    from winback.vocab import CHANNELS

    columns = {str(c).strip().lower(): c for c in frame.columns}
    if "customer_id" not in columns and "address" not in columns:
        raise DataError("a do-not-contact list needs a customer_id or an address column", file=source)

    def text(name):
        if name not in columns:
            return pd.Series(pd.NA, index=frame.index, dtype="string")
        values = frame[columns[name]].astype("string").str.strip()
        return values.mask(values == "")

    ids, address, chan, why = text("customer_id"), text("address"), text("channel"), text("reason")
    if channel is not None and channel not in CHANNELS:
        raise DataError(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)})", field="--channel")
    chan = chan.str.lower().fillna(channel) if channel else chan.str.lower()
    is_email = address.str.contains("@", regex=False).fillna(False)
    address = address.mask(is_email, address.str.lower()).mask(~is_email, address.str.replace(r"[\s\-()]", "",
                                                                                                regex=True))
    chan = chan.fillna(pd.Series(pd.NA, index=frame.index, dtype="string").mask(address.notna() & is_email, "email")
                       .mask(address.notna() & ~is_email, "sms"))
    rows = []
    for i, (cid, addr, ch, r) in enumerate(zip(ids, address, chan, why, strict=True), start=1):
        if pd.isna(cid) and pd.isna(addr):
            raise DataError("neither a customer_id nor an address", file=source, row=i)
        if not pd.isna(ch) and ch not in CHANNELS:
            raise DataError(f"unknown channel {ch!r} (one of {', '.join(CHANNELS)})", file=source, row=i,
                            column="channel")
        key = str(cid) if not pd.isna(cid) else ADDRESS_ONLY + str(addr)
        for one in (CHANNELS if pd.isna(ch) else (ch,)):
            rows.append({"customer_id": key, "channel": one, "address": None if pd.isna(addr) else str(addr),
                         "reason": reason if pd.isna(r) else str(r), "source": source})
    return pd.DataFrame(rows, columns=["customer_id", "channel", "address", "reason", "source"])
