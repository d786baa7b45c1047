"""`config/privacy.yaml`: retention and masking knobs, validated with pydantic. No Dagster imports."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class PrivacyConfigError(ValueError):
    """`privacy.yaml` is not valid; the message names the file and the field."""


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_days: int | None = Field(
        default=730,
        ge=1,
        description="Landing event files and raw event lines of landing days older than this are "
        "purged; null keeps everything.",
    )
    unmasked_test_addresses: list[str] = Field(
        default_factory=list,
        description="Seed/test addresses shown in clear in metadata, logs and previews.",
    )

    @field_validator("unmasked_test_addresses")
    @classmethod
    def _lowercase(cls, values: list[str]) -> list[str]:
        for value in values:
            if "@" not in value:
                raise ValueError(f"{value!r} is not an email address")
        return sorted({v.strip().lower() for v in values})


def load_privacy_config(path: Path) -> PrivacyConfig:
    """Read and validate `privacy.yaml`; a missing file means the defaults."""
    if not path.exists():
        return PrivacyConfig()
    try:
        return PrivacyConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as error:
        raise PrivacyConfigError(f"{path}: {error}") from error
