"""Previews: one rendered sample per (template, channel, locale) from real customers of a plan, as files."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from winback.errors import ConfigError, WinbackError
from winback.render.renderer import Renderer

PREVIEW_UNSUBSCRIBE_BASE = "https://preview.invalid/unsubscribe/"
PREVIEW_COLUMNS = ["template", "channel", "locale", "customer_locales", "customer_id", "n_customers", "subject",
                   "sms_segments", "sms_encoding", "chars", "files", "warnings", "error"]


def _preview_url(row: Mapping[str, Any]) -> str:
    return f"{PREVIEW_UNSUBSCRIBE_BASE}{row.get('campaign_id', 'campaign')}.{row['customer_id']}"


def render_previews(plan: pd.DataFrame, renderer: Renderer, out_dir: str | Path, *,
                    unsubscribe_url_for: Callable[[Mapping[str, Any]], str] | None = None) -> pd.DataFrame:
    """Render one real customer per (template, channel, resolved locale) of the plan's treatment rows to
    `out_dir` (`<template>.<locale>.<channel>.html/.txt` and `index.html`); one row per preview.

    The sample is the first customer in customer_id order, so a re-run shows the same person.
    `unsubscribe_url_for(row)` builds the link (default: a `preview.invalid` placeholder, no secret needed).
    A template that fails to render is reported in the `error` column, not raised.
    """
    need = {"customer_id", "arm", "channel", "template", "locale", "context"}
    missing = sorted(need - set(plan.columns))
    if missing:
        raise ConfigError(f"plan lacks column(s) {', '.join(missing)}", field="plan")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url_for = unsubscribe_url_for or _preview_url
    rows = plan[(plan["arm"] == "treatment") & plan["template"].notna() & plan["channel"].notna()]
    rows = rows.sort_values("customer_id", kind="stable")
    records: list[dict[str, Any]] = []
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    resolved_cache: dict[tuple[str, str, str], str] = {}
    for row in rows[list({*need, *(["campaign_id"] if "campaign_id" in rows else [])})].to_dict("records"):
        locale = row["locale"] if isinstance(row["locale"], str) else ""
        key = (row["template"], row["channel"], locale)
        if key not in resolved_cache:
            try:
                resolved_cache[key] = renderer.resolve_locale(*key)
            except WinbackError as exc:
                resolved_cache[key] = f"!{exc}"
        resolved = resolved_cache[key]
        gkey = (row["template"], row["channel"], resolved)
        group = groups.get(gkey)
        if group is None:
            groups[gkey] = {"row": row, "n": 1, "locales": {locale or "(none)"}}
        else:
            group["n"] += 1
            group["locales"].add(locale or "(none)")
    for (template, channel, resolved), group in sorted(groups.items()):
        row = group["row"]
        rec: dict[str, Any] = {
            "template": template, "channel": channel, "locale": resolved.lstrip("!") if not resolved.startswith("!")
            else "", "customer_locales": ", ".join(sorted(group["locales"])), "customer_id": row["customer_id"],
            "n_customers": group["n"], "subject": None, "sms_segments": None, "sms_encoding": None, "chars": None,
            "files": "", "warnings": "", "error": "",
        }
        if resolved.startswith("!"):
            rec["error"] = resolved[1:]
            records.append(rec)
            continue
        try:
            msg = renderer.render(template, channel, row["locale"], row["context"],
                                  unsubscribe_url=url_for(row) if channel == "email" else None)
        except WinbackError as exc:
            rec["error"] = str(exc)
            records.append(rec)
            continue
        stem = f"{template}.{resolved}.{channel}"
        files = []
        if msg.html is not None:
            (out / f"{stem}.html").write_text(msg.html, encoding="utf-8")
            files.append(f"{stem}.html")
        header = f"Subject: {msg.subject}\n\n" if msg.subject else ""
        (out / f"{stem}.txt").write_text(header + msg.text + "\n", encoding="utf-8")
        files.append(f"{stem}.txt")
        warnings = []
        if msg.sms_segments is not None and msg.sms_segments > renderer.max_sms_segments:
            warnings.append(f"SMS is {msg.sms_segments} segments (max {renderer.max_sms_segments})")
        rec.update(subject=msg.subject, sms_segments=msg.sms_segments, sms_encoding=msg.sms_encoding,
                   chars=len(msg.text), files=" ".join(files), warnings="; ".join(warnings))
        records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=PREVIEW_COLUMNS)
    frame["sms_segments"] = frame["sms_segments"].astype("Int64")
    frame["chars"] = frame["chars"].astype("Int64")
    (out / "index.html").write_text(_index_html(frame), encoding="utf-8")
    return frame


def text_cell(value: Any) -> str:
    """A cell as display text: "" for None/NaN/NA."""
    return "" if value is None or value is pd.NA or (isinstance(value, float) and value != value) else str(value)


def _index_html(frame: pd.DataFrame) -> str:
    def e(value: Any) -> str:
        return html.escape(text_cell(value))

    lines = []
    for rec in frame.to_dict("records"):
        links = " ".join(f'<a href="{e(f)}">{e(f.rsplit(".", 1)[-1])}</a>' for f in text_cell(rec["files"]).split())
        seg = "" if pd.isna(rec["sms_segments"]) else f"{rec['sms_segments']} ({rec['sms_encoding']})"
        note = e(text_cell(rec["error"]) or text_cell(rec["warnings"]))
        lines.append(
            f"<tr><td>{e(rec['template'])}</td><td>{e(rec['channel'])}</td><td>{e(rec['locale'])}</td>"
            f"<td>{e(rec['customer_locales'])}</td><td>{e(rec['customer_id'])}</td>"
            f"<td style=\"text-align:right\">{rec['n_customers']:,}</td><td>{e(rec['subject'])}</td>"
            f"<td>{seg}</td><td>{links}</td><td style=\"color:#a8543c\">{note}</td></tr>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>winback previews</title>"
        "<style>body{font-family:Helvetica,Arial,sans-serif;margin:24px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:6px 10px;font-size:14px;vertical-align:top}th{background:#f5f2ed}"
        "</style></head><body><h1>Message previews</h1>"
        "<p>One real customer of the plan per template, channel and locale. Nothing was sent.</p>"
        "<table><tr><th>template</th><th>channel</th><th>locale</th><th>customer locales</th><th>sample customer</th>"
        "<th>customers</th><th>subject</th><th>SMS segments</th><th>files</th><th>notes</th></tr>\n"
        + "\n".join(lines) + "\n</table></body></html>\n"
    )
