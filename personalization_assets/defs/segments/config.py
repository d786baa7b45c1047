"""Load and validate the marketers' segment files before any run. No Dagster imports.

The features' columns and types come from the dbt manifest (`customer_features` has an enforced
contract, so the manifest's column list is the table's) plus the lifecycle columns the
`customer_profile` view adds (declared in `models/lifecycle.py`), which lets a bad rule fail at
definitions load — in the UI and in `dagster definitions validate` — not halfway through a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from personalization_assets.defs.models.lifecycle import LIFECYCLE_COLUMNS
from personalization_assets.defs.segments import rules
from personalization_assets.defs.segments.rfm import RfmConfig, load_rfm_config


@dataclass(frozen=True)
class SegmentFiles:
    rfm: RfmConfig
    segments: rules.SegmentsConfig


def manifest_feature_schema(manifest_path: Path) -> rules.FeatureSchema:
    """Field types of `customer_profile`: `customer_features` as declared (and
    contract-enforced) in dbt, plus the lifecycle prediction columns."""
    manifest = json.loads(manifest_path.read_text())
    node = next(
        n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["name"] == "customer_features"
    )
    return rules.feature_schema_from_duckdb(
        [(name, column.get("data_type") or "varchar") for name, column in node["columns"].items()]
        + list(LIFECYCLE_COLUMNS.items())
    )


def load_segment_files(config_dir: Path, schema: rules.FeatureSchema) -> SegmentFiles:
    """Both files, fully validated against `schema`; raises with every problem listed."""
    rfm = load_rfm_config(config_dir / "rfm.yaml")
    segments = rules.load_segments_config(config_dir / "segments.yaml")
    rules.validate_segments(segments, schema)
    return SegmentFiles(rfm=rfm, segments=segments)
