"""Operational thresholds from `config/pipeline.yaml`, typed and validated.

Marketers' files (segments, RFM map, campaigns) have their own modules; this file holds the
knobs an operator tunes. Missing keys take the defaults below.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class SegmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size_change_warn_ratio: float = Field(0.5, gt=0)
    min_size_warn: int = Field(1, ge=0)


class FreshnessSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partitions_start_date: str = "2025-01-01"
    sensor_interval_seconds: int = Field(15, ge=1)
    max_files_per_run: int = Field(500, ge=1)


class IngestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    load_batch_mb: int = Field(256, ge=1)


class RenderingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(2000, ge=1)
    retain_heap_mb: int = Field(256, ge=0)


class MeasurementSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attribution_window_days: int = Field(3, ge=1)
    max_clicks_per_minute: int = Field(5, ge=1)
    control_variant: str = "A"
    srm_alpha: float = Field(0.001, gt=0, lt=1)


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segments: SegmentSettings = SegmentSettings()
    freshness: FreshnessSettings = FreshnessSettings()
    ingest: IngestSettings = IngestSettings()
    rendering: RenderingSettings = RenderingSettings()
    measurement: MeasurementSettings = MeasurementSettings()


def load_pipeline_settings(config_dir: Path) -> PipelineSettings:
    """Read `pipeline.yaml` from the config folder (defaults when the file is absent)."""
    path = config_dir / "pipeline.yaml"
    if not path.exists():
        return PipelineSettings()
    try:
        return PipelineSettings.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
