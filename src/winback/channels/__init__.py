"""Delivery: one `Channel` protocol, one adapter per provider, the local emulator, and the send engine.

Adapters: `sendgrid`, `mailgun`, `twilio`, `smtp`, `webhook`, `call_task`. `providers` holds the
settings, the shared HTTP client and the `Router`; `emulator` the local provider emulator;
`dispatch` the exactly-once send engine behind `winback send`.
"""

from winback.channels.base import (
    Channel,
    LookupResult,
    OutboundMessage,
    SendResult,
    message_key,
    parse_retry_after,
    unsubscribe_headers,
)

__all__ = [
    "Channel",
    "LookupResult",
    "OutboundMessage",
    "SendResult",
    "message_key",
    "parse_retry_after",
    "unsubscribe_headers",
]
