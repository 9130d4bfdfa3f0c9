"""Verification of the providers' webhook signatures (pure functions: the clock is a parameter).

- SendGrid Signed Event Webhook: ECDSA P-256 / SHA-256 over `timestamp + raw body`; the signature
  (base64 DER) and the timestamp arrive in `X-Twilio-Email-Event-Webhook-Signature` /
  `-Timestamp`; the verification key is shown in SendGrid's settings as base64 DER
  (SubjectPublicKeyInfo). Same scheme as `sendgrid.helpers.eventwebhook.EventWebhook`.
- Twilio: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, full URL + every POST parameter
  name and value, sorted by name, concatenated)). Same as `twilio.request_validator.RequestValidator`.
  Twilio signs no timestamp, so replays are caught by event de-duplication instead.
- Mailgun: `signature.signature` = hex(HMAC-SHA256(webhook signing key, timestamp + token)).

Every comparison is constant-time; every failure raises `SignatureError` (→ 403, nothing recorded).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from winback.errors import ConfigError, WinbackError

# How old (or how far in the future) a signed timestamp may be; older requests are replays.
DEFAULT_MAX_AGE_S = 300.0


class SignatureError(WinbackError):
    """A webhook's signature is missing, forged or stale."""


def load_sendgrid_public_key(key: str) -> ec.EllipticCurvePublicKey:
    """Read SendGrid's verification key (base64 DER as SendGrid shows it, or PEM) as a P-256 public key."""
    text = key.strip()
    try:
        if text.startswith("-----BEGIN"):
            loaded = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            loaded = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError, UnicodeEncodeError):
        raise ConfigError("the SendGrid webhook verification key is not a base64 DER or PEM public key",
                          field="WINBACK_SENDGRID_WEBHOOK_PUBLIC_KEY") from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != "secp256r1":
        raise ConfigError("the SendGrid webhook verification key is not an ECDSA P-256 key",
                          field="WINBACK_SENDGRID_WEBHOOK_PUBLIC_KEY")
    return loaded


def _check_age(timestamp: str | None, now: float, max_age_s: float) -> None:
    try:
        ts = float(timestamp or "")
    except ValueError:
        raise SignatureError("signature timestamp is not a number") from None
    if abs(now - ts) > max_age_s:
        raise SignatureError(f"signature timestamp is stale (more than {max_age_s:.0f} s from now)")


def verify_sendgrid(
    public_key: ec.EllipticCurvePublicKey,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> None:
    """Check a SendGrid Event Webhook request (ECDSA over timestamp + raw body) and its age."""
    if not signature or not timestamp:
        raise SignatureError("missing X-Twilio-Email-Event-Webhook-Signature or -Timestamp header")
    _check_age(timestamp, now, max_age_s)
    try:
        der = base64.b64decode(signature, validate=True)
        public_key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        raise SignatureError("SendGrid signature does not match") from None


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Compute Twilio's X-Twilio-Signature for a URL and its POST parameters."""
    # Sorted by name; a repeated name contributes each distinct value in sorted order (as Twilio's
    # own RequestValidator.compute_signature does).
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _with_and_without_port(url: str) -> list[str]:
    """The URL as signed may or may not carry the default port (Twilio's validator tries both)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    candidates = [url]
    if parts.port is None and default and parts.hostname:
        candidates.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))
    elif parts.port == default and parts.hostname:
        netloc = parts.netloc.rsplit(":", 1)[0]
        candidates.append(urlunsplit(parts._replace(netloc=netloc)))
    return candidates


def verify_twilio(auth_token: str, urls: Iterable[str], params: Iterable[tuple[str, str]],
                  signature: str | None) -> None:
    """Check X-Twilio-Signature against any of the URLs the request may have been signed for."""
    if not signature:
        raise SignatureError("missing X-Twilio-Signature header")
    items = list(params)
    for url in urls:
        for candidate in _with_and_without_port(url):
            if hmac.compare_digest(twilio_signature(auth_token, candidate, items), signature):
                return
    raise SignatureError("Twilio signature does not match")


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """Compute Mailgun's webhook signature: hex HMAC-SHA256 of timestamp + token."""
    return hmac.new(signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest()


def verify_mailgun(
    signing_key: str,
    signature_block: object,
    *,
    now: float,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> None:
    """Check the `signature` object of a Mailgun webhook (`{timestamp, token, signature}`) and its age."""
    if not isinstance(signature_block, dict):
        raise SignatureError("missing Mailgun signature object")
    timestamp = signature_block.get("timestamp")
    token = signature_block.get("token")
    signature = signature_block.get("signature")
    if not all(isinstance(v, str | int) and str(v) for v in (timestamp, token, signature)):
        raise SignatureError("incomplete Mailgun signature object")
    _check_age(str(timestamp), now, max_age_s)
    expected = mailgun_signature(signing_key, str(timestamp), str(token))
    if not hmac.compare_digest(expected, str(signature)):
        raise SignatureError("Mailgun signature does not match")
