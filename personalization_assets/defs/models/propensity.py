"""XGBoost propensity models (churn, purchase-within-7-days) over point-in-time frames.

Pure modelling logic: no Dagster, no DuckDB. Callers hand in a pandas ``DataFrame``
with one row per ``(customer, as_of)`` snapshot, numeric feature columns computed
strictly from data at or before ``as_of``, a 0/1 label describing what happened
*after* ``as_of`` and a baseline score column (a simple rule mapped to [0, 1]).

Splitting is by time, never at random::

    as_of dates (sorted):  d1  d2  ...  d(k-2) | d(k-1) | d(k)
                           ------- train ----- | valid  | test

* ``train``: every as-of date except the last two.
* ``valid``: the second-to-last date, used only for early stopping.
* ``test``: the latest date; all reported metrics (model *and* baseline) come
  from this fold, which the model never saw.

The caller must only pass rows whose label window is closed (e.g. a 30-day churn
label needs ``as_of + 30 days <= data cut-off``). Label windows of the last
training dates may overlap the validation/test as-of dates; with horizons shorter
than the as-of spacing this is harmless, otherwise space the snapshots further
apart.

Training refuses (``InsufficientTrainingData``) rather than producing a
meaningless model when there are fewer than three as-of dates, too few rows or
positives, or only one class in a fold.

Threads: XGBoost uses ``PropensityParams.nthread`` OpenMP threads, default **1**.
The deployment box has 2 cores shared with Dagster, dbt and other assets; when the
second core is busy, OpenMP threads spin-wait on each other and ``nthread=2`` was
4-5x *slower* than ``nthread=1`` in our measurements (see ``bench/models_bench.py``),
while the best case on an idle box is < 2x faster. Raise it only for runs that have
the machine to themselves. Results are deterministic for a fixed ``seed``; with
``hist`` they also matched bit for bit between ``nthread`` 1 and 2 on our data,
which is why ``nthread`` is not part of :func:`model_version`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.util import hash_pandas_object
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # imported lazily: xgboost + scikit-learn add ~2 s to every process start
    from collections.abc import Callable

    import xgboost as xgb

    # (split, feature columns, train labels, valid labels, params) -> early-stopped booster
    BoosterFit = Callable[
        ["TimeSplit", list[str], np.ndarray, np.ndarray, "PropensityParams"], xgb.Booster
    ]

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "InsufficientTrainingData",
    "LoadedPropensityModel",
    "PropensityParams",
    "PropensityResult",
    "TimeSplit",
    "calibration_table",
    "classification_metrics",
    "fit_local",
    "historical_rate_baseline",
    "load_model",
    "model_version",
    "promotion_decision",
    "recency_baseline",
    "save_model",
    "score",
    "time_split",
    "train_propensity",
]

ARTIFACT_FORMAT_VERSION = 1
_PROB_EPS = 1e-7


class InsufficientTrainingData(ValueError):
    """The frame cannot support a meaningful train/valid/test propensity model."""


class PropensityParams(BaseModel):
    """Hyper-parameters and guard rails for :func:`train_propensity`.

    ``nthread`` is a runtime setting and is *not* part of :func:`model_version`.
    ``min_positives`` / ``min_rows`` apply to the training fold (``min_positives``
    is also the minimum number of *negatives*); ``min_eval_positives`` applies to
    the validation and test folds (each also needs at least that many negatives).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_depth: int = Field(default=5, ge=1, le=16)
    eta: float = Field(default=0.05, gt=0, le=1)
    n_estimators: int = Field(default=500, ge=1)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    min_child_weight: float = Field(default=5.0, ge=0)
    reg_lambda: float = Field(default=1.0, ge=0)
    early_stopping_rounds: int = Field(default=30, ge=1)
    seed: int = 42
    nthread: int = Field(default=1, ge=1)
    min_positives: int = Field(default=20, ge=1)
    min_rows: int = Field(default=200, ge=1)
    min_eval_positives: int = Field(default=5, ge=1)

    def xgb_params(self) -> dict[str, Any]:
        """The ``xgboost.train`` parameter dict (``hist``, binary logistic, seeded)."""
        return {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "eval_metric": "logloss",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "seed": self.seed,
            "nthread": self.nthread,
            "verbosity": 0,
        }

    def versioned_fields(self) -> dict[str, Any]:
        """Fields that change the fitted model (everything but ``nthread``)."""
        return self.model_dump(exclude={"nthread"})


# --------------------------------------------------------------------------- baselines


def recency_baseline(
    days_since_last_purchase: Any, horizon_days: float, *, missing: float = 1.0
) -> np.ndarray:
    """Recency-rule churn probability in [0, 1].

    Treats ``1 / recency`` as the customer's purchase rate, so under a Poisson
    model the chance of *no* purchase in the next ``horizon_days`` is
    ``exp(-horizon_days / recency)``: 0 for a purchase today, ~0.37 at
    ``recency == horizon``, -> 1 for long-lapsed customers. Customers with no
    purchase at all (NaN) get ``missing``.
    """
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    days = np.asarray(days_since_last_purchase, dtype=np.float64)
    with np.errstate(divide="ignore"):
        prob = np.exp(-horizon_days / np.maximum(days, 0.0))
    prob = np.where(np.isnan(days), missing, prob)
    return np.clip(prob, 0.0, 1.0)


def historical_rate_baseline(
    purchase_count: Any,
    window_days: Any,
    horizon_days: float,
    *,
    prior_purchases: float = 0.0,
    prior_days: float = 0.0,
) -> np.ndarray:
    """Historical-rate purchase probability in [0, 1].

    ``rate = (purchase_count + prior_purchases) / (window_days + prior_days)``
    purchases per day, and ``P(purchase within horizon) = 1 - exp(-rate * horizon)``.
    A zero-length window (NaN) gives the prior rate (0 without a prior).
    """
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    count = np.nan_to_num(np.asarray(purchase_count, dtype=np.float64), nan=0.0)
    window = np.nan_to_num(np.asarray(window_days, dtype=np.float64), nan=0.0)
    denom = np.maximum(window, 0.0) + prior_days
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(denom > 0, (np.maximum(count, 0.0) + prior_purchases) / denom, 0.0)
    return np.clip(1.0 - np.exp(-rate * horizon_days), 0.0, 1.0)


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class TimeSplit:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    train_as_of: tuple[pd.Timestamp, ...]
    valid_as_of: pd.Timestamp
    test_as_of: pd.Timestamp


def time_split(
    frame: pd.DataFrame,
    as_of_column: str,
    *,
    label_column: str | None = None,
    params: PropensityParams | None = None,
) -> TimeSplit:
    """Split by as-of date: train = all but the last two dates, valid = second-to-last,
    test = latest.

    Always raises :class:`InsufficientTrainingData` with fewer than 3 distinct as-of
    dates. When ``label_column`` is given, also checks row/positive/negative counts per
    fold against ``params`` (defaults if ``None``).
    """
    if as_of_column not in frame.columns:
        raise KeyError(f"as-of column {as_of_column!r} not in frame")
    if frame[as_of_column].isna().any():
        raise ValueError(f"as-of column {as_of_column!r} contains nulls")
    as_of = pd.to_datetime(frame[as_of_column])
    dates = np.sort(as_of.unique())
    if len(dates) < 3:
        raise InsufficientTrainingData(
            f"need at least 3 distinct {as_of_column!r} dates (train / valid / test), "
            f"got {len(dates)}"
        )
    test_date, valid_date = pd.Timestamp(dates[-1]), pd.Timestamp(dates[-2])
    train_mask = (as_of < valid_date).to_numpy()
    valid_mask = (as_of == valid_date).to_numpy()
    test_mask = (as_of == test_date).to_numpy()
    split = TimeSplit(
        train=frame.loc[train_mask],
        valid=frame.loc[valid_mask],
        test=frame.loc[test_mask],
        train_as_of=tuple(pd.Timestamp(d) for d in dates[:-2]),
        valid_as_of=valid_date,
        test_as_of=test_date,
    )
    if label_column is not None:
        _check_split(split, label_column, params or PropensityParams())
    return split


def _labels(frame: pd.DataFrame, label_column: str) -> np.ndarray:
    if label_column not in frame.columns:
        raise KeyError(f"label column {label_column!r} not in frame")
    raw = frame[label_column]
    if raw.isna().any():
        raise ValueError(f"label column {label_column!r} contains nulls")
    values = raw.to_numpy(dtype=np.float64)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"label column {label_column!r} must be 0/1 (or boolean)")
    return values.astype(np.int8)


def _check_split(split: TimeSplit, label_column: str, params: PropensityParams) -> None:
    folds = (
        ("train", split.train, params.min_rows, params.min_positives),
        ("valid", split.valid, 1, params.min_eval_positives),
        ("test", split.test, 1, params.min_eval_positives),
    )
    for name, fold, min_rows, min_class in folds:
        y = _labels(fold, label_column)
        n, pos = len(y), int(y.sum())
        neg = n - pos
        where = f"{name} fold ({n} rows)"
        if n < min_rows:
            raise InsufficientTrainingData(f"{where}: need at least {min_rows} rows")
        if pos == 0 or neg == 0:
            only = "positive" if neg == 0 else "negative"
            raise InsufficientTrainingData(
                f"{where}: label {label_column!r} has a single class (all {only}); "
                "a model cannot be trained or evaluated on it"
            )
        if pos < min_class:
            raise InsufficientTrainingData(
                f"{where}: only {pos} positives for {label_column!r}, need at least {min_class}"
            )
        if neg < min_class:
            raise InsufficientTrainingData(
                f"{where}: only {neg} negatives for {label_column!r}, need at least {min_class}"
            )


# --------------------------------------------------------------------------- metrics


def calibration_table(y_true: Any, y_prob: Any, *, bins: int = 10) -> pd.DataFrame:
    """Calibration by quantile bin (decile by default) of predicted probability.

    Rows are sorted by probability (stable sort, so ties are split deterministically)
    and cut into ``bins`` groups of near-equal size, so there are always ``bins`` rows
    (when ``len(y) >= bins``) and counts sum to ``len(y)`` even with tied scores.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    rows = []
    for i, idx in enumerate(np.array_split(order, bins), start=1):
        if len(idx) == 0:
            continue
        rows.append(
            {
                "decile": i,
                "count": int(len(idx)),
                "mean_predicted": float(p[idx].mean()),
                "observed_rate": float(y[idx].mean()),
                "min_predicted": float(p[idx].min()),
                "max_predicted": float(p[idx].max()),
            }
        )
    return pd.DataFrame(rows)


def classification_metrics(y_true: Any, y_prob: Any) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), log loss, Brier, plus counts/rates."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        roc_auc_score,
    )

    y = np.asarray(y_true, dtype=np.int8)
    p = np.asarray(y_prob, dtype=np.float64)
    if np.isnan(p).any():
        raise ValueError("scores contain NaN")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("scores must be probabilities in [0, 1]")
    clipped = np.clip(p, _PROB_EPS, 1 - _PROB_EPS)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "n": int(len(y)),
        "positive_rate": float(y.mean()),
        "mean_predicted": float(p.mean()),
    }


# --------------------------------------------------------------------------- training


@dataclass
class PropensityResult:
    """A trained booster plus everything needed to audit and promote it.

    ``metrics`` / ``baseline_metrics`` are on the test fold (latest as-of date).
    ``feature_importance`` is total gain per feature, descending, 0.0 for unused ones.
    """

    booster: xgb.Booster
    feature_columns: list[str]
    label_column: str
    as_of_column: str
    baseline_column: str
    params: PropensityParams
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    calibration: pd.DataFrame
    baseline_calibration: pd.DataFrame
    feature_importance: dict[str, float]
    best_iteration: int
    n_train: int
    n_valid: int
    n_test: int
    train_positive_rate: float
    valid_positive_rate: float
    test_positive_rate: float
    train_as_of: tuple[pd.Timestamp, ...]
    valid_as_of: pd.Timestamp
    test_as_of: pd.Timestamp
    model_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable sidecar contents (no booster)."""
        import xgboost as xgb

        return {
            "artifact_format_version": ARTIFACT_FORMAT_VERSION,
            "model_version": self.model_version,
            "feature_columns": list(self.feature_columns),
            "label_column": self.label_column,
            "as_of_column": self.as_of_column,
            "baseline_column": self.baseline_column,
            "params": self.params.model_dump(),
            "metrics": self.metrics,
            "baseline_metrics": self.baseline_metrics,
            "calibration": self.calibration.to_dict(orient="records"),
            "baseline_calibration": self.baseline_calibration.to_dict(orient="records"),
            "feature_importance": self.feature_importance,
            "best_iteration": self.best_iteration,
            "n_train": self.n_train,
            "n_valid": self.n_valid,
            "n_test": self.n_test,
            "train_positive_rate": self.train_positive_rate,
            "valid_positive_rate": self.valid_positive_rate,
            "test_positive_rate": self.test_positive_rate,
            "train_as_of": [d.isoformat() for d in self.train_as_of],
            "valid_as_of": self.valid_as_of.isoformat(),
            "test_as_of": self.test_as_of.isoformat(),
            "xgboost_version": xgb.__version__,
            **self.extra,
        }


def _feature_matrix(frame: pd.DataFrame, feature_columns: Sequence[str]) -> np.ndarray:
    missing = [c for c in feature_columns if c not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from frame: {missing}")
    sub = frame[list(feature_columns)]
    bad = [
        c
        for c in feature_columns
        if not (pd.api.types.is_numeric_dtype(sub[c]) or pd.api.types.is_bool_dtype(sub[c]))
    ]
    if bad:
        raise TypeError(f"feature columns must be numeric or boolean, got non-numeric: {bad}")
    return sub.to_numpy(dtype=np.float32, na_value=np.nan)


def _dmatrix(
    frame: pd.DataFrame, feature_columns: Sequence[str], label: np.ndarray | None = None
) -> xgb.DMatrix:
    import xgboost as xgb

    return xgb.DMatrix(
        _feature_matrix(frame, feature_columns),
        label=label,
        feature_names=list(feature_columns),
        missing=np.nan,
    )


def _baseline_scores(frame: pd.DataFrame, baseline_column: str) -> np.ndarray:
    if baseline_column not in frame.columns:
        raise KeyError(f"baseline column {baseline_column!r} not in frame")
    values = frame[baseline_column].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(values).any():
        raise ValueError(f"baseline column {baseline_column!r} contains nulls; fill them first")
    if (values < 0).any() or (values > 1).any():
        raise ValueError(
            f"baseline column {baseline_column!r} must hold probabilities in [0, 1] "
            "(see recency_baseline / historical_rate_baseline)"
        )
    return values


def train_propensity(
    frame: pd.DataFrame,
    *,
    feature_columns: Sequence[str],
    label_column: str,
    as_of_column: str,
    baseline_column: str,
    params: PropensityParams | None = None,
    fit: BoosterFit | None = None,
) -> PropensityResult:
    """Train an XGBoost (``hist``) propensity model with a time split and early stopping.

    ``fit`` trains the booster on the train fold with early stopping on the valid fold
    (default: ``xgboost.train`` in this process; ``spark_propensity.spark_fit`` trains
    with ``xgboost.spark`` instead); splitting, metrics and the version are shared.

    Raises :class:`InsufficientTrainingData` when the data cannot support a
    meaningful model (see :func:`time_split`).
    """
    params = params or PropensityParams()
    feature_columns = list(feature_columns)
    if not feature_columns:
        raise ValueError("feature_columns is empty")
    overlap = {label_column, as_of_column, baseline_column} & set(feature_columns)
    if overlap:
        raise ValueError(f"label/as-of/baseline columns must not be features: {sorted(overlap)}")

    split = time_split(frame, as_of_column, label_column=label_column, params=params)
    y_train = _labels(split.train, label_column)
    y_valid = _labels(split.valid, label_column)
    y_test = _labels(split.test, label_column)
    baseline_test = _baseline_scores(split.test, baseline_column)

    fit = fit or fit_local
    booster = fit(split, feature_columns, y_train, y_valid, params)
    best_iteration = int(booster.best_iteration)

    test_prob = score(booster, split.test, feature_columns)
    gain = booster.get_score(importance_type="gain")
    importance = {c: float(gain.get(c, 0.0)) for c in feature_columns}
    importance = dict(sorted(importance.items(), key=lambda kv: (-kv[1], kv[0])))

    used = [*feature_columns, label_column, as_of_column, baseline_column]
    engine = getattr(fit, "engine", "local")
    version = model_version(frame[used], params, feature_columns, engine=engine)
    return PropensityResult(
        booster=booster,
        feature_columns=feature_columns,
        label_column=label_column,
        as_of_column=as_of_column,
        baseline_column=baseline_column,
        params=params,
        metrics=classification_metrics(y_test, test_prob),
        baseline_metrics=classification_metrics(y_test, baseline_test),
        calibration=calibration_table(y_test, test_prob),
        baseline_calibration=calibration_table(y_test, baseline_test),
        feature_importance=importance,
        best_iteration=best_iteration,
        n_train=len(y_train),
        n_valid=len(y_valid),
        n_test=len(y_test),
        train_positive_rate=float(y_train.mean()),
        valid_positive_rate=float(y_valid.mean()),
        test_positive_rate=float(y_test.mean()),
        train_as_of=split.train_as_of,
        valid_as_of=split.valid_as_of,
        test_as_of=split.test_as_of,
        model_version=version,
        extra={} if engine == "local" else {"engine": engine},
    )


def fit_local(
    split: TimeSplit,
    feature_columns: list[str],
    y_train: np.ndarray,
    y_valid: np.ndarray,
    params: PropensityParams,
) -> xgb.Booster:
    """``xgboost.train`` on the train fold, early-stopped on the valid fold (``save_best``)."""
    import xgboost as xgb

    early_stopping = xgb.callback.EarlyStopping(
        rounds=params.early_stopping_rounds,
        metric_name="logloss",
        data_name="valid",
        maximize=False,
        save_best=True,  # the returned booster holds only rounds up to best_iteration
    )
    return xgb.train(
        params.xgb_params(),
        _dmatrix(split.train, feature_columns, y_train),
        num_boost_round=params.n_estimators,
        evals=[(_dmatrix(split.valid, feature_columns, y_valid), "valid")],
        callbacks=[early_stopping],
        verbose_eval=False,
    )


# --------------------------------------------------------------------------- scoring


@dataclass
class LoadedPropensityModel:
    """A booster read back by :func:`load_model`, with its sidecar metadata."""

    booster: xgb.Booster
    metadata: dict[str, Any]
    path: Path

    @property
    def feature_columns(self) -> list[str]:
        return list(self.metadata["feature_columns"])

    @property
    def model_version(self) -> str:
        return str(self.metadata["model_version"])


def score(
    model: xgb.Booster | PropensityResult | LoadedPropensityModel,
    frame: pd.DataFrame,
    feature_columns: Sequence[str] | None = None,
) -> np.ndarray:
    """Probabilities (float64, one per row of ``frame``); deterministic.

    ``feature_columns`` defaults to the model's own list; when given it must match
    the booster's feature names (same names, same order).
    """
    import xgboost as xgb

    if isinstance(model, PropensityResult | LoadedPropensityModel):
        booster, own = model.booster, model.feature_columns
    elif isinstance(model, xgb.Booster):
        booster, own = model, list(model.feature_names or [])
    else:
        raise TypeError(f"cannot score with {type(model).__name__}")
    columns = list(feature_columns) if feature_columns is not None else own
    if not columns:
        raise ValueError("feature_columns not given and the booster has no feature names")
    if own and columns != own:
        raise ValueError(f"feature columns {columns} do not match the model's {own}")
    if len(frame) == 0:
        return np.empty(0, dtype=np.float64)
    # The booster was sliced to best_iteration at training time (save_best=True), so
    # predicting with every stored tree is the early-stopped model.
    prob = booster.predict(_dmatrix(frame, columns), validate_features=True)
    return prob.astype(np.float64)


# --------------------------------------------------------------------------- artifacts


def model_version(
    frame: pd.DataFrame,
    params: PropensityParams,
    feature_columns: Sequence[str],
    *,
    engine: str = "local",
) -> str:
    """Short (12 hex) stable hash of the training data plus versioned params.

    Hashes every column of ``frame`` (feature columns first, in the given order, then
    the others by name) with ``pandas.util.hash_pandas_object``; the per-row hashes are
    sorted so row order does not matter, but duplicates and any value change do.
    ``nthread`` is excluded; the artifact format version is included, and the training
    ``engine`` when it is not the local one (a Spark-trained booster is another model).
    """
    feature_columns = list(feature_columns)
    others = sorted(c for c in frame.columns if c not in set(feature_columns))
    columns = [*feature_columns, *others]
    digest = hashlib.sha256()
    header = {
        "format": ARTIFACT_FORMAT_VERSION,
        "columns": columns,
        "dtypes": [str(frame[c].dtype) for c in columns],
        "params": params.versioned_fields(),
        "rows": len(frame),
    }
    if engine != "local":
        header["engine"] = engine
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    if len(frame):
        row_hashes = hash_pandas_object(frame[columns], index=False).to_numpy()
        digest.update(np.sort(row_hashes).tobytes())
    return digest.hexdigest()[:12]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf by None so the sidecar is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_model(result: PropensityResult, directory: str | Path, *, name: str | None = None) -> Path:
    """Write ``<name>.json`` (XGBoost JSON model) and ``<name>.meta.json`` (sidecar).

    ``name`` defaults to ``propensity_<label>_<model_version>``. Returns the model path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = name or f"propensity_{result.label_column}_{result.model_version}"
    model_path = directory / f"{name}.json"
    result.booster.save_model(str(model_path))
    meta = _finite(result.metadata())
    meta_path = _sidecar_path(model_path)
    meta_path.write_text(
        json.dumps(meta, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
    )
    return model_path


def _sidecar_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name.removesuffix(".json") + ".meta.json")


def load_model(path: str | Path) -> LoadedPropensityModel:
    """Read a model written by :func:`save_model` (the ``.json`` path it returned)."""
    import xgboost as xgb

    path = Path(path)
    meta_path = _sidecar_path(path)
    if not meta_path.exists():
        raise FileNotFoundError(f"sidecar metadata {meta_path} not found next to {path}")
    metadata = json.loads(meta_path.read_text())
    found = metadata.get("artifact_format_version")
    if found != ARTIFACT_FORMAT_VERSION:
        raise ValueError(f"unsupported artifact format {found!r} in {meta_path}")
    booster = xgb.Booster()
    booster.load_model(str(path))
    booster.set_param({"nthread": int(metadata["params"].get("nthread", 2))})
    if list(booster.feature_names or []) != list(metadata["feature_columns"]):
        raise ValueError(f"{path}: booster feature names do not match the sidecar")
    return LoadedPropensityModel(booster=booster, metadata=metadata, path=path)


# --------------------------------------------------------------------------- promotion


def promotion_decision(
    candidate_metrics: Mapping[str, float],
    *,
    auc_floor: float,
    baseline_metrics: Mapping[str, float],
    previous_metrics: Mapping[str, float] | None = None,
    min_lift_over_baseline: float = 0.0,
    previous_tolerance: float = 0.01,
) -> tuple[bool, str]:
    """Decide whether a candidate may replace the serving model.

    Blocks when the candidate's ROC-AUC is missing/NaN, below ``auc_floor``, not
    strictly above ``baseline AUC + min_lift_over_baseline``, or (when
    ``previous_metrics`` is given) more than ``previous_tolerance`` below the
    previous model's AUC. Returns ``(promote, reason)``.
    """
    auc = candidate_metrics.get("roc_auc")
    if auc is None or not math.isfinite(auc):
        return False, "blocked: candidate has no finite roc_auc"
    if auc < auc_floor:
        return False, f"blocked: candidate AUC {auc:.4f} is below the floor {auc_floor:.4f}"
    base = baseline_metrics.get("roc_auc")
    if base is None or not math.isfinite(base):
        return False, "blocked: baseline has no finite roc_auc to compare against"
    if auc <= base + min_lift_over_baseline:
        need = f" + required lift {min_lift_over_baseline:.4f}" if min_lift_over_baseline else ""
        return False, (
            f"blocked: candidate AUC {auc:.4f} does not beat baseline AUC {base:.4f}{need}"
        )
    if previous_metrics is not None:
        prev = previous_metrics.get("roc_auc")
        if prev is not None and math.isfinite(prev) and auc < prev - previous_tolerance:
            return False, (
                f"blocked: candidate AUC {auc:.4f} is more than {previous_tolerance:.4f} below "
                f"the previous model's {prev:.4f}"
            )
    reason = f"promote: candidate AUC {auc:.4f} >= floor {auc_floor:.4f}, > baseline {base:.4f}"
    if previous_metrics is not None and previous_metrics.get("roc_auc") is not None:
        reason += f", previous {previous_metrics['roc_auc']:.4f}"
    return True, reason
