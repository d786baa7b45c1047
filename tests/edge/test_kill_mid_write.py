"""A collector killed mid-write never leaves a file the sensor reads; the next start recovers
every acknowledged event and keeps the torn line in the rejected file."""

from __future__ import annotations

import datetime as dt
import json
import signal

import dagster as dg
import httpx

from personalization_assets import paths
from personalization_assets.defs.automation.sensors import landing_event_files_sensor
from personalization_assets.defs.ingest.landing import event_files
from tests.edge.servers import serve_process, write_edge_config


def _tick():
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral())
    return landing_event_files_sensor.evaluate_tick(context)


def test_kill_9_leaves_only_a_tmp_file_and_a_restart_recovers_it(tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    config = write_edge_config(tmp_path / "config", flush_max_events=100_000, flush_max_ms=600_000)
    env = {
        paths.LANDING_DIR_ENV: str(landing),
        paths.CONFIG_DIR_ENV: str(config),
        "PERSONALIZATION_SERVING_SNAPSHOT": str(tmp_path / "absent.duckdb"),
    }
    monkeypatch.setenv(paths.LANDING_DIR_ENV, str(landing))
    now = dt.datetime.now(dt.UTC).isoformat()
    events = [
        {"event_id": f"k{i}", "user_id": "c1", "event_type": "page_view", "timestamp": now}
        for i in range(50)
    ]
    with serve_process("collector", env) as (url, process):
        assert httpx.post(f"{url}/v1/batch", json=events).status_code == 202
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    [tmp] = list((landing / "events").glob("date=*/*.ndjson.tmp"))
    with tmp.open("a") as handle:  # the process died inside a write
        handle.write('{"event_id": "torn", "user_id": "c1", "ev')
    assert event_files(landing)[0] == []
    assert _tick().run_requests == []  # the sensor never sees the .tmp

    with serve_process("collector", env) as (url, _):
        health = httpx.get(f"{url}/healthz").json()
        assert health["status"] == "ok"
        httpx.post(f"{url}/v1/flush")
    [final] = event_files(landing)[0]
    assert [json.loads(line)["event_id"] for line in final.read_text().splitlines()] == [
        e["event_id"] for e in events
    ]
    assert not list((landing / "events").glob("date=*/*.tmp"))
    [record] = [
        json.loads(line)
        for path in (landing / "rejected").glob("date=*/*.ndjson")
        for line in path.read_text().splitlines()
    ]
    assert record["reason"] == "partial_write" and record["raw"].startswith('{"event_id": "torn"')
    [request] = _tick().run_requests
    assert request.tags["landing/files"] == "1"
