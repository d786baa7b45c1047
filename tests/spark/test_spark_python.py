"""Python work on a real Spark cluster: mapInPandas scoring and rendering, and the clear errors.

Scoring a saved booster on the executors must give the scores local scoring of that booster
gives; the executors' renderer must give the emails (and the per-recipient errors) the local
renderer gives. Training with `xgboost.spark` and the assets themselves run in
test_spark_assets.py. A master that is down, or no Java, fails at once with what to do.
"""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pytest

from personalization_assets import engine, paths
from personalization_assets.defs.campaigns import payloads
from personalization_assets.defs.campaigns.assets import TEMPLATES_DIR
from personalization_assets.defs.campaigns.config import load_campaigns_config
from personalization_assets.defs.campaigns.rendering import (
    EmailRenderer,
    RenderedEmail,
    RendererConfig,
    TemplateRenderError,
)
from personalization_assets.defs.campaigns.spark_render import SparkEmailRenderer
from personalization_assets.defs.models import propensity, spark_propensity, training
from personalization_assets.defs.models.settings import load_model_settings
from personalization_assets.spark_session import SparkUnavailable, spark_session
from tests.spark.conftest import free_port

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime")

# Scores of the same booster: XGBoost predicts in float32; one float32 ulp at 1.0.
SCORE_TOLERANCE = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def spark(spark_cluster):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(engine.SPARK_DIR_ENV, str(spark_cluster.root))
        with spark_session("test-spark-python", master=spark_cluster.master_url) as session:
            yield session


def test_scores_on_spark_equal_local_scores_of_the_same_booster(spark, sample_shop):
    """The purchase model the DuckDB path trained, scored on the executors and locally."""
    features = load_model_settings(paths.config_dir()).propensity.features
    con = duckdb.connect(str(sample_shop.database), read_only=True)
    try:
        (path,) = con.execute(
            "select path from models.model_registry where model_name = 'purchase' and is_current"
        ).fetchall()[0]
        frame = training.scoring_frame(con, features)
    finally:
        con.close()
    model = propensity.load_model(path)
    local_scores = propensity.score(model, frame)
    spark_scores = spark_propensity.score_on_spark(spark, model, frame)
    assert len(frame) > 500 and np.isnan(frame[features].to_numpy(float)).any()
    assert spark_scores.shape == local_scores.shape
    assert np.abs(spark_scores - local_scores).max() <= SCORE_TOLERANCE
    assert len(np.unique(local_scores)) > 50


def test_render_many_on_spark_returns_the_local_emails_and_errors(spark, sample_shop):
    """The executors' renderer gives the same emails and the same per-recipient errors."""
    campaigns = load_campaigns_config(paths.config_dir() / "campaigns.yaml")
    config = RendererConfig(
        templates_dir=TEMPLATES_DIR,
        brand=campaigns.defaults.brand,
        base_url=campaigns.defaults.base_url,
    )
    con = duckdb.connect(str(sample_shop.database), read_only=True)
    try:
        as_of = con.execute("select as_of from main.feature_as_of").fetchall()[0][0]
        rows = payloads.load_send_rows(con, as_of.date())
    finally:
        con.close()
    template = max({r["template"] for r in rows}, key=[r["template"] for r in rows].count)
    contexts = [
        payloads.build_context(r, base_url=config.base_url, campaign_names={})
        for r in rows
        if r["template"] == template
    ]
    contexts.append({**contexts[0], "links": None})  # fails for this recipient only
    local = EmailRenderer(config).render_many(template, contexts)
    distributed = SparkEmailRenderer(spark, config).render_many(template, contexts)
    assert len(contexts) > 20
    assert distributed[:-1] == local[:-1]
    assert all(isinstance(r, RenderedEmail) for r in local[:-1])
    assert isinstance(distributed[-1], TemplateRenderError)
    assert str(distributed[-1]) == str(local[-1])
    missing = SparkEmailRenderer(spark, config).render_many("no_such_template", contexts[:3])
    assert [str(e) for e in missing] == [
        str(e) for e in EmailRenderer(config).render_many("no_such_template", contexts[:3])
    ]


def test_a_master_that_is_down_fails_at_once_naming_the_fix():
    master = f"spark://127.0.0.1:{free_port()}"
    with (
        pytest.raises(SparkUnavailable, match=r"not reachable.*run `make spark-up`") as error,
        spark_session("never-started", master=master),
    ):
        pass
    assert master in str(error.value)


def test_missing_java_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(SparkUnavailable, match=r"Java runtime not found.*make spark-up"),
        spark_session("never-started", master="spark://127.0.0.1:7077"),
    ):
        pass
