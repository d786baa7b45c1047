"""The engine switch: one setting picks the dbt target; no Java or cluster needed here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from personalization_assets import engine, paths
from personalization_assets.defs.warehouse.project import dbt_executable, dbt_project
from personalization_assets.defs.warehouse.resources import WarehouseDbtResource


def _resource(**config) -> WarehouseDbtResource:
    return WarehouseDbtResource(project_dir=dbt_project, dbt_executable=dbt_executable(), **config)


def test_engine_is_duckdb_unless_the_env_or_the_resource_says_spark(monkeypatch):
    monkeypatch.delenv(engine.ENGINE_ENV, raising=False)
    assert engine.engine() == "duckdb"
    assert _resource().engine_name == "duckdb"
    monkeypatch.setenv(engine.ENGINE_ENV, " Spark ")
    assert engine.engine() == "spark"
    assert _resource().engine_name == "spark"
    assert _resource(engine="duckdb").engine_name == "duckdb"


def test_an_unknown_engine_is_rejected_naming_the_setting(monkeypatch):
    monkeypatch.setenv(engine.ENGINE_ENV, "snowflake")
    with pytest.raises(ValueError, match="PERSONALIZATION_ENGINE='snowflake'.*duckdb, spark"):
        engine.engine()
    with pytest.raises(ValueError, match="engine='trino'"):
        _ = _resource(engine="trino").engine_name


def test_profiles_have_one_target_per_engine_and_spark_uses_the_session_method():
    profile = yaml.safe_load((paths.DBT_PROJECT_DIR / "profiles.yml").read_text())
    outputs = profile["personalization"]["outputs"]
    assert set(outputs) == set(engine.ENGINES)
    spark = outputs["spark"]
    assert spark["method"] == "session"
    assert engine.SPARK_MASTER_ENV in spark["server_side_parameters"]["spark.master"]
    assert (
        "metastore_db"
        in spark["server_side_parameters"]["spark.hadoop.javax.jdo.option.ConnectionURL"]
    )
    assert engine.ENGINE_ENV in profile["personalization"]["target"]


def test_cluster_status_reports_stopped_daemons(tmp_path):
    result = subprocess.run(
        [sys.executable, str(paths.PROJECT_ROOT / "scripts" / "spark_cluster.py"), "status"],
        env={**os.environ, engine.SPARK_DIR_ENV: str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3
    assert result.stdout.split() == [
        "master",
        "stopped",
        "worker-1",
        "stopped",
        "worker-2",
        "stopped",
    ]
