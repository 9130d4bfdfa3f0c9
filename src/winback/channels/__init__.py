"""Delivery: one `Channel` protocol, one adapter per provider, the local emulator, and the send engine.

Adapters: `sendgrid`, `mailgun`, `twilio`, `smtp`, `webhook`, `call_task`. `providers` holds the
settings, the shared HTTP client and the `Router`; `emulator` the local provider emulator;
`dispatch` the exactly-once send engine behind `winback send`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Channel",
    "LookupResult",
    "OutboundMessage",
    "SendResult",
    "message_key",
    "parse_retry_after",
    "unsubscribe_headers",
]

if TYPE_CHECKING:
    from winback.channels.base import (
        Channel,
        LookupResult,
        OutboundMessage,
        SendResult,
        message_key,
        parse_retry_after,
        unsubscribe_headers,
    )

_HOME = {
    "Channel": "base",
    "LookupResult": "base",
    "OutboundMessage": "base",
    "SendResult": "base",
    "message_key": "base",
    "parse_retry_after": "base",
    "unsubscribe_headers": "base",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.channels.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.channels' has no attribute {name!r}")
