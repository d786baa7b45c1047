"""The `sender` resource: which transport delivery uses (dry run unless configured otherwise)."""

import os
from typing import Literal

import dagster as dg

from personalization_assets.defs.delivery.senders import (
    DryRunSender,
    HttpEspSender,
    HttpEspSettings,
    Sender,
    SmtpSender,
    SmtpSettings,
)

MODE_ENV = "PERSONALIZATION_SENDER_MODE"
SMTP_HOST_ENV = "PERSONALIZATION_SMTP_HOST"
SMTP_PORT_ENV = "PERSONALIZATION_SMTP_PORT"
ESP_URL_ENV = "PERSONALIZATION_ESP_URL"
Mode = Literal["dry_run", "smtp", "http"]


class SenderResource(dg.ConfigurableResource):
    """Transport for `delivery/email_deliveries`. Empty fields fall back to the environment
    (PERSONALIZATION_SENDER_MODE, _SMTP_HOST, _SMTP_PORT, _ESP_URL), then to a dry run."""

    mode: str = ""
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    http_url: str = ""
    http_api_key: str = ""
    http_batch_size: int = 100
    timeout_seconds: float = 30.0

    @property
    def resolved_mode(self) -> Mode:
        mode = self.mode or os.environ.get(MODE_ENV, "") or "dry_run"
        if mode not in ("dry_run", "smtp", "http"):
            raise ValueError(f"sender mode must be dry_run, smtp or http, not {mode!r}")
        return mode  # type: ignore[return-value]

    def build(self) -> Sender:
        mode = self.resolved_mode
        if mode == "smtp":
            return SmtpSender(
                SmtpSettings(
                    host=self.smtp_host or os.environ.get(SMTP_HOST_ENV, "127.0.0.1"),
                    port=self.smtp_port or int(os.environ.get(SMTP_PORT_ENV, "25")),
                    starttls=self.smtp_starttls,
                    ssl=self.smtp_ssl,
                    username=self.smtp_username,
                    password=self.smtp_password,
                    timeout_seconds=self.timeout_seconds,
                )
            )
        if mode == "http":
            url = self.http_url or os.environ.get(ESP_URL_ENV, "")
            if not url:
                raise ValueError(f"sender mode 'http' needs http_url or {ESP_URL_ENV}")
            return HttpEspSender(
                HttpEspSettings(
                    url=url,
                    api_key=self.http_api_key,
                    batch_size=self.http_batch_size,
                    timeout_seconds=self.timeout_seconds,
                )
            )
        return DryRunSender()
