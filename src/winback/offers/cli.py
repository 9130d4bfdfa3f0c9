"""`winback coupons export --campaign ID --out PATH`: the coupon codes a campaign gave, for the shop to load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

EXPORT_COLUMNS = ["code", "campaign_id", "customer_id", "offer", "offer_kind", "value", "percent", "amount",
                  "min_spend", "max_discount", "points", "currency", "valid_from", "valid_until", "status"]


def register(app: typer.Typer) -> None:
    """Add `coupons export` to the winback command line."""
    group = typer.Typer(help="Single-use coupon codes the campaigns gave.", no_args_is_help=True)
    app.add_typer(group, name="coupons")

    @group.command("export")
    def export_cmd(
        campaign: Annotated[str, typer.Option("--campaign", help="The campaign id (as in the ledger).")],
        out: Annotated[Path, typer.Option("--out", help="File to write, .csv or .parquet.")],
        ledger: Annotated[str | None, typer.Option("--ledger", help="Ledger URL (default WINBACK_LEDGER_URL).")] = None,
    ) -> None:
        """Write one row per code: code, offer, value, validity (from its first send) and whether it went out."""
        from winback.errors import DataError
        from winback.resources import Resources, RunSettings
        from winback.sources.files import table_format, write_table

        table_format(out)
        with Resources(RunSettings.from_env(ledger_url=ledger)) as resources:
            rows = resources.ledger.rows(campaign)
            known = resources.ledger.campaigns()
        if rows.empty:
            raise DataError(f"no campaign {campaign!r} in the ledger; known: {', '.join(known[:20]) or '(none)'}")
        codes = coupon_export(rows)
        write_table(codes, out)
        sent = int((codes["status"] == "sent").sum())
        typer.echo(f"Wrote {len(codes):,} coupon code(s) of {campaign} to {out} ({sent:,} sent)")


def coupon_export(rows):
    """One row per coupon code of a campaign's ledger rows (treatment): the issuing row's offer and value,
    valid from its first send (or planned send) until the offer's expiry, and `sent` when any message
    carrying it went out, `planned` while one may still go, else `not_sent`."""
    import pandas as pd

    rows = rows[(rows["arm"] == "treatment") & rows["coupon_code"].notna()].sort_values(["coupon_code", "step"])
    if rows.empty:
        return pd.DataFrame(columns=EXPORT_COLUMNS)
    state = rows["state"].astype("string")
    first = rows.drop_duplicates("coupon_code", keep="first")
    by_code = rows.groupby("coupon_code")
    sent = by_code["state"].apply(lambda s: (s == "sent").any())
    pending = by_code["state"].apply(lambda s: s.isin(["planned", "sending", "uncertain"]).any())
    when = pd.to_datetime(rows["sent_at"], utc=True).where(state == "sent")
    first_sent = when.groupby(rows["coupon_code"]).min()
    out = []
    for rec in first.to_dict("records"):
        offer = _offer(rec.get("context"))
        code = rec["coupon_code"]
        start = first_sent.get(code)
        start = start if start is not None and not pd.isna(start) else rec.get("send_at_utc")
        out.append({
            "code": code, "campaign_id": rec["campaign_id"], "customer_id": rec["customer_id"],
            "offer": rec.get("offer"), "offer_kind": rec.get("offer_kind"), "value": describe(offer),
            "percent": offer.get("percent"), "amount": offer.get("amount"), "min_spend": offer.get("min_spend"),
            "max_discount": offer.get("max_discount"), "points": offer.get("points"),
            "currency": offer.get("currency"),
            "valid_from": None if start is None or pd.isna(start) else pd.Timestamp(start).date().isoformat(),
            "valid_until": offer.get("expires_at"),
            "status": "sent" if sent[code] else ("planned" if pending[code] else "not_sent"),
        })
    return pd.DataFrame(out, columns=EXPORT_COLUMNS)


def _offer(context) -> dict:
    if not isinstance(context, str):
        return {}
    try:
        return json.loads(context).get("offer") or {}
    except (ValueError, AttributeError):
        return {}


def describe(offer: dict) -> str:
    """The offer's value in words the shop's system can be set up from: `15% off (max 200)`, `50 off from 300`."""
    kind, currency = offer.get("kind"), offer.get("currency") or ""
    if kind == "percent_off" and offer.get("percent") is not None:
        text = f"{offer['percent']:g}% off"
        if offer.get("max_discount"):
            text += f" (max {offer['max_discount']:g} {currency})".replace(" )", ")")
    elif kind == "amount_off" and offer.get("amount") is not None:
        text = f"{offer['amount']:g} {currency} off".replace("  ", " ")
    elif kind == "bonus_points" and offer.get("points") is not None:
        text = f"{offer['points']:g} bonus points"
    elif kind == "free_shipping":
        text = "free shipping"
    elif kind == "birthday_gift":
        text = "birthday gift" + (f" + {offer['amount']:g} {currency} off" if offer.get("amount") else "")
    else:
        text = kind or ""
    if offer.get("min_spend"):
        text += f" from {offer['min_spend']:g} {currency}".rstrip()
    return text
