"""Backfilling landing days twice gives the same warehouse: partitions are idempotent."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb

from personalization_assets.defs.automation.jobs import range_tags
from tests.conftest import run_job

WAREHOUSE_ONLY = dg.AssetSelection.groups("ingest", "warehouse")


def _snapshot(database):
    con = duckdb.connect(str(database), read_only=True)
    try:
        return {
            # day_loaded_at is bookkeeping (when the day was last re-processed), not content.
            "events": con.execute(
                "select * exclude (day_loaded_at) from fct_events order by event_id"
            ).fetchall(),
            "raw": con.execute(
                "select count(*), min(landing_date), max(landing_date) from raw.event_lines"
            ).fetchone(),
            "quarantine": con.execute("select count(*) from quarantined_rows").fetchone(),
        }
    finally:
        con.close()


def test_backfilling_a_range_twice_is_idempotent_and_matches_the_full_build(sample_shop, tmp_path):
    shutil.copytree(sample_shop.landing, tmp_path / "landing")
    shutil.copy(sample_shop.database, tmp_path / "warehouse.duckdb")
    full = _snapshot(tmp_path / "warehouse.duckdb")
    days = sorted(
        {row[0] for row in sample_shop.query("select distinct landing_date from raw.event_lines")}
    )
    middle = (days[len(days) // 3], days[2 * len(days) // 3])
    keys = [key for key in _keys(WAREHOUSE_ONLY)]
    stamps = _day_stamps(tmp_path / "warehouse.duckdb")
    for _ in range(2):
        result = run_job(tmp_path, asset_selection=keys, tags=range_tags(*middle))
        assert result.success
        assert _snapshot(tmp_path / "warehouse.duckdb") == full
    # Only the backfilled days were re-processed by the incremental models; the others kept
    # the rows of the original build.
    after = _day_stamps(tmp_path / "warehouse.duckdb")
    changed = {day for day in stamps if after[day] != stamps[day]}
    assert changed == {day for day in days if middle[0] <= day <= middle[1]}


def _day_stamps(database):
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "select landing_date, max(day_loaded_at) from fct_events group by all"
        ).fetchall()
        return dict(rows)
    finally:
        con.close()


def _keys(selection):
    from personalization_assets.definitions import defs

    return list(selection.resolve(defs().resolve_asset_graph()))
