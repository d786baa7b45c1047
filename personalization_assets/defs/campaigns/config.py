"""Campaign definitions from `config/campaigns.yaml`, validated before any run. No Dagster imports.

Validation collects every problem (unknown segment, unknown or mistyped field in a rule, variant
weights not summing to 1, a template that does not exist, duplicate ids) and reports them all
with the campaign and rule named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from personalization_assets.defs.segments import rules

TriggerType = Literal["batch", "cart_abandonment", "birthday", "win_back", "dormant"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trigger(_Strict):
    """When a campaign fires. Thresholds apply only to their trigger type."""

    type: TriggerType = "batch"
    wait_minutes: int = Field(60, ge=0, description="cart_abandonment: quiet time after the cart")
    lookback_hours: int = Field(48, gt=0, description="cart_abandonment: oldest cart considered")
    days_since_purchase: int = Field(180, gt=0, description="win_back: days without a purchase")
    dormant_days: int = Field(30, gt=0, description="dormant: days without an email open")


class Audience(_Strict):
    include_segments: list[str] = Field(default_factory=list)
    exclude_segments: list[str] = Field(default_factory=list)


class Variant(_Strict):
    name: str
    weight: float = Field(gt=0, le=1)


class DecisionRule(_Strict):
    name: str
    when: str
    template: str
    behavioral: bool = False


class Campaign(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    priority: int = 100
    enabled: bool = True
    trigger: Trigger = Trigger()
    audience: Audience = Audience()
    holdout_fraction: float = Field(0.0, ge=0, lt=1)
    variants: list[Variant] = Field(min_length=1)
    decision_rules: list[DecisionRule] = Field(min_length=1)


class FrequencyCap(_Strict):
    max_emails: int = Field(3, ge=1)
    per_days: int = Field(7, ge=1)


class Defaults(_Strict):
    frequency_cap: FrequencyCap = FrequencyCap()
    base_url: str = "https://shop.example.com"
    brand: dict[str, str] = Field(default_factory=dict)


class CampaignsConfig(_Strict):
    defaults: Defaults = Defaults()
    campaigns: list[Campaign] = Field(default_factory=list)

    @property
    def enabled(self) -> list[Campaign]:
        return sorted((c for c in self.campaigns if c.enabled), key=lambda c: (c.priority, c.id))


class CampaignConfigError(ValueError):
    """Every problem found in the campaign configuration."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the campaign configuration:\n- "
            + "\n- ".join(self.problems)
        )


def load_campaigns_config(path: Path) -> CampaignsConfig:
    """Parse the YAML (structure only; see `validate_campaigns` for meaning)."""
    try:
        return CampaignsConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValueError) as error:
        raise CampaignConfigError([f"{path}: {error}"]) from error


def validate_campaigns(
    config: CampaignsConfig,
    *,
    schema: rules.FeatureSchema,
    known_segments: set[str],
    template_exists: Callable[[str], bool],
) -> None:
    """Raise `CampaignConfigError` listing every problem; return None when all is well."""
    problems: list[str] = []
    seen: set[str] = set()
    for campaign in config.campaigns:
        where = f"campaign '{campaign.id}'"
        if campaign.id in seen:
            problems.append(f"{where}: duplicate campaign id")
        seen.add(campaign.id)
        total = sum(v.weight for v in campaign.variants)
        if abs(total - 1.0) > 1e-6:
            problems.append(f"{where}: variant weights sum to {total:g}, not 1")
        if len({v.name for v in campaign.variants}) != len(campaign.variants):
            problems.append(f"{where}: duplicate variant names")
        for segment in campaign.audience.include_segments + campaign.audience.exclude_segments:
            if segment not in known_segments:
                problems.append(
                    f"{where}: unknown segment '{segment}' (known: {sorted(known_segments)})"
                )
        for rule in campaign.decision_rules:
            for error in rules.check_rule(rule.when, schema, segment=f"{campaign.id}/{rule.name}"):
                problems.append(f"{where}, rule '{rule.name}': {error.message} (when: {rule.when})")
            if not template_exists(rule.template):
                problems.append(
                    f"{where}, rule '{rule.name}': template '{rule.template}' does not exist"
                )
    if problems:
        raise CampaignConfigError(problems)
