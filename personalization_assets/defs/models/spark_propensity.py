"""Propensity training and scoring on Spark (`PERSONALIZATION_ENGINE=spark`). No Dagster imports.

Training: :func:`spark_fit` returns a ``fit`` for :func:`propensity.train_propensity` that
trains with XGBoost's own Spark estimator (``xgboost.spark.SparkXGBClassifier``, one XGBoost
worker per Spark task, ``num_workers`` tasks in a barrier stage) on the same time split, with the
same parameters and early stopping on the same validation fold. The booster it returns is sliced
to the best iteration like the local one, so the split, the test-fold metrics, the calibration,
the artifact (XGBoost JSON + sidecar, ``engine: spark`` recorded) and everything downstream
(scores, serving, the send-time API) are the same code on both engines.

A distributed ``hist`` fit is not the local fit: each worker sketches the quantiles of its own
partition and row/column sampling draws differently, so the trees differ and the metrics agree
within a tolerance (see ``tests/spark/test_spark_models.py``), not bit for bit.

Scoring: :func:`score_on_spark` scores a frame with a saved booster through ``mapInPandas``:
the booster travels to the executors as its JSON bytes and each partition runs
:func:`propensity.score`, so the scores equal local scoring of the same booster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from personalization_assets.defs.models import propensity
from personalization_assets.spark_session import spark_session

if TYPE_CHECKING:
    import xgboost as xgb
    from pyspark.sql import SparkSession

ROW = "_row"
VALID = "_is_valid"
LABEL = "_label"
FEATURES = "_features"


def spark_fit(
    app_name: str, num_workers: int = 2, master: str | None = None
) -> propensity.BoosterFit:
    """A ``fit`` for :func:`propensity.train_propensity` that trains with ``xgboost.spark``.

    The session opens only when a fit happens (not when the frame is refused as too small) and
    closes when it returns."""

    def fit(
        split: propensity.TimeSplit,
        feature_columns: list[str],
        y_train: np.ndarray,
        y_valid: np.ndarray,
        params: propensity.PropensityParams,
    ) -> xgb.Booster:
        from xgboost.spark import SparkXGBClassifier

        rows = pd.concat(
            [
                _features(split.train, feature_columns).assign(**{LABEL: y_train, VALID: False}),
                _features(split.valid, feature_columns).assign(**{LABEL: y_valid, VALID: True}),
            ],
            ignore_index=True,
        )
        estimator = SparkXGBClassifier(
            features_col=FEATURES,
            label_col=LABEL,
            validation_indicator_col=VALID,
            num_workers=num_workers,
            **estimator_params(params),
        )
        with spark_session(app_name, master=master) as spark:
            from pyspark.sql import functions as F

            # One array column, not `features_col=[columns]`: with a column list xgboost 3's
            # Spark data loader raises KeyError('values') on an Arrow batch of a partition that
            # holds no validation rows (any batch past the first 10,000 rows of a partition).
            frame = spark.createDataFrame(rows).repartition(num_workers)
            frame = frame.select(
                F.array(*[F.col(c) for c in feature_columns]).alias(FEATURES), LABEL, VALID
            )
            booster = best_iteration_booster(estimator.fit(frame).get_booster())
            booster.feature_names = list(feature_columns)
            return booster

    fit.engine = "spark"  # type: ignore[attr-defined]  # recorded in the version and sidecar
    return fit


def estimator_params(params: propensity.PropensityParams) -> dict[str, Any]:
    """``PropensityParams`` as ``SparkXGBClassifier`` keyword arguments (the same model)."""
    return {
        "tree_method": "hist",
        "eval_metric": "logloss",
        "n_estimators": params.n_estimators,
        "max_depth": params.max_depth,
        "learning_rate": params.eta,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "min_child_weight": params.min_child_weight,
        "reg_lambda": params.reg_lambda,
        "early_stopping_rounds": params.early_stopping_rounds,
        "random_state": params.seed,
        "verbosity": 0,
    }


def best_iteration_booster(booster: xgb.Booster) -> xgb.Booster:
    """The rounds up to the best iteration, as ``EarlyStopping(save_best=True)`` returns locally."""
    attributes = booster.attributes()
    if "best_iteration" not in attributes:
        booster.set_attr(best_iteration=str(booster.num_boosted_rounds() - 1))
        return booster
    best = int(attributes["best_iteration"])
    sliced = booster[: best + 1]
    sliced.set_attr(**{k: v for k, v in attributes.items() if k.startswith("best_")})
    sliced.feature_names = booster.feature_names
    return sliced


def _features(frame: pd.DataFrame, feature_columns: list[str]) -> pd.DataFrame:
    """The feature columns as float32 values (what the local DMatrix holds), typed as doubles."""
    matrix = propensity._feature_matrix(frame, feature_columns)
    return pd.DataFrame(matrix.astype(np.float64), columns=feature_columns)


def score_on_spark(
    spark: SparkSession,
    model: propensity.LoadedPropensityModel,
    frame: pd.DataFrame,
    partitions: int = 2,
) -> np.ndarray:
    """Probabilities for the rows of ``frame`` (in its order), scored on the executors."""
    columns = model.feature_columns
    if len(frame) == 0:
        return np.empty(0, dtype=np.float64)
    raw = bytes(model.booster.save_raw("json"))
    booster_bytes = spark.sparkContext.broadcast(raw)

    def score_partitions(batches):
        import xgboost as xgb

        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(bytearray(booster_bytes.value))
        for batch in batches:
            yield pd.DataFrame(
                {ROW: batch[ROW], "score": propensity.score(booster, batch, columns)}
            )

    rows = _features(frame, columns).assign(**{ROW: np.arange(len(frame))})
    scored = (
        spark.createDataFrame(rows)
        .repartition(partitions)
        .mapInPandas(score_partitions, f"{ROW} long, score double")
        .toPandas()
        .sort_values(ROW)
    )
    booster_bytes.unpersist()
    if len(scored) != len(frame):
        raise RuntimeError(f"Spark scoring returned {len(scored)} rows for {len(frame)}")
    return scored["score"].to_numpy(dtype=np.float64)
