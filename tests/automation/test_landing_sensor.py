"""The event-arrival sensor, driven through Dagster's sensor test context over real files."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest

from personalization_assets import paths
from personalization_assets.defs.automation.sensors import landing_event_files_sensor


@pytest.fixture
def landing(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.LANDING_DIR_ENV, str(tmp_path))
    return tmp_path


def _drop(landing, day: str, name: str, text: str = '{"a":1}\n'):
    """Write-then-rename, as producers must."""
    folder = landing / "events" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{name}.tmp"
    tmp.write_text(text)
    tmp.rename(folder / name)
    return folder / name


def _tick(cursor=None):
    context = dg.build_sensor_context(cursor=cursor, instance=dg.DagsterInstance.ephemeral())
    result = landing_event_files_sensor.evaluate_tick(context)
    return result, context.cursor


def test_new_files_request_one_run_over_their_days_and_the_cursor_advances(landing):
    _drop(landing, "2026-10-01", "a.ndjson")
    _drop(landing, "2026-10-03", "b.ndjson")
    result, cursor = _tick()
    [request] = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-10-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-10-03"
    assert request.tags["landing/files"] == "2"
    again, _ = _tick(cursor)
    assert again.run_requests == [] and again.skip_message == "no new event files"


def test_a_restart_resumes_from_the_stored_cursor_and_picks_up_late_files(landing):
    _drop(landing, "2026-10-05", "a.ndjson")
    _, cursor = _tick()
    _drop(landing, "2026-09-20", "late.ndjson")  # a late file for an old day
    result, _ = _tick(cursor)  # a fresh context with the persisted cursor = a restart
    [request] = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-09-20"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-09-20"


def test_files_still_being_written_are_never_picked_up(landing):
    folder = landing / "events" / "date=2026-10-01"
    folder.mkdir(parents=True)
    (folder / "half.ndjson.tmp").write_text('{"half":')
    (folder / ".hidden.ndjson").write_text('{"a":1}\n')
    result, _ = _tick()
    assert result.run_requests == []


def test_a_redelivered_file_with_new_content_is_requested_again(landing):
    path = _drop(landing, "2026-10-01", "a.ndjson")
    _, cursor = _tick()
    time.sleep(0.01)
    path.write_text('{"a":1}\n{"b":2}\n')
    os.utime(path)
    result, _ = _tick(cursor)
    assert len(result.run_requests) == 1


def test_days_outside_the_partitions_are_skipped_not_requested(landing):
    _drop(landing, "1999-01-01", "ancient.ndjson")
    _drop(landing, "2099-01-01", "future.ndjson")
    result, cursor = _tick()
    assert result.run_requests == []
    assert "1999-01-01" in cursor and "2099-01-01" in cursor  # seen, not retried every tick


def test_many_files_in_one_tick_become_one_run_with_a_stable_key(landing):
    for i in range(30):
        _drop(landing, f"2026-10-{1 + i % 10:02d}", f"f{i:03d}.ndjson")
    first, _ = _tick()
    second, _ = _tick()
    assert len(first.run_requests) == 1
    assert first.run_requests[0].tags["landing/files"] == "30"
    assert first.run_requests[0].run_key == second.run_requests[0].run_key


def test_sensor_runs_refresh_recommendations_incrementally(landing):
    _drop(landing, "2026-10-01", "a.ndjson")
    result, _ = _tick()
    config = result.run_requests[0].run_config
    assert config["ops"]["models__product_recommendations"]["config"]["mode"] == "incremental"
