"""Propensity models on synthetic data with planted signal (see conftest.py).

Stated margins (test-fold ROC-AUC, model minus baseline, seed 0):
* churn (30-day no-purchase) vs the recency rule: >= +0.03 (observed ~+0.055);
* purchase within 7 days vs the historical-rate rule: >= +0.05 (observed ~+0.09).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from personalization_assets.defs.models.propensity import (
    InsufficientTrainingData,
    PropensityParams,
    PropensityResult,
    historical_rate_baseline,
    load_model,
    model_version,
    promotion_decision,
    recency_baseline,
    save_model,
    score,
    time_split,
    train_propensity,
)

# Feature columns of conftest.make_propensity_frame (also the `propensity_features` fixture;
# not imported from conftest, whose module name pytest does not keep unique).
PROPENSITY_FEATURES = [
    "recency_days",
    "frequency_90d",
    "frequency_total",
    "tenure_days",
    "opens_30d",
    "sessions_7d",
]
PARAMS = PropensityParams(
    n_estimators=300, eta=0.1, max_depth=4, early_stopping_rounds=20, seed=7, nthread=1
)
TASKS = {
    # label, baseline column, required AUC lift over the baseline
    "churn": ("churned_30d", "churn_baseline", 0.03),
    "purchase": ("purchased_7d", "purchase_baseline", 0.05),
}


def _train(frame: pd.DataFrame, task: str, params: PropensityParams = PARAMS) -> PropensityResult:
    label, baseline, _ = TASKS[task]
    return train_propensity(
        frame,
        feature_columns=PROPENSITY_FEATURES,
        label_column=label,
        as_of_column="as_of",
        baseline_column=baseline,
        params=params,
    )


@pytest.fixture(scope="module")
def results(propensity_frame: pd.DataFrame, propensity_features) -> dict[str, PropensityResult]:
    assert propensity_features == PROPENSITY_FEATURES
    return {task: _train(propensity_frame, task) for task in TASKS}


# ----------------------------------------------------------------- quality vs baseline


@pytest.mark.parametrize("task", list(TASKS))
def test_model_beats_baseline_by_stated_margin(results, task):
    result = results[task]
    _, _, margin = TASKS[task]
    lift = result.metrics["roc_auc"] - result.baseline_metrics["roc_auc"]
    assert lift >= margin, (task, result.metrics["roc_auc"], result.baseline_metrics["roc_auc"])
    # the learned model is also better calibrated / sharper than the rule
    assert result.metrics["log_loss"] < result.baseline_metrics["log_loss"]
    assert result.metrics["brier"] < result.baseline_metrics["brier"]
    assert result.metrics["pr_auc"] > result.baseline_metrics["pr_auc"]
    ok, reason = promotion_decision(
        result.metrics, auc_floor=0.7, baseline_metrics=result.baseline_metrics
    )
    assert ok, reason


@pytest.mark.parametrize("task", list(TASKS))
def test_metrics_present_and_sane(results, propensity_frame, task):
    result = results[task]
    for metrics in (result.metrics, result.baseline_metrics):
        assert {"roc_auc", "pr_auc", "log_loss", "brier", "n", "positive_rate"} <= set(metrics)
        for key in ("roc_auc", "pr_auc", "brier", "positive_rate", "mean_predicted"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
        assert math.isfinite(metrics["log_loss"]) and metrics["log_loss"] > 0
        assert metrics["n"] == result.n_test
    dates = np.sort(propensity_frame["as_of"].unique())
    per_date = propensity_frame["as_of"].value_counts()
    assert result.test_as_of == dates[-1] and result.valid_as_of == dates[-2]
    assert result.n_test == per_date[dates[-1]] and result.n_valid == per_date[dates[-2]]
    assert result.n_train + result.n_valid + result.n_test == len(propensity_frame)
    for rate in (result.train_positive_rate, result.valid_positive_rate, result.test_positive_rate):
        assert 0.0 < rate < 1.0
    assert result.metrics["positive_rate"] == pytest.approx(result.test_positive_rate)
    # early stopping kicked in and the booster was cut back to the best round
    assert 0 <= result.best_iteration < PARAMS.n_estimators - 1
    assert result.booster.num_boosted_rounds() == result.best_iteration + 1


@pytest.mark.parametrize("task", list(TASKS))
def test_calibration_table_by_decile(results, task):
    result = results[task]
    for table in (result.calibration, result.baseline_calibration):
        assert len(table) == 10
        assert list(table["decile"]) == list(range(1, 11))
        assert table["count"].sum() == result.n_test
        assert table["mean_predicted"].is_monotonic_increasing
        assert table["observed_rate"].between(0, 1).all()
    cal = result.calibration
    assert cal["observed_rate"].iloc[-1] > cal["observed_rate"].iloc[0] + 0.3
    # a sane model: predicted and observed agree within a few points on average
    gap = (cal["mean_predicted"] - cal["observed_rate"]).abs()
    assert np.average(gap, weights=cal["count"]) < 0.05


@pytest.mark.parametrize("task", list(TASKS))
def test_feature_importance(results, task):
    importance = results[task].feature_importance
    assert list(importance) and set(importance) == set(PROPENSITY_FEATURES)
    values = list(importance.values())
    assert values == sorted(values, reverse=True) and values[0] > 0
    planted = {"churn": {"opens_30d", "recency_days", "sessions_7d"}, "purchase": {"sessions_7d"}}
    assert next(iter(importance)) in planted[task]


# ----------------------------------------------------------------- determinism & versioning


def test_deterministic_under_fixed_seed(propensity_frame, results):
    again = _train(propensity_frame, "purchase")
    first = results["purchase"]
    assert again.best_iteration == first.best_iteration
    p1 = score(first, propensity_frame)
    p2 = score(again, propensity_frame)
    assert np.array_equal(p1, p2)
    assert again.metrics == first.metrics
    assert again.model_version == first.model_version
    assert score(first, propensity_frame).dtype == np.float64


def test_model_version_stable_and_sensitive(propensity_frame):
    frame = propensity_frame
    v = model_version(frame, PARAMS, PROPENSITY_FEATURES)
    assert len(v) == 12 and v == model_version(frame.copy(), PARAMS, PROPENSITY_FEATURES)
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert model_version(shuffled, PARAMS, PROPENSITY_FEATURES) == v  # row order irrelevant
    changed = frame.copy()
    changed.loc[changed.index[17], "opens_30d"] += 1
    assert model_version(changed, PARAMS, PROPENSITY_FEATURES) != v
    relabelled = frame.copy()
    relabelled.loc[relabelled.index[3], "churned_30d"] ^= 1
    assert model_version(relabelled, PARAMS, PROPENSITY_FEATURES) != v
    assert model_version(frame.iloc[:-1], PARAMS, PROPENSITY_FEATURES) != v
    other_params = PARAMS.model_copy(update={"max_depth": 3})
    assert model_version(frame, other_params, PROPENSITY_FEATURES) != v
    assert model_version(frame, PARAMS, PROPENSITY_FEATURES[::-1]) != v
    # thread count is a runtime setting, not part of the model identity
    assert model_version(frame, PARAMS.model_copy(update={"nthread": 1}), PROPENSITY_FEATURES) == v


# ----------------------------------------------------------------- artifacts & scoring


def test_save_load_round_trip(results, propensity_frame, tmp_path):
    result = results["churn"]
    path = save_model(result, tmp_path)
    assert path.exists() and path.suffix == ".json"
    assert result.model_version in path.name
    json.loads(path.read_text())  # XGBoost's JSON model format
    sidecar = json.loads(path.with_name(path.name.replace(".json", ".meta.json")).read_text())
    assert sidecar["feature_columns"] == PROPENSITY_FEATURES
    assert sidecar["metrics"]["roc_auc"] == result.metrics["roc_auc"]
    assert sidecar["best_iteration"] == result.best_iteration
    assert len(sidecar["calibration"]) == 10

    loaded = load_model(path)
    assert loaded.model_version == result.model_version
    assert loaded.feature_columns == PROPENSITY_FEATURES
    assert loaded.metadata["baseline_metrics"] == result.baseline_metrics
    original = score(result, propensity_frame)
    assert np.array_equal(score(loaded, propensity_frame), original)
    assert np.array_equal(score(loaded.booster, propensity_frame, PROPENSITY_FEATURES), original)


def test_score_validates_columns(results, propensity_frame):
    result = results["churn"]
    with pytest.raises(ValueError, match="do not match"):
        score(result, propensity_frame, PROPENSITY_FEATURES[::-1])
    with pytest.raises(KeyError, match="missing"):
        score(result, propensity_frame.drop(columns=["opens_30d"]))
    assert score(result, propensity_frame.iloc[:0]).shape == (0,)
    probs = score(result.booster, propensity_frame)
    assert ((probs >= 0) & (probs <= 1)).all()
    assert isinstance(result.booster, xgb.Booster)


# ----------------------------------------------------------------- promotion


def test_promotion_decision_rules():
    base = {"roc_auc": 0.70}
    ok, reason = promotion_decision({"roc_auc": 0.80}, auc_floor=0.65, baseline_metrics=base)
    assert ok and reason.startswith("promote")

    ok, reason = promotion_decision({"roc_auc": 0.60}, auc_floor=0.65, baseline_metrics=base)
    assert not ok and "below the floor" in reason

    ok, reason = promotion_decision({"roc_auc": 0.69}, auc_floor=0.65, baseline_metrics=base)
    assert not ok and "baseline" in reason
    ok, reason = promotion_decision({"roc_auc": 0.70}, auc_floor=0.65, baseline_metrics=base)
    assert not ok and "baseline" in reason  # equal is not better
    ok, _ = promotion_decision(
        {"roc_auc": 0.71}, auc_floor=0.65, baseline_metrics=base, min_lift_over_baseline=0.02
    )
    assert not ok

    prev = {"roc_auc": 0.85}
    ok, reason = promotion_decision(
        {"roc_auc": 0.80}, auc_floor=0.65, baseline_metrics=base, previous_metrics=prev
    )
    assert not ok and "previous" in reason
    ok, _ = promotion_decision(
        {"roc_auc": 0.845}, auc_floor=0.65, baseline_metrics=base, previous_metrics=prev
    )
    assert ok  # within the default 0.01 tolerance

    ok, reason = promotion_decision({"roc_auc": float("nan")}, auc_floor=0.5, baseline_metrics=base)
    assert not ok and "finite" in reason


# ----------------------------------------------------------------- refusing bad data


def test_single_class_raises(propensity_frame):
    frame = propensity_frame.assign(churned_30d=0)
    with pytest.raises(InsufficientTrainingData, match="single class"):
        _train(frame, "churn")


def test_too_few_positives_raises(propensity_frame):
    frame = propensity_frame.copy()
    dates = np.sort(frame["as_of"].unique())
    train_pos = (frame["as_of"] < dates[-2]) & (frame["purchased_7d"] == 1)
    keep_five = train_pos & (train_pos.cumsum() <= 5)
    frame.loc[train_pos & ~keep_five, "purchased_7d"] = 0
    with pytest.raises(InsufficientTrainingData, match=r"only 5 positives .* at least 20"):
        _train(frame, "purchase")


def test_too_few_dates_and_rows_raise(propensity_frame):
    dates = np.sort(propensity_frame["as_of"].unique())
    two_dates = propensity_frame[propensity_frame["as_of"].isin(dates[-2:])]
    with pytest.raises(InsufficientTrainingData, match="at least 3 distinct"):
        _train(two_dates, "churn")
    tiny = propensity_frame.groupby("as_of").head(40)
    with pytest.raises(InsufficientTrainingData, match="rows"):
        _train(tiny, "churn")


def test_bad_inputs_raise(propensity_frame):
    with pytest.raises(ValueError, match="0/1"):
        _train(propensity_frame.assign(churned_30d=2), "churn")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _train(propensity_frame.assign(churn_baseline=5.0), "churn")
    with pytest.raises(TypeError, match="numeric"):
        _train(propensity_frame.assign(opens_30d="x"), "churn")


# ----------------------------------------------------------------- helpers


def test_time_split_assigns_dates(propensity_frame):
    split = time_split(propensity_frame, "as_of")
    dates = np.sort(propensity_frame["as_of"].unique())
    assert set(split.test["as_of"]) == {dates[-1]}
    assert set(split.valid["as_of"]) == {dates[-2]}
    assert split.train["as_of"].max() == dates[-3]
    assert len(split.train_as_of) == len(dates) - 2


def test_baseline_helpers(propensity_frame):
    recency = np.array([0.0, 5.0, 30.0, 300.0, np.nan])
    churn = recency_baseline(recency, 30)
    assert churn[0] == 0.0 and churn[-1] == 1.0
    assert np.all(np.diff(churn[:-1]) > 0) and ((churn >= 0) & (churn <= 1)).all()
    assert churn[2] == pytest.approx(math.exp(-1))

    buy = historical_rate_baseline([0, 1, 5, 50], [100, 100, 100, 100], 7)
    assert buy[0] == 0.0 and np.all(np.diff(buy) > 0) and buy[-1] <= 1.0
    assert historical_rate_baseline([0], [0], 7, prior_purchases=1, prior_days=10)[0] > 0

    # the fixture's baseline columns use the same rules
    f = propensity_frame
    assert np.allclose(recency_baseline(f["recency_days"], 30), f["churn_baseline"])
    assert np.allclose(
        historical_rate_baseline(f["frequency_total"], f["tenure_days"], 7), f["purchase_baseline"]
    )
