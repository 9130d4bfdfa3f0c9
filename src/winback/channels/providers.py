"""Provider settings (YAML), the shared HTTP client, and the router from a plan's channel to an adapter.

A provider-config file names base URLs, senders and account ids; secrets are never in the file, only
the names of the environment variables (or Prefect Secret blocks, via `winback.config.secret`) that
hold them:

```yaml
email: sendgrid            # sendgrid | mailgun | smtp
sender_email: club@example.com
sender_name: 示例会员俱乐部
sms_from: "+8610690000"
unsubscribe_mailto: unsubscribe@example.com
public_url: https://events.example.com     # base of one-click unsubscribe links
timeout_s: 10              # per connect / read; one whole request may take deadline_s (default 3 × timeout_s)
max_connections: 64
rate_limits: {sendgrid: 500, twilio: 50}   # messages per second per provider
sendgrid: {base_url: https://api.sendgrid.com, api_key_env: WINBACK_SENDGRID_API_KEY}
twilio: {account_sid_env: WINBACK_TWILIO_ACCOUNT_SID, auth_token_env: WINBACK_TWILIO_AUTH_TOKEN}
webhook: {url: https://push.example.com/hooks/wechat}
call_task: {out_dir: call-lists}
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from winback.channels.base import Channel
from winback.errors import ConfigError

Transport = Literal["aiohttp", "httpx"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendGridSettings(_Settings):
    base_url: str = "https://api.sendgrid.com"
    api_key_env: str = "WINBACK_SENDGRID_API_KEY"
    api_key: SecretStr | None = Field(default=None, exclude=True)


class MailgunSettings(_Settings):
    base_url: str = "https://api.mailgun.net"
    domain: str | None = None
    domain_env: str = "WINBACK_MAILGUN_DOMAIN"
    api_key_env: str = "WINBACK_MAILGUN_API_KEY"
    api_key: SecretStr | None = Field(default=None, exclude=True)


class TwilioSettings(_Settings):
    base_url: str = "https://api.twilio.com"
    account_sid: str | None = None
    account_sid_env: str = "WINBACK_TWILIO_ACCOUNT_SID"
    auth_token_env: str = "WINBACK_TWILIO_AUTH_TOKEN"
    auth_token: SecretStr | None = Field(default=None, exclude=True)
    messaging_service_sid: str | None = None
    status_callback: str | None = None


class SmtpSettings(_Settings):
    host: str = "127.0.0.1"
    port: int = 587
    username: str | None = None
    password_env: str = "WINBACK_SMTP_PASSWORD"
    password: SecretStr | None = Field(default=None, exclude=True)
    start_tls: bool | None = None
    use_tls: bool = False
    message_id_domain: str = "winback.local"
    lookup_url: str | None = None


class WebhookSettings(_Settings):
    url: str
    secret_env: str = "WINBACK_WEBHOOK_SECRET"
    secret: SecretStr | None = Field(default=None, exclude=True)
    lookup_url: str | None = None
    name: str = "webhook"


class CallTaskSettings(_Settings):
    out_dir: str | None = "call-lists"
    crm: WebhookSettings | None = None


class ProviderConfig(_Settings):
    """Everything the channels need except secrets' values."""

    email: Literal["sendgrid", "mailgun", "smtp"] = "sendgrid"
    sender_email: str = "winback@example.com"
    sender_name: str | None = None
    sms_from: str | None = None
    unsubscribe_mailto: str | None = None
    public_url: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    deadline_s: float | None = Field(default=None, gt=0)  # one whole request, connect to last byte
    max_response_bytes: int = Field(default=1 << 20, ge=1024)  # a provider answer larger than this is abandoned
    max_connections: int = Field(default=64, ge=1)
    transport: Transport = "aiohttp"
    rate_limits: dict[str, float] = Field(default_factory=dict)
    sendgrid: SendGridSettings | None = None
    mailgun: MailgunSettings | None = None
    twilio: TwilioSettings | None = None
    smtp: SmtpSettings | None = None
    webhook: WebhookSettings | None = None
    call_task: CallTaskSettings | None = Field(default_factory=CallTaskSettings)


_SECRET_FIELDS = {"api_key", "auth_token", "password", "secret"}


def _reject_inline_secrets(doc: object, path: str, where: str = "") -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            field = f"{where}.{k}" if where else str(k)
            if k in _SECRET_FIELDS:
                raise ConfigError("secrets do not belong in files", path=path, field=field,
                                  hint=f"name the environment variable instead: {k}_env: WINBACK_…")
            _reject_inline_secrets(v, path, field)


def load_provider_config(path: str | Path) -> ProviderConfig:
    """Read and validate a provider-config YAML file; errors name the file and the field."""
    from winback.campaigns.loading import load_yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}".splitlines()[0], path=str(p)) from None
    doc = load_yaml(text, source=str(p)) or {}
    if not isinstance(doc, dict):
        raise ConfigError("must be a mapping of provider settings", path=str(p))
    _reject_inline_secrets(doc, str(p))
    try:
        return ProviderConfig.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise ConfigError(err["msg"], path=str(p), field=field) from None


def provider_config_for_emulator(url: str, *, smtp_port: int | None = None, email: str = "sendgrid",
                                 out_dir: str | None = "call-lists", timeout_s: float = 10.0,
                                 public_url: str = "https://winback.example.com") -> ProviderConfig:
    """Settings routing every channel to a running `winback emulator` at `url`, with its credentials."""
    from winback.channels import emulator as emu

    url = url.rstrip("/")
    return ProviderConfig(
        email=email, sender_email="club@example.com", sender_name="Winback Club", sms_from="+15005550006",
        unsubscribe_mailto="unsubscribe@example.com", public_url=public_url, timeout_s=timeout_s,
        sendgrid=SendGridSettings(base_url=url, api_key=SecretStr(emu.SENDGRID_KEY)),
        mailgun=MailgunSettings(base_url=url, domain=emu.MAILGUN_DOMAIN, api_key=SecretStr(emu.MAILGUN_KEY)),
        twilio=TwilioSettings(base_url=url, account_sid=emu.TWILIO_SID, auth_token=SecretStr(emu.TWILIO_TOKEN),
                              status_callback=f"{public_url.rstrip('/')}/webhooks/twilio"),
        smtp=SmtpSettings(host=url.split("://", 1)[-1].rsplit(":", 1)[0], port=smtp_port or 25, start_tls=False,
                          lookup_url=f"{url}/_emulator/lookup?key={{key}}"),
        webhook=WebhookSettings(url=f"{url}/hooks/app-push", secret=SecretStr(emu.WEBHOOK_SECRET),
                                lookup_url=f"{url}/hooks/app-push/deliveries/{{key}}", name="webhook"),
        call_task=CallTaskSettings(out_dir=out_dir),
    )


def _secret(given: SecretStr | None, env: str, what: str) -> SecretStr:
    if given is not None:
        return given
    from winback.config import secret

    value = secret(env, required=True)
    assert value is not None
    return value


def make_client(transport: Transport = "aiohttp", *, max_connections: int = 64, timeout_s: float = 10.0,
                deadline_s: float | None = None, max_response_bytes: int = 1 << 20) -> httpx.AsyncClient:
    """The shared pooled `httpx.AsyncClient` (aiohttp underneath by default; see `channels.transport`).

    Measured here (bench/RESULTS.md): httpx's default transport parses HTTP in pure Python and was
    several times slower than aiohttp at 64 connections; `winback.channels.transport.AiohttpTransport`
    keeps the httpx API (channels and their `MockTransport` tests are unchanged) over aiohttp's parser,
    and maps a dropped connection to "maybe sent" rather than httpx-aiohttp's "connect timeout".
    Each request is bounded: `deadline_s` in all (default 3 × `timeout_s`), `max_response_bytes` of answer.
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
    deadline = deadline_s or 3 * timeout_s
    from winback.channels.transport import ProviderClient

    bounds = {"deadline_s": deadline, "max_response_bytes": max_response_bytes}
    if transport == "aiohttp":
        from winback.channels.transport import AiohttpTransport

        return ProviderClient(transport=AiohttpTransport(limits=limits, **bounds), timeout=timeout, **bounds)
    return ProviderClient(limits=limits, timeout=timeout, **bounds)


class Router:
    """Maps a plan's channel (email / sms / webhook / call_task) to a configured provider adapter."""

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or make_client(config.transport, max_connections=config.max_connections,
                                            timeout_s=config.timeout_s, deadline_s=config.deadline_s,
                                            max_response_bytes=config.max_response_bytes)
        self._owns_client = client is None
        self._channels: dict[str, Channel] = {}

    def __repr__(self) -> str:
        return f"Router(email={self.config.email!r}, channels={sorted(self._channels)!r})"

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared HTTP client if the router created it."""
        if self._owns_client:
            await self.client.aclose()

    def channel_for(self, channel: str) -> Channel:
        """The adapter for a plan channel; ConfigError when that provider is not configured."""
        if channel not in self._channels:
            self._channels[channel] = self._build(channel)
        return self._channels[channel]

    def _build(self, channel: str) -> Channel:
        c = self.config
        t = c.timeout_s
        if channel == "email":
            if c.email == "sendgrid":
                s = c.sendgrid or SendGridSettings()
                from winback.channels.sendgrid import SendGridChannel

                return SendGridChannel(self.client, _secret(s.api_key, s.api_key_env, "SendGrid API key"),
                                       base_url=s.base_url, timeout=t)
            if c.email == "mailgun":
                s = c.mailgun or MailgunSettings()
                from winback.channels.mailgun import MailgunChannel

                domain = s.domain or os.environ.get(s.domain_env)
                if not domain:
                    raise ConfigError(f"the Mailgun domain is not set (mailgun.domain or {s.domain_env})")
                return MailgunChannel(self.client, _secret(s.api_key, s.api_key_env, "Mailgun API key"), domain,
                                      base_url=s.base_url, timeout=t)
            s = c.smtp or SmtpSettings()
            from winback.channels.smtp import SmtpChannel

            password = s.password or (None if not s.username else _secret(None, s.password_env, "SMTP password"))
            return SmtpChannel(s.host, s.port, username=s.username, password=password, start_tls=s.start_tls,
                               use_tls=s.use_tls, timeout=max(t, 5.0), message_id_domain=s.message_id_domain,
                               lookup_url=s.lookup_url, client=self.client)
        if channel == "sms":
            s = c.twilio or TwilioSettings()
            from winback.channels.twilio import TwilioChannel

            if not (c.sms_from or s.messaging_service_sid):
                raise ConfigError("SMS needs a sender: set sms_from (a number or sender id) or "
                                  "twilio.messaging_service_sid in the provider config")
            sid = s.account_sid or os.environ.get(s.account_sid_env)
            if not sid:
                raise ConfigError(f"the Twilio account SID is not set (twilio.account_sid or {s.account_sid_env})")
            return TwilioChannel(self.client, sid, _secret(s.auth_token, s.auth_token_env, "Twilio auth token"),
                                 from_number=c.sms_from, messaging_service_sid=s.messaging_service_sid,
                                 status_callback=s.status_callback, base_url=s.base_url, timeout=t)
        if channel == "webhook":
            if c.webhook is None:
                raise ConfigError("the plan has webhook messages but no `webhook:` provider is configured")
            return self._webhook(c.webhook)
        if channel == "call_task":
            s = c.call_task or CallTaskSettings()
            from winback.channels.call_task import CallTaskChannel

            return CallTaskChannel(s.out_dir, crm=self._webhook(s.crm) if s.crm else None)
        raise ConfigError(f"no provider for channel {channel!r}")

    def _webhook(self, s: WebhookSettings):
        from winback.channels.webhook import WebhookChannel

        return WebhookChannel(self.client, s.url, _secret(s.secret, s.secret_env, "webhook secret"), name=s.name,
                              lookup_url=s.lookup_url, timeout=self.config.timeout_s)
