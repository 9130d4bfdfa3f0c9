"""Turn each provider's webhook payload into `DeliveryEvent`s the ledger understands (pure).

Our ledger key (`campaign:customer:step`, see `winback.channels.base.message_key`) travels with
every message: SendGrid `custom_args` (echoed as top-level fields of each event), Mailgun `v:`
variables (echoed in `event-data.user-variables`), and the Twilio `StatusCallback` URL's query.
Explicit `campaign_id` / `customer_id` / `step` fields win over the packed key (customer ids may
contain ':').

Provider vocabulary → ledger delivery status (anything else is stored but changes nothing):
- SendGrid: delivered, open→opened, click→clicked, bounce→bounced (type `blocked` → failed: a
  temporary block, not a dead address), dropped→failed, spamreport→complained,
  unsubscribe / group_unsubscribe→unsubscribed.
- Twilio: delivered, read→opened, undelivered/failed→failed, except error 21610 (recipient replied
  STOP) → unsubscribed and errors meaning the number cannot receive SMS → bounced.
- Mailgun: delivered, opened, clicked, complained, unsubscribed, failed with severity `permanent`
  → bounced (temporary failures are retried by Mailgun and change nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from winback.errors import DataError

# Twilio error codes meaning the number itself cannot get messages (invalid / unreachable for good /
# landline / not a mobile number): treated as a hard bounce. 21610 is the STOP opt-out.
TWILIO_UNSUBSCRIBED = "21610"
TWILIO_DEAD_NUMBER = frozenset({"21211", "21614", "30005", "30006"})

_SENDGRID = {
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "failed",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
_MAILGUN = {
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}


@dataclass(frozen=True)
class DeliveryEvent:
    """One provider event, normalised: what `Ledger.record_event` takes."""

    provider: str
    provider_event_id: str
    event: str
    occurred_at: pd.Timestamp | None = None
    campaign_id: str | None = None
    customer_id: str | None = None
    step: int | None = None
    channel: str | None = None
    provider_message_id: str | None = None
    address: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Ledger.record_event`."""
        return {
            "provider": self.provider,
            "provider_event_id": self.provider_event_id,
            "event": self.event,
            "occurred_at": self.occurred_at,
            "campaign_id": self.campaign_id,
            "customer_id": self.customer_id,
            "step": self.step,
            "channel": self.channel,
            "provider_message_id": self.provider_message_id,
            "address": self.address,
            "payload": json.dumps(self.payload, ensure_ascii=False, default=str),
        }


def split_ledger_key(values: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
    """Our key from explicit campaign_id/customer_id/step fields, else from a packed `winback_key`."""
    campaign, customer, step = values.get("campaign_id"), values.get("customer_id"), values.get("step")
    if campaign and customer:
        return str(campaign), str(customer), _int_or_none(step)
    key = values.get("winback_key")
    if isinstance(key, str) and key.count(":") >= 2:
        from winback.channels.base import split_key

        try:
            return split_key(key)
        except ValueError:
            return None, None, None
    return None, None, None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value) != "" else None
    except (TypeError, ValueError):
        return None


def _epoch(value: Any) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(float(value), unit="s", tz="UTC")
    except (TypeError, ValueError, OverflowError):
        return None


def sendgrid_events(payload: Any) -> list[DeliveryEvent]:
    """Normalise a SendGrid Event Webhook body (a JSON array of event objects)."""
    if not isinstance(payload, list):
        raise DataError("SendGrid event webhook body must be a JSON array")
    out = []
    for i, item in enumerate(payload, start=1):
        if not isinstance(item, dict) or not item.get("event"):
            raise DataError("SendGrid event without an `event` field", row=i)
        raw = str(item["event"])
        event = _SENDGRID.get(raw, raw)
        if raw == "bounce" and item.get("type") == "blocked":
            event = "failed"
        # sg_message_id is the X-Message-Id returned at send time plus ".filter…" routing suffixes.
        message_id = str(item.get("sg_message_id") or "").split(".", 1)[0] or None
        event_id = item.get("sg_event_id") or f"{message_id}:{raw}:{item.get('timestamp')}"
        campaign, customer, step = split_ledger_key(item)
        out.append(DeliveryEvent("sendgrid", str(event_id), event, _epoch(item.get("timestamp")), campaign,
                                 customer, step, "email", message_id, item.get("email"), item))
    return out


def twilio_event(form: dict[str, str], query: dict[str, str]) -> DeliveryEvent:
    """Normalise a Twilio Messaging status callback (form fields; our key in the callback URL's query)."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not status:
        raise DataError("Twilio status callback without MessageSid / MessageStatus")
    code = (form.get("ErrorCode") or "").strip()
    if status in ("undelivered", "failed"):
        event = ("unsubscribed" if code == TWILIO_UNSUBSCRIBED
                 else "bounced" if code in TWILIO_DEAD_NUMBER else "failed")
    else:
        event = {"delivered": "delivered", "read": "opened"}.get(status, status)
    campaign, customer, step = split_ledger_key({**query, **{k: v for k, v in form.items()
                                                             if k in ("campaign_id", "customer_id", "step")}})
    # Twilio sends no event id: one callback per (message, status, error) is what dedup needs.
    event_id = f"{sid}:{status}:{code}"
    return DeliveryEvent("twilio", event_id, event, None, campaign, customer, step, "sms", sid, form.get("To"),
                         dict(form))


def mailgun_event(payload: Any) -> DeliveryEvent:
    """Normalise a Mailgun webhook body (`{"signature": …, "event-data": …}`)."""
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or not data.get("event"):
        raise DataError("Mailgun webhook without `event-data.event`")
    raw = str(data["event"])
    event = _MAILGUN.get(raw, raw)
    if raw == "failed":
        event = "bounced" if data.get("severity") == "permanent" else "deferred"
    headers = (data.get("message") or {}).get("headers") or {}
    message_id = str(headers.get("message-id") or "").strip("<>") or None
    variables = data.get("user-variables") or {}
    campaign, customer, step = split_ledger_key(variables if isinstance(variables, dict) else {})
    event_id = data.get("id") or f"{message_id}:{raw}:{data.get('timestamp')}"
    return DeliveryEvent("mailgun", str(event_id), event, _epoch(data.get("timestamp")), campaign, customer, step,
                         "email", message_id, data.get("recipient"), data)
