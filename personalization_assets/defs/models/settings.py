"""`config/models.yaml`, typed: propensity horizons, gates and XGBoost params; ALS settings."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from personalization_assets.defs.models.propensity import PropensityParams
from personalization_assets.defs.models.recommendations import AlsParams, InteractionWeights


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PropensityTarget(_Strict):
    horizon_days: int = Field(gt=0)
    auc_floor: float = Field(0.6, ge=0, le=1)


class PropensitySettings(_Strict):
    churn: PropensityTarget = PropensityTarget(horizon_days=90)
    purchase: PropensityTarget = PropensityTarget(horizon_days=7)
    features: list[str]
    params: PropensityParams = PropensityParams()


class RecommendationSettings(_Strict):
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"product_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    )
    half_life_days: float | None = 30.0
    confidence: str = "bm25"
    top_n: int = Field(10, ge=1)
    exclude_purchased: bool = True
    evaluation_holdout_days: int = Field(14, ge=1)
    als: AlsParams = AlsParams()

    @property
    def weights(self) -> InteractionWeights:
        return InteractionWeights(
            event_weights=self.event_weights,
            half_life_days=self.half_life_days,
            confidence=self.confidence,
        )


class ModelSettings(_Strict):
    propensity: PropensitySettings
    recommendations: RecommendationSettings = RecommendationSettings()

    def label_horizons(self) -> list[int]:
        return sorted({self.propensity.churn.horizon_days, self.propensity.purchase.horizon_days})


def load_model_settings(config_dir: Path) -> ModelSettings:
    path = config_dir / "models.yaml"
    try:
        return ModelSettings.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
