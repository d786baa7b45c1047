"""DuckDB has one writer: concurrent runs (sensor, backfill, schedule) must queue, not fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import dagster as dg
import duckdb

from personalization_assets import paths
from personalization_assets.defs.ingest.landing import landing_days
from personalization_assets.defs.ingest.sample_data import generate_sample_data
from tests.conftest import project_env


def test_two_overlapping_full_runs_both_succeed_and_leave_no_duplicates(tmp_path):
    landing = tmp_path / "landing"
    generate_sample_data(landing, customers=300, products=60, days=40, seed=5)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(paths.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    # Create the instance's storage once: two processes creating fresh SQLite tables at the same
    # moment race on the schema ("table ... already exists"), which is not what this tests.
    dg.DagsterInstance.from_config(str(home)).dispose()
    days = landing_days(landing)
    env = {**os.environ, **project_env(tmp_path), "DAGSTER_HOME": str(home)}
    script = paths.PROJECT_ROOT / "tests" / "automation" / "concurrent_run.py"
    runs = [
        subprocess.Popen(
            [sys.executable, str(script), str(first), str(last)],
            env=env,
            cwd=paths.PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for first, last in ((days[0], days[-1]), (days[len(days) // 2], days[-1]))
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    lines, distinct = con.execute(
        "select count(*), count(distinct (source_file, line_no)) from raw.event_lines"
    ).fetchone()
    unaccounted = con.execute("select sum(unaccounted) from ingest_reconciliation").fetchone()[0]
    con.close()
    assert lines == distinct and unaccounted == 0
