"""Email through any SMTP server with aiosmtplib (one connection per batch, STARTTLS when asked).

Each message gets a deterministic `Message-ID` derived from the ledger key (so a receiving system
and the emulator can find it again), an `X-Winback-Key` header, and the RFC 2369 / RFC 8058
List-Unsubscribe headers passed in by the engine. SMTP reply codes map as RFC 5321 §4.2.1 says:
4yz transient (retry), 5yz permanent; 550/551/553 on RCPT mean the address does not exist.
SMTP has no way to ask a server whether it already has a message, so lookup is `unknown` unless a
lookup URL is configured (the emulator offers one).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib
import httpx
from pydantic import SecretStr

from winback.channels.base import LookupResult, OutboundMessage, SendResult, format_address

_INVALID_RCPT = {550, 551, 553}


def message_id_for(key: str, domain: str) -> str:
    """A stable Message-ID for a ledger key."""
    return f"<wb.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


class SmtpChannel:
    """Email over SMTP."""

    name = "smtp"

    def __init__(self, host: str, port: int = 587, *, username: str | None = None,
                 password: SecretStr | None = None, start_tls: bool | None = None, use_tls: bool = False,
                 timeout: float = 30.0, message_id_domain: str = "winback.local",
                 lookup_url: str | None = None, client: httpx.AsyncClient | None = None) -> None:
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
        mail = EmailMessage()
        mail["From"] = format_address(message.from_, message.from_name)
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = formatdate(localtime=False, usegmt=True)
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
            return [SendResult(m.key, "permanent", self.name, reason=f"auth_rejected: smtp_{exc.code}")
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
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
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
            hits = [m for m in response.json().get("messages", []) if m.get("provider") == "smtp"]
            if hits:
                return LookupResult(key, "found", provider_message_id=hits[0].get("id"))
            return LookupResult(key, "not_found")
        return LookupResult(key, "unknown", reason=f"http_{response.status_code}")
