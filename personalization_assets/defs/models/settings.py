"""`config/models.yaml`, typed: propensity horizons, gates and XGBoost params; ALS settings;
lifecycle (BG/NBD + Gamma-Gamma) horizon, holdout and churn-band thresholds; send-time
optimisation (prior strengths, smoothing, evaluation holdout)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from personalization_assets.defs.models.propensity import PropensityParams
from personalization_assets.defs.models.recommendations import AlsParams, InteractionWeights
from personalization_assets.defs.models.send_time import SendTimeParams


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


class ChurnBandThresholds(_Strict):
    low: float = Field(0.33, gt=0, lt=1)
    high: float = Field(0.66, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> ChurnBandThresholds:
        if self.low > self.high:
            raise ValueError(
                f"churn band thresholds: low ({self.low}) must not exceed high ({self.high})"
            )
        return self


class LifecycleSettings(_Strict):
    horizon_days: int = Field(365, gt=0)
    holdout_days: int = Field(90, gt=0)
    churn_bands: ChurnBandThresholds = ChurnBandThresholds()
    band_source: Literal["auto", "bgnbd", "xgboost"] = "auto"
    band_selection_metric: Literal["brier", "log_loss", "roc_auc"] = "brier"
    min_repeat_customers: int = Field(20, ge=1)
    max_iterations: int = Field(1000, ge=10)
    max_days_to_next_order: int = Field(3650, gt=0)


class ModelSettings(_Strict):
    propensity: PropensitySettings
    recommendations: RecommendationSettings = RecommendationSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    send_time: SendTimeParams = SendTimeParams()

    def label_horizons(self) -> list[int]:
        return sorted({self.propensity.churn.horizon_days, self.propensity.purchase.horizon_days})


def load_model_settings(config_dir: Path) -> ModelSettings:
    path = config_dir / "models.yaml"
    try:
        return ModelSettings.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
