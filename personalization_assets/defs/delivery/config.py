"""Delivery policy from `config/delivery.yaml`, validated with pydantic. No Dagster imports.

The transport (dry run, SMTP host, ESP URL, credentials) is deployment-specific and lives in the
`sender` resource; what a marketer or operator tunes (rate, retries, sender identity) is here.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(_Strict):
    """Temporary failures (SMTP 4xx, dropped connection before the body, HTTP 429/5xx)."""

    max_attempts: int = Field(5, ge=1, description="attempts before a message is `failed`")
    backoff_seconds: float = Field(30.0, ge=0, description="wait before the second attempt")
    backoff_multiplier: float = Field(2.0, ge=1)
    max_backoff_seconds: float = Field(3600.0, ge=0)
    max_wait_in_run_seconds: float = Field(
        60.0, ge=0, description="a run waits this long for due retries, then leaves them queued"
    )

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1-based)."""
        delay = self.backoff_seconds * self.backoff_multiplier ** max(attempts - 1, 0)
        return min(delay, self.max_backoff_seconds)


class DeliveryConfig(_Strict):
    from_address: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    from_name: str = ""
    reply_to: str = ""
    message_id_domain: str = Field("mail.example.com", pattern=r"^[A-Za-z0-9.-]+$")
    rate_limit_per_second: float = Field(20.0, gt=0, description="messages per second, all senders")
    max_messages_per_run: int = Field(0, ge=0, description="0 = no limit")
    expire_after_hours: float = Field(
        48.0, gt=0, description="a payload not sent this long after it became due is `expired`"
    )
    retry: RetryPolicy = RetryPolicy()
    feedback_dir: str = Field(
        "", description="bounce/complaint JSONL from the ESP; empty = <landing>/delivery_feedback"
    )


class DeliveryConfigError(ValueError):
    pass


def load_delivery_config(path: Path) -> DeliveryConfig:
    """Parse and validate; every problem is named with its field."""
    try:
        return DeliveryConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except FileNotFoundError as error:
        raise DeliveryConfigError(f"{path}: file not found") from error
    except (yaml.YAMLError, ValueError) as error:
        raise DeliveryConfigError(f"{path}: {error}") from error
