"""The send-time API over real HTTP against the sample shop's serving snapshot."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid

import httpx
import numpy as np
import pytest

from personalization_assets import paths
from personalization_assets.defs.models import recommendation_runs
from personalization_assets.defs.serving.export import export_snapshot
from personalization_assets.edge.collector import create_collector_app
from personalization_assets.edge.freshness import EdgeAls
from personalization_assets.edge.send_time import create_send_time_app
from personalization_assets.edge.settings import load_edge_settings
from personalization_assets.edge.snapshot import SnapshotReader
from tests.conftest import by_id
from tests.edge.servers import serve


@pytest.fixture(scope="module")
def shop_snapshot(sample_shop, tmp_path_factory):
    built = sample_shop.output / "serving" / "snapshot.duckdb"
    assert built.exists(), "the pipeline run did not write the serving snapshot"
    root = tmp_path_factory.mktemp("send_time")
    shutil.copy(built, root / "snapshot.duckdb")
    return root / "snapshot.duckdb"


@pytest.fixture(scope="module")
def api(shop_snapshot):
    settings = load_edge_settings(
        paths.config_dir(),
        snapshot_path=shop_snapshot,
        landing_dir=shop_snapshot.parent / "landing",
        api={"reload_check_ms": 0},
    )
    with serve(create_send_time_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client, settings


def _send_decision(sample_shop, *, trigger: bool):
    return sample_shop.query(
        f"""select d.customer_id, d.campaign_id, d.variant, d.idempotency_key
        from campaigns.campaign_decisions d join main.dim_customers c using (customer_id)
        where d.status = 'send' and c.email_consent and not c.unsubscribed
          and (d.trigger_product_id is not null) = {trigger}
        order by d.customer_id limit 1"""
    )[0]


def test_a_known_customer_gets_tokens_segments_decision_and_recommendations(sample_shop, api):
    client, _ = api
    customer, campaign, variant, _ = _send_decision(sample_shop, trigger=False)
    response = client.get(f"/v1/customers/{customer}/content", params={"campaign": campaign})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    [(first_name, city)] = sample_shop.query(
        "select k.first_name, c.city from main.dim_customer_contacts k "
        "join main.dim_customers c using (customer_id) where customer_id = ?",
        [customer],
    )
    assert body["tokens"]["first_name"] == first_name and body["tokens"]["city"] == city
    segments = sample_shop.query(
        f"select segment from {by_id('segments.customer_segments')} where customer_id = ?",
        [customer],
    )
    assert sorted(s["segment"] for s in body["segments"]) == sorted(s for (s,) in segments)
    assert body["decision"]["status"] == "send" and body["decision"]["variant"] == variant
    assert list(body["decisions"]) == [campaign]
    expected = sample_shop.query(
        f"select product_id from {by_id('models.product_recommendations')} "
        "where customer_id = ? order by rank",
        [customer],
    )
    assert [r["product_id"] for r in body["recommendations"]] == [p for (p,) in expected]
    assert body["freshness"]["recommendations"] == "snapshot"


@pytest.mark.parametrize("trigger", [False, True])
def test_rendering_at_send_time_matches_the_batch_payload(sample_shop, api, trigger):
    client, _ = api
    customer, campaign, _, key = _send_decision(sample_shop, trigger=trigger)
    body = client.get(
        f"/v1/customers/{customer}/content", params={"campaign": campaign, "render": "true"}
    ).json()
    [(subject, text, html)] = sample_shop.query(
        "select subject, text, html from campaigns.email_payloads where idempotency_key = ?", [key]
    )
    assert body["rendered"]["subject"] == subject
    assert body["rendered"]["text"] == text
    assert body["rendered"]["html"] == html


def test_unknown_customer_and_unknown_campaign_are_404_with_a_reason(api):
    client, _ = api
    response = client.get("/v1/customers/no-such-customer/content")
    assert response.status_code == 404
    assert response.json()["reason"] == "unknown_customer"
    [(customer,)] = [("c0000001",)]
    response = client.get(f"/v1/customers/{customer}/content", params={"campaign": "nope"})
    assert response.status_code == 404 and response.json()["reason"] == "unknown_campaign"


def test_an_opted_out_customer_gets_a_definitive_answer_and_no_content(sample_shop, api):
    client, _ = api
    [(customer, unsubscribed)] = sample_shop.query(
        "select customer_id, unsubscribed from main.dim_customers "
        "where unsubscribed or not email_consent order by customer_id limit 1"
    )
    response = client.get(f"/v1/customers/{customer}/content", params={"render": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "opted_out" and body["content"] is None
    assert body["reason"] == ("unsubscribed" if unsubscribed else "no_email_consent")
    assert not {"tokens", "recommendations", "rendered", "segments"} & set(body)


def test_a_replaced_snapshot_is_picked_up_without_a_restart(sample_shop, shop_snapshot, tmp_path):
    served = tmp_path / "snapshot.duckdb"
    shutil.copy(shop_snapshot, served)
    settings = load_edge_settings(
        paths.config_dir(),
        snapshot_path=served,
        landing_dir=tmp_path / "landing",
        api={"reload_check_ms": 0},
    )
    customer, *_ = _send_decision(sample_shop, trigger=False)
    later = dt.datetime(2030, 1, 1, 12, 0)
    with serve(create_send_time_app(settings)) as url, httpx.Client(base_url=url) as client:
        before = client.get(f"/v1/customers/{customer}/content").json()["snapshot"]["snapshot_at"]
        staged = tmp_path / "next.duckdb"
        export_snapshot(sample_shop.database, staged, now=later)
        os.replace(staged, served)  # how the asset publishes: atomic rename
        after = client.get(f"/v1/customers/{customer}/content").json()
        assert client.get("/healthz").json()["reloads"] == 2
    assert before != after["snapshot"]["snapshot_at"] == later.isoformat()
    assert after["status"] == "ok"


def test_the_edge_als_update_reproduces_implicits_user_solve(sample_shop, shop_snapshot):
    model, matrix = recommendation_runs.load_state(sample_shop.root / "models" / "recommendations")
    reader = SnapshotReader(shop_snapshot)
    als = EdgeAls(reader.get())
    # The ALS state is keyed by customer_key; the snapshot (like the API) by customer id.
    ids = dict(sample_shop.query("select customer_key, customer_id from main.customer_keys"))
    rows = np.flatnonzero(np.diff(matrix.user_items.indptr) > 0)[:: max(1, matrix.shape[0] // 25)]
    for row in rows:
        view = reader.customer(ids[str(matrix.user_ids[row])])
        scaled, _ = als.scaled_row(view.als_cells, [])
        expected = matrix.user_items[row]
        np.testing.assert_allclose(scaled.toarray(), expected.toarray(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            als.user_factors(scaled), model.recalculate_user(row, expected), rtol=1e-3, atol=1e-4
        )


def test_new_events_from_the_collector_refresh_recommendations_at_the_edge(
    sample_shop, shop_snapshot, tmp_path
):
    [(customer,)] = sample_shop.query(
        f"""select r.customer_id from {by_id("models.product_recommendations")} r
        join main.dim_customers c using (customer_id)
        where r.source = 'als' and c.email_consent and not c.unsubscribed and c.tracking_consent
        group by 1 order by 1 limit 1"""
    )
    top = sample_shop.query(
        f"select product_id from {by_id('models.product_recommendations')} where customer_id = ? "
        "order by rank limit 2",
        [customer],
    )
    landing = tmp_path / "landing"
    settings = load_edge_settings(
        paths.config_dir(),
        snapshot_path=shop_snapshot,
        landing_dir=landing,
        api={"reload_check_ms": 0},
    )
    now = dt.datetime.now(dt.UTC).isoformat()
    bought = {
        "event_id": uuid.uuid4().hex,
        "user_id": customer,
        "event_type": "purchase",
        "timestamp": now,
        "product_id": top[0][0],
        "amount": 10.0,
    }
    with (
        serve(create_collector_app(settings)) as collector_url,
        serve(create_send_time_app(settings)) as api_url,
    ):
        before = httpx.get(f"{api_url}/v1/customers/{customer}/content").json()
        assert before["recommendations"][0]["product_id"] == top[0][0]
        httpx.post(f"{collector_url}/v1/track", json=bought).raise_for_status()
        httpx.post(f"{collector_url}/v1/flush").raise_for_status()
        after = httpx.get(f"{api_url}/v1/customers/{customer}/content").json()
    assert after["freshness"]["recommendations"] == "edge_als_update"
    assert after["freshness"]["fresh_events"] == 1
    products = [r["product_id"] for r in after["recommendations"]]
    assert top[0][0] not in products  # bought: excluded at once
    assert {r["source"] for r in after["recommendations"]} == {"als_edge"}
    assert len(products) == len(before["recommendations"])
    assert json.dumps(after["tokens"]) == json.dumps(before["tokens"])  # not fresh: snapshot
