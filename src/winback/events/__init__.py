"""Delivery events and unsubscribe: signed provider webhooks and the one-click unsubscribe endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "DeliveryEvent",
    "SignatureError",
    "create_app",
    "load_sendgrid_public_key",
    "mailgun_event",
    "mailgun_signature",
    "sendgrid_events",
    "twilio_event",
    "twilio_signature",
    "verify_mailgun",
    "verify_sendgrid",
    "verify_twilio",
]

if TYPE_CHECKING:
    from winback.events.app import create_app
    from winback.events.normalize import DeliveryEvent, mailgun_event, sendgrid_events, twilio_event
    from winback.events.signatures import (
        SignatureError,
        load_sendgrid_public_key,
        mailgun_signature,
        twilio_signature,
        verify_mailgun,
        verify_sendgrid,
        verify_twilio,
    )

_HOME = {
    "create_app": "app",
    "DeliveryEvent": "normalize",
    "mailgun_event": "normalize",
    "sendgrid_events": "normalize",
    "twilio_event": "normalize",
    "SignatureError": "signatures",
    "load_sendgrid_public_key": "signatures",
    "mailgun_signature": "signatures",
    "twilio_signature": "signatures",
    "verify_mailgun": "signatures",
    "verify_sendgrid": "signatures",
    "verify_twilio": "signatures",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.events.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.events' has no attribute {name!r}")
