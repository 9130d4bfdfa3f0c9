"""`winback events-server`: receive provider webhooks and serve unsubscribe links."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `events-server` command."""

    @app.command("events-server")
    def events_server(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        port: int = typer.Option(8030, help="TCP port."),
        ledger: str | None = typer.Option(None, "--ledger", help="Ledger URL (default: WINBACK_LEDGER_URL or "
                                          "a SQLite file under the working directory)."),
        access_log: bool = typer.Option(False, help="Log every request line (paths carry unsubscribe tokens)."),
    ) -> None:
        """Receive SendGrid, Twilio and Mailgun delivery events and serve the one-click unsubscribe link."""
        import logging
        import os

        import uvicorn

        from winback.config import secret
        from winback.errors import ConfigError
        from winback.events.app import create_app
        from winback.resources import Resources, RunSettings

        if not 0 < port < 65536:
            raise ConfigError(f"port must be between 1 and 65535, got {port}", field="--port")
        led = Resources(RunSettings(ledger_url=ledger)).ledger
        keys = {
            "sendgrid_public_key": secret("WINBACK_SENDGRID_WEBHOOK_PUBLIC_KEY"),
            "mailgun_signing_key": secret("WINBACK_MAILGUN_SIGNING_KEY"),
            "twilio_auth_token": secret("WINBACK_TWILIO_AUTH_TOKEN"),
            "unsubscribe_secret": secret("WINBACK_UNSUBSCRIBE_SECRET"),
        }
        asgi = create_app(led, public_url=os.environ.get("WINBACK_PUBLIC_URL") or None, **keys)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        enabled = [name.split("_")[0] for name, value in keys.items() if value is not None]
        # Names of what is enabled, never the values.
        typer.echo(f"events server on http://{host}:{port} (ledger {led.url}; verifying: "
                   f"{', '.join(enabled) or 'nothing — every webhook answers 503'})", err=True)
        try:
            uvicorn.run(asgi, host=host, port=port, access_log=access_log, log_level="info", http="httptools")
        finally:
            led.close()
