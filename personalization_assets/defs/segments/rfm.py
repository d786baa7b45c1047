"""The RFM segment map: named segments over (recency, frequency) quintile scores.

Loaded from `config/rfm.yaml`, validated to cover every one of the 25 (R, F) cells so each
purchaser gets exactly one segment, and compiled to one SQL CASE expression. No Dagster imports.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

SCORES = range(1, 6)


class RfmSegmentRule(BaseModel):
    """One named rectangle of the R×F grid (inclusive score ranges)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    recency: tuple[int, int]
    frequency: tuple[int, int]

    @field_validator("recency", "frequency")
    @classmethod
    def _score_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not (1 <= low <= high <= 5):
            raise ValueError(f"score range must be within 1..5 with low <= high, got {list(value)}")
        return value

    def covers(self, r: int, f: int) -> bool:
        return (
            self.recency[0] <= r <= self.recency[1] and self.frequency[0] <= f <= self.frequency[1]
        )


class RfmConfig(BaseModel):
    """The whole map, tried top-down (first match wins)."""

    model_config = ConfigDict(extra="forbid")

    segments: list[RfmSegmentRule]

    def segment_for(self, r: int, f: int) -> str | None:
        return next((rule.name for rule in self.segments if rule.covers(r, f)), None)

    def uncovered_cells(self) -> list[tuple[int, int]]:
        return [(r, f) for r in SCORES for f in SCORES if self.segment_for(r, f) is None]

    def unreachable_segments(self) -> list[str]:
        reached = {self.segment_for(r, f) for r in SCORES for f in SCORES}
        return [rule.name for rule in self.segments if rule.name not in reached]


class RfmConfigError(ValueError):
    """`rfm.yaml` is malformed or leaves (R, F) cells without a segment."""


def load_rfm_config(path: Path) -> RfmConfig:
    """Read and validate the map; every (R, F) cell must be covered."""
    try:
        config = RfmConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValueError) as error:
        raise RfmConfigError(f"{path}: {error}") from error
    uncovered = config.uncovered_cells()
    if uncovered:
        cells = ", ".join(f"R{r}F{f}" for r, f in uncovered)
        raise RfmConfigError(f"{path}: no segment covers the (recency, frequency) cells {cells}")
    return config


def rfm_segment_sql(config: RfmConfig, r_column: str = "r_score", f_column: str = "f_score") -> str:
    """A SQL CASE naming each row's segment from its scores (null when the scores are null)."""
    branches = [
        f"when {r_column} between {rule.recency[0]} and {rule.recency[1]} "
        f"and {f_column} between {rule.frequency[0]} and {rule.frequency[1]} "
        f"then '{rule.name.replace(chr(39), chr(39) * 2)}'"
        for rule in config.segments
    ]
    return "case " + " ".join(branches) + " end"
