"""Signed unsubscribe tokens for the links in every message (verified by the events server).

A token is `<payload>.<signature>`, both URL-safe base64 without padding: the payload is the compact
JSON list `[campaign_id, customer_id, channel]`, the signature HMAC-SHA256 over a versioned domain
tag plus the payload, keyed with WINBACK_UNSUBSCRIBE_SECRET (read at the edge with
`winback.config.secret` and passed in here). Tokens do not expire: an unsubscribe link must keep
working for as long as the message sits in someone's inbox.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from urllib.parse import quote

from pydantic import SecretStr

from winback.errors import ConfigError, DataError
from winback.vocab import CHANNELS

_DOMAIN = b"winback-unsubscribe-v1\x00"


class InvalidUnsubscribeToken(DataError):
    """An unsubscribe token is malformed or its signature does not match (forged or altered)."""


def _key(secret: str | bytes | SecretStr | None) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not secret:
        raise ConfigError(
            "the unsubscribe secret is empty",
            hint="export WINBACK_UNSUBSCRIBE_SECRET=… (a long random string, e.g. `openssl rand -hex 32`)",
        )
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest())


def make_unsubscribe_token(campaign_id: str, customer_id: str, channel: str,
                           secret: str | bytes | SecretStr) -> str:
    """A URL-safe token naming (campaign, customer, channel), signed with HMAC-SHA256."""
    for name, value in (("campaign_id", campaign_id), ("customer_id", customer_id), ("channel", channel)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"unsubscribe token: {name} must be a non-empty string, got {value!r}")
    if channel not in CHANNELS:
        raise ConfigError(f"unsubscribe token: unknown channel {channel!r} (one of {', '.join(CHANNELS)})")
    payload = _b64(json.dumps([campaign_id, customer_id, channel], ensure_ascii=False,
                              separators=(",", ":")).encode("utf-8"))
    return f"{payload}.{_sign(_key(secret), payload)}"


def verify_unsubscribe_token(token: str, secret: str | bytes | SecretStr) -> tuple[str, str, str]:
    """Check a token's signature (constant time) and return `(campaign_id, customer_id, channel)`.

    Raises `InvalidUnsubscribeToken` (a `DataError`) when it is malformed or forged.
    """
    key = _key(secret)
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
        raise InvalidUnsubscribeToken("malformed unsubscribe token")
    payload, signature = token.split(".")
    try:
        payload.encode("ascii")
        signature.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidUnsubscribeToken("malformed unsubscribe token") from None
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise InvalidUnsubscribeToken("unsubscribe token signature does not match")
    try:
        fields = json.loads(_unb64(payload).decode("utf-8"))
    except (binascii.Error, ValueError):
        raise InvalidUnsubscribeToken("malformed unsubscribe token payload") from None
    if (not isinstance(fields, list) or len(fields) != 3
            or not all(isinstance(f, str) and f for f in fields) or fields[2] not in CHANNELS):
        raise InvalidUnsubscribeToken("malformed unsubscribe token payload")
    return fields[0], fields[1], fields[2]


def unsubscribe_url(public_url: str, token: str) -> str:
    """The link for a token: `{WINBACK_PUBLIC_URL}/unsubscribe/{token}` (the events server's path)."""
    if not public_url or not public_url.startswith(("https://", "http://")):
        raise ConfigError(
            f"public URL must start with https:// (got {public_url!r})",
            hint="export WINBACK_PUBLIC_URL=https://… (where `winback events-server` is reachable)",
        )
    return f"{public_url.rstrip('/')}/unsubscribe/{quote(token, safe='.-_')}"
