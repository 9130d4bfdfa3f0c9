"""Email through any SMTP server with aiosmtplib (one connection per batch, STARTTLS when asked).

Each message gets a deterministic `Message-ID` derived from the ledger key (so a receiving system
and the emulator can find it again), an `X-Winback-Key` header, and the RFC 2369 / RFC 8058
List-Unsubscribe headers passed in by the engine — written as plain ASCII, folded only between their
`<…>` entries: the mail library's default folding turns a long value into RFC 2047 encoded words
(`=?utf-8?q?=3Chttps…`), which List-Unsubscribe parsers and one-click senders do not decode. SMTP reply codes map as RFC 5321 §4.2.1 says:
4yz transient (retry), 5yz permanent; 550/551/553 on RCPT mean the address does not exist.
SMTP has no way to ask a server whether it already has a message, so lookup is `unknown` unless a
lookup URL is configured (the emulator offers one).
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import re
import sys
import urllib.parse
from collections.abc import Sequence
from datetime import UTC
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING

import aiosmtplib
import httpx
from pydantic import SecretStr

from winback.channels.base import LookupResult, OutboundMessage, SendResult, format_address

if TYPE_CHECKING:
    from winback.clock import Clock

_INVALID_RCPT = {550, 551, 553}
_BETWEEN_ENTRIES = re.compile(r"(?<=>)\s*,\s*(?=<)")


class UriListHeader(UnstructuredHeader):
    """An ASCII header made of `<…>` entries (RFC 2369 List-*): folded only after the commas between
    entries, never encoded. A line may then exceed 78 characters (an entry is never split); RFC 5322's
    hard limit is 998.
    """

    def fold(self, *, policy) -> str:
        value = str(self)
        if not value.isascii():  # not ours to write raw; the library's encoded form is then the only option
            return super().fold(policy=policy)
        maxlen = policy.max_line_length or sys.maxsize
        entries = _BETWEEN_ENTRIES.split(" ".join(value.split()))
        lines, line = [], f"{self.name}: {entries[0]}"
        for entry in entries[1:]:
            if len(line) + 2 + len(entry) <= maxlen:
                line = f"{line}, {entry}"
            else:
                lines.append(f"{line},")
                line = f" {entry}"
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


def _policy() -> email.policy.EmailPolicy:
    registry = HeaderRegistry()
    for name in ("list-unsubscribe", "list-unsubscribe-post"):
        registry.map_to_type(name, UriListHeader)
    return email.policy.default.clone(header_factory=registry)


# The header objects made by this policy fold themselves, whatever policy the SMTP client flattens with.
MAIL_POLICY = _policy()


def message_id_for(key: str, domain: str) -> str:
    """A stable Message-ID for a ledger key."""
    return f"<wb.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


class SmtpChannel:
    """Email over SMTP."""

    name = "smtp"

    def __init__(self, host: str, port: int = 587, *, username: str | None = None,
                 password: SecretStr | None = None, start_tls: bool | None = None, use_tls: bool = False,
                 timeout: float = 30.0, message_id_domain: str = "winback.local",
                 lookup_url: str | None = None, client: httpx.AsyncClient | None = None,
                 clock: Clock | None = None) -> None:
        if clock is None:
            from winback.clock import SystemClock

            clock = SystemClock()
        self._clock = clock  # for the Date header: the real time
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.start_tls = start_tls
        self.use_tls = use_tls
        self.timeout = timeout
        self.message_id_domain = message_id_domain
        self.lookup_url = lookup_url
        self._client = client

    def __repr__(self) -> str:
        return f"SmtpChannel(host={self.host!r}, port={self.port!r}, username={self.username!r})"

    def mime(self, message: OutboundMessage) -> EmailMessage:
        """The MIME message (text and HTML alternatives) for one outbound message."""
        mail = EmailMessage(policy=MAIL_POLICY)
        mail["From"] = format_address(message.from_, message.from_name)
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = format_datetime(self._clock.now_datetime().astimezone(UTC), usegmt=True)
        mail["Message-ID"] = message_id_for(message.key, self.message_id_domain)
        mail["X-Winback-Key"] = message.key
        for name, value in message.headers.items():
            if name.lower() not in {"from", "to", "subject", "date", "message-id"}:
                mail[name] = value
        mail.set_content(message.text or "")
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send the messages over one SMTP connection; one result per message."""
        if not messages:
            return []
        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.timeout, use_tls=self.use_tls,
                               start_tls=self.start_tls)
        try:
            await smtp.connect()
            if self.username and self._password is not None:
                await smtp.login(self.username, self._password.get_secret_value())
        except aiosmtplib.SMTPAuthenticationError as exc:
            # The login, not the message: the engine stops email for the run and the rows stay planned.
            return [SendResult(m.key, "permanent", self.name, scope="account",
                               reason=f"auth_rejected: The SMTP server rejected the SMTP login (smtp_{exc.code})")
                    for m in messages]
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Nothing was handed over yet: retrying cannot duplicate.
            return [SendResult(m.key, "retryable", self.name, reason=f"connect: {type(exc).__name__}")
                    for m in messages]
        results = []
        try:
            for i, message in enumerate(messages):
                result = await self._send_one(smtp, message)
                results.append(result)
                if result.status == "retryable" and result.reason and result.reason.startswith("transport"):
                    # The connection is gone; the rest were never attempted.
                    results.extend(SendResult(m.key, "retryable", self.name, reason="connection lost")
                                   for m in messages[i + 1:])
                    break
        finally:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
        return results

    async def _send_one(self, smtp: aiosmtplib.SMTP, message: OutboundMessage) -> SendResult:
        mail = self.mime(message)
        try:
            # aiosmtplib's timeout is per read: a server trickling its replies would hold us for ever.
            async with asyncio.timeout(self.timeout * 3):
                await smtp.send_message(mail)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [err.code for err in exc.recipients]
            code = codes[0] if codes else 550
            if code >= 500:
                suppress = "invalid_address" if code in _INVALID_RCPT else None
                return SendResult(message.key, "permanent", self.name, reason=f"smtp_{code}: recipient refused",
                                  suppress=suppress)
            return SendResult(message.key, "retryable", self.name, reason=f"smtp_{code}: recipient deferred")
        except aiosmtplib.SMTPResponseException as exc:
            kind = "permanent" if 500 <= exc.code < 600 else "retryable"
            return SendResult(message.key, kind, self.name, reason=f"smtp_{exc.code}: {exc.message[:120]}")
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, TimeoutError) as exc:
            # The server may have queued the message before the connection dropped.
            return SendResult(message.key, "retryable", self.name, reason=f"transport: {type(exc).__name__}",
                              ambiguous=True)
        except aiosmtplib.SMTPException as exc:
            return SendResult(message.key, "retryable", self.name, reason=f"smtp: {type(exc).__name__}")
        return SendResult(message.key, "accepted", self.name, provider_message_id=mail["Message-ID"])

    async def lookup(self, key: str, message: OutboundMessage | None = None) -> LookupResult:
        """`unknown` for a plain SMTP server; the configured lookup URL (the emulator's) otherwise."""
        if not self.lookup_url or self._client is None:
            return LookupResult(key, "unknown", reason="SMTP offers no way to find a sent message")
        url = self.lookup_url.replace("{key}", urllib.parse.quote(key, safe=""))
        try:
            response = await self._client.get(url, timeout=10.0)
        except httpx.HTTPError as exc:
            return LookupResult(key, "unknown", reason=f"transport: {type(exc).__name__}")
        if response.status_code == 200:
            try:
                hits = [m for m in response.json().get("messages", []) if m.get("provider") == "smtp"]
            except (ValueError, AttributeError, TypeError):
                return LookupResult(key, "unknown", reason="unreadable lookup answer")
            if hits:
                return LookupResult(key, "found", provider_message_id=hits[0].get("id"))
            return LookupResult(key, "not_found")
        return LookupResult(key, "unknown", reason=f"http_{response.status_code}")
