"""Call tasks for account managers: a call list per manager as CSV, and/or a post to a CRM webhook.

High-value lapsed B2B customers are better won back by a phone call from their account manager than
by an email. The "message" is a task: one CSV row per customer in `<out_dir>/<campaign_id>/<manager>.csv`
(UTF-8 with BOM so Excel opens Chinese names correctly), and optionally the same task posted to the
company's CRM through the signed webhook channel. Writing is idempotent by ledger key (a key already
in the file is not written twice), and lookup reads the file, so a crash between writing and
recording is reconciled exactly.

Every cell is escaped against formula injection (OWASP, "CSV Injection"): a cell starting with
`=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so a spreadsheet shows a customer
named `=cmd|' /C calc'!A0` as text instead of running it. Keys are unescaped when read back.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from winback.channels.base import LookupResult, OutboundMessage, SendResult, split_key
from winback.channels.webhook import WebhookChannel

COLUMNS = ("key", "campaign_id", "customer_id", "step", "account_manager", "customer_name", "phone", "email",
           "value_tier", "likely_reason", "offer", "coupon_code", "send_at_local", "script")


# First characters a spreadsheet reads as the start of a formula (OWASP CSV injection guidance).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading `'` before a formula-starting character."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def unescape_cell(value: str) -> str:
    """The value `escape_cell` was given."""
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


def unreachable(message: OutboundMessage) -> bool:
    """True when a call task carries neither a phone nor an e-mail to reach the customer on."""
    meta = message.metadata or {}
    return not str(meta.get("phone") or "").strip() and not str(meta.get("email") or "").strip()


def _merge_refused(messages: Sequence[OutboundMessage], sent: list[SendResult], refused: set[str],
                   provider: str) -> list[SendResult]:
    """The CRM's results in message order, with a refusal for each task that was not posted."""
    answers = iter(sent)
    return [SendResult(m.key, "permanent", provider, reason="no_phone_or_email") if m.key in refused
            else next(answers) for m in messages]


def _safe_name(name: str) -> str:
    """A file name for a manager (keeps CJK letters; strips path separators and control characters)."""
    cleaned = re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", "_", name).strip(" .")
    return cleaned or "unassigned"


class CallTaskChannel:
    """Call lists per account manager (CSV) and/or tasks posted to a CRM webhook."""

    name = "call_task"

    def __init__(self, out_dir: str | Path | None, *, crm: WebhookChannel | None = None) -> None:
        if out_dir is None and crm is None:
            raise ValueError("a call-task channel needs an output folder, a CRM webhook, or both")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.crm = crm
        self._seen: dict[Path, set[str]] = {}

    def __repr__(self) -> str:
        return f"CallTaskChannel(out_dir={str(self.out_dir)!r}, crm={self.crm!r})"

    def path_for(self, message: OutboundMessage) -> Path:
        """The CSV file of the message's campaign and account manager."""
        assert self.out_dir is not None
        campaign_id = split_key(message.key)[0]
        return self.out_dir / _safe_name(campaign_id) / f"{_safe_name(message.to or 'unassigned')}.csv"

    def _keys_in(self, path: Path) -> set[str]:
        if path not in self._seen:
            keys: set[str] = set()
            if path.exists():
                with path.open(encoding="utf-8-sig", newline="") as fh:
                    keys = {unescape_cell(row["key"]) for row in csv.DictReader(fh) if row.get("key")}
            self._seen[path] = keys
        return self._seen[path]

    def _row(self, message: OutboundMessage) -> dict[str, str]:
        campaign_id, customer_id, step = split_key(message.key)
        meta = {k: ("" if v is None else str(v)) for k, v in message.metadata.items()}
        return {name: escape_cell(value) for name, value in {
            "key": message.key, "campaign_id": campaign_id, "customer_id": customer_id, "step": str(step),
            "account_manager": message.to, "customer_name": meta.get("customer_name", ""),
            "phone": meta.get("phone", ""), "email": meta.get("email", ""),
            "value_tier": meta.get("value_tier", ""), "likely_reason": meta.get("likely_reason", ""),
            "offer": meta.get("offer", ""), "coupon_code": meta.get("coupon_code", ""),
            "send_at_local": meta.get("send_at_local", ""), "script": message.text or "",
        }.items()}

    def _write(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        results = []
        by_path: dict[Path, list[OutboundMessage]] = {}
        for m in messages:
            if not unreachable(m):
                by_path.setdefault(self.path_for(m), []).append(m)
            else:
                # A task nobody can act on is refused, not written to a manager's list.
                results.append(SendResult(m.key, "permanent", self.name, reason="no_phone_or_email"))
        for path, group in by_path.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                keys = self._keys_in(path)
                new = [m for m in group if m.key not in keys]
                if new:
                    fresh = not path.exists() or path.stat().st_size == 0
                    with path.open("a", encoding="utf-8-sig" if fresh else "utf-8", newline="") as fh:
                        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
                        if fresh:
                            writer.writeheader()
                        writer.writerows(self._row(m) for m in new)
                        fh.flush()
                    keys.update(m.key for m in new)
                results.extend(SendResult(m.key, "accepted", self.name, provider_message_id=f"{path.name}")
                               for m in group)
            except OSError as exc:
                results.extend(SendResult(m.key, "retryable", self.name, reason=f"file: {type(exc).__name__}")
                               for m in group)
        order = {m.key: i for i, m in enumerate(messages)}
        return sorted(results, key=lambda r: order[r.key])

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Write the call list rows (idempotent), then post to the CRM when one is configured. A task
        without a phone or an e-mail to reach the customer is refused (`no_phone_or_email`)."""
        results = self._write(messages) if self.out_dir is not None else None
        if self.crm is None:
            return results or []
        refused = {m.key for m in messages if unreachable(m)}
        crm_results = await self.crm.send([m for m in messages if m.key not in refused])
        crm_results = _merge_refused(messages, crm_results, refused, self.name)
        if results is None:
            return crm_results
        # A task counts as delivered when both the call list and the CRM have it.
        return [c if f.status == "accepted" else f for f, c in zip(results, crm_results, strict=True)]

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """Found when the key is in the call list (file mode) or the CRM says so."""
        if self.crm is not None:
            return await self.crm.lookup(key, message)
        if message is None:
            # Without the manager we search every list of the campaign.
            campaign_dir = self.out_dir / _safe_name(split_key(key)[0])
            paths = list(campaign_dir.glob("*.csv")) if campaign_dir.is_dir() else []
        else:
            paths = [self.path_for(message)]
        for path in paths:
            self._seen.pop(path, None)
            if key in self._keys_in(path):
                return LookupResult(key, "found", provider_message_id=path.name)
        return LookupResult(key, "not_found")
