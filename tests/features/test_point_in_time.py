"""Leakage: features as of T depend only on facts at or before T (real dbt on copies of a warehouse)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import duckdb
import pandas as pd

from personalization_assets import paths
from personalization_assets.defs.warehouse.project import dbt_executable


def _build_features_as_of(database, as_of: str) -> pd.DataFrame:
    subprocess.run(
        [
            dbt_executable(),
            "run",
            "--quiet",
            "--select",
            "feature_as_of",
            "customer_features",
            "--vars",
            json.dumps({"as_of": as_of}),
            "--project-dir",
            str(paths.DBT_PROJECT_DIR),
            "--profiles-dir",
            str(paths.DBT_PROJECT_DIR),
            "--target-path",
            str(database.parent / "target"),
        ],
        check=True,
        cwd=paths.DBT_PROJECT_DIR,
        env={**os.environ, paths.DUCKDB_PATH_ENV: str(database)},
    )
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute("select * from customer_features order by customer_key").df()
    finally:
        con.close()


def test_features_at_t_ignore_everything_after_t(sample_shop, tmp_path):
    con = duckdb.connect(str(sample_shop.database), read_only=True)
    as_of = con.execute("select min(as_of) from feature_snapshot_dates").fetchone()[0]
    snapshot = con.execute(
        "select * exclude (as_of) from customer_feature_snapshots where as_of = ? "
        "order by customer_key",
        [as_of],
    ).df()
    later_events = con.execute(
        "select count(*) from fct_events where event_ts > ?", [as_of]
    ).fetchone()[0]
    con.close()
    assert later_events > 1000  # there is plenty of future to leak

    full = tmp_path / "full" / "warehouse.duckdb"
    truncated = tmp_path / "truncated" / "warehouse.duckdb"
    for target in (full, truncated):
        target.parent.mkdir()
        shutil.copy(sample_shop.database, target)
    con = duckdb.connect(str(truncated))
    con.execute("delete from fct_events where event_ts > ?", [as_of])
    con.execute("delete from fct_orders where ordered_at > ?", [as_of])
    con.close()

    with_future = _build_features_as_of(full, as_of.isoformat()).drop(columns="as_of")
    without_future = _build_features_as_of(truncated, as_of.isoformat()).drop(columns="as_of")
    pd.testing.assert_frame_equal(with_future, without_future)
    # The training snapshot at T is the same SQL: identical to features computed as of T.
    pd.testing.assert_frame_equal(
        with_future.reset_index(drop=True), snapshot.reset_index(drop=True)
    )
