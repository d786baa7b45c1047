"""Settings of the edge services: `config/edge.yaml`, validated, with environment overrides.

The landing zone comes from `PERSONALIZATION_LANDING_DIR` (as for the batch graph), the
serving snapshot from `PERSONALIZATION_SERVING_SNAPSHOT` (default `<output>/serving/snapshot.duckdb`)
and the collector's shared secret from `PERSONALIZATION_EDGE_WRITE_KEY`, so secrets stay out of YAML.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from personalization_assets import paths
from personalization_assets.defs.serving.export import snapshot_path

WRITE_KEY_ENV = "PERSONALIZATION_EDGE_WRITE_KEY"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectorSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=0, le=65535)
    max_track_body_bytes: int = Field(65_536, ge=256)
    max_batch_body_bytes: int = Field(1_048_576, ge=256)
    max_batch_events: int = Field(1000, ge=1)
    write_key: str = ""
    flush_max_events: int = Field(5000, ge=1)
    flush_max_ms: int = Field(2000, ge=1)
    future_tolerance_hours: int = Field(24, ge=0)
    max_properties_chars: int = Field(4096, ge=2)


class ApiSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8002, ge=0, le=65535)
    reload_check_ms: int = Field(1000, ge=0)
    cache_max_customers: int = Field(100_000, ge=1)
    edge_als_refresh: bool = True


class EdgeSettings(_Strict):
    collector: CollectorSettings = CollectorSettings()
    api: ApiSettings = ApiSettings()
    landing_dir: Path = Field(default_factory=paths.landing_dir)
    snapshot_path: Path = Field(default_factory=snapshot_path)
    config_dir: Path = Field(default_factory=paths.config_dir)


def load_edge_settings(config_dir: Path | None = None, **overrides) -> EdgeSettings:
    """`edge.yaml` from the config folder (defaults when absent) + env vars + keyword overrides."""
    config_dir = config_dir or paths.config_dir()
    path = config_dir / "edge.yaml"
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    if os.environ.get(WRITE_KEY_ENV):
        data.setdefault("collector", {})["write_key"] = os.environ[WRITE_KEY_ENV]
    data["config_dir"] = config_dir
    data.update(overrides)
    try:
        return EdgeSettings.model_validate(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
