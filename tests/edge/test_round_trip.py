"""One event from `POST /v1/track` through the landing zone, the sensor and a real run to
`main.fct_events`, and the send-time API picking up the new snapshot the run publishes."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid

import dagster as dg
import httpx
import pytest

from personalization_assets import paths
from personalization_assets.defs.automation.sensors import landing_event_files_sensor
from personalization_assets.edge.collector import create_collector_app
from personalization_assets.edge.send_time import create_send_time_app
from personalization_assets.edge.settings import load_edge_settings
from tests.conftest import BuiltWarehouse, by_id, project_env, run_job
from tests.edge.servers import serve


def _tick(cursor=None):
    context = dg.build_sensor_context(cursor=cursor, instance=dg.DagsterInstance.ephemeral())
    result = landing_event_files_sensor.evaluate_tick(context)
    return result, context.cursor


def test_a_tracked_event_reaches_fct_events_and_the_next_snapshot(
    sample_shop, tmp_path, monkeypatch
):
    root = tmp_path / "shop"
    shutil.copytree(sample_shop.root, root)
    shop = BuiltWarehouse(
        root=root,
        landing=root / "landing",
        database=root / "warehouse.duckdb",
        output=root / "output",
        result=sample_shop.result,
    )
    for key, value in project_env(root).items():
        monkeypatch.setenv(key, value)
    settings = load_edge_settings(
        paths.config_dir(),
        landing_dir=shop.landing,
        snapshot_path=shop.output / "serving" / "snapshot.duckdb",
        api={"reload_check_ms": 0},
    )
    [(customer, product)] = shop.query(
        f"""select r.customer_id, r.product_id from {by_id("models.product_recommendations")} r
        join main.dim_customers c using (customer_id)
        where r.source = 'als' and r.rank = 1 and c.tracking_consent and c.email_consent
          and not c.unsubscribed
        order by r.customer_id limit 1"""
    )
    _, cursor = _tick()  # everything already loaded is in the cursor
    event = {
        "event_id": f"edge-{uuid.uuid4().hex}",
        "user_id": customer.upper(),
        "event_type": "add_to_cart",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "product_id": product,
        "session_id": "s-edge",
        "device": "mobile",
    }
    with (
        serve(create_collector_app(settings)) as collector_url,
        serve(create_send_time_app(settings)) as api_url,
    ):
        assert httpx.post(f"{collector_url}/v1/track", json=event).status_code == 202
        httpx.post(f"{collector_url}/v1/flush").raise_for_status()
        fresh = httpx.get(f"{api_url}/v1/customers/{customer}/content").json()
        assert fresh["freshness"]["recommendations"] == "edge_als_update"

        result, _ = _tick(cursor)
        [request] = result.run_requests
        today = dt.datetime.now(dt.UTC).date().isoformat()
        assert request.tags["dagster/asset_partition_range_start"] == today
        assert request.tags["landing/files"] == "1"
        run = run_job(root, "event_refresh", run_config=request.run_config, tags=request.tags)
        assert run.success

        [(event_type, user_id, source_file)] = shop.query(
            "select event_type, customer_id, source_file from main.fct_events where event_id = ?",
            [event["event_id"]],
        )
        assert (event_type, user_id) == ("add_to_cart", customer)
        assert source_file.startswith(f"events/date={today}/collector-")

        after = httpx.get(f"{api_url}/v1/customers/{customer}/content").json()
    assert after["snapshot"]["snapshot_at"] != fresh["snapshot"]["snapshot_at"]
    assert after["freshness"] == {**after["freshness"], "fresh_events": 0}
    expected = shop.query(
        f"select product_id from {by_id('models.product_recommendations')} "
        "where customer_id = ? order by rank",
        [customer],
    )
    assert [r["product_id"] for r in after["recommendations"]] == [p for (p,) in expected]


@pytest.fixture(autouse=True)
def _no_stray_snapshot_env(monkeypatch):
    monkeypatch.delenv("PERSONALIZATION_SERVING_SNAPSHOT", raising=False)
