"""Delivery events and unsubscribe: signed provider webhooks and the one-click unsubscribe endpoint."""

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
