"""The collector over real HTTP: accepted events land in final-named files, every refusal gets
its 4xx and reason and is kept in the rejected file, consent gating, flush policy."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from personalization_assets.defs.campaigns.links import email_links
from personalization_assets.defs.ingest.landing import event_files
from personalization_assets.edge.collector import create_collector_app
from tests.edge.servers import serve, tiny_snapshot

NOW = dt.datetime.now(dt.UTC)


def event(**overrides) -> dict:
    base = {
        "event_id": f"e-{uuid.uuid4().hex}",
        "user_id": "c0001",
        "event_type": "product_view",
        "timestamp": NOW.isoformat(),
        "product_id": "p0001",
    }
    return {**base, **overrides}


def landed(landing: Path) -> list[dict]:
    files, _ = event_files(landing)
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def rejected(landing: Path) -> list[dict]:
    files = sorted((landing / "rejected").glob("date=*/*.ndjson"))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


@pytest.fixture
def collector(collector_settings):
    settings = collector_settings(
        write_key="s3cret", max_track_body_bytes=2048, max_properties_chars=1024
    )
    tiny_snapshot(settings.snapshot_path, {"c0001": True, "c0002": False})
    with serve(create_collector_app(settings)) as url:
        client = httpx.Client(base_url=url, headers={"X-Write-Key": "s3cret"}, timeout=10)
        yield client, settings.landing_dir
        client.close()


def test_an_accepted_event_lands_in_a_final_named_file_after_flush(collector):
    client, landing = collector
    sent = event()
    response = client.post("/v1/track", json=sent)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "event_id": sent["event_id"]}
    assert landed(landing) == []  # still in the open .tmp, invisible to readers
    assert list((landing / "events").glob("date=*/*.ndjson.tmp"))
    assert client.post("/v1/flush").status_code == 200
    assert landed(landing) == [sent]
    [path] = event_files(landing)[0]
    assert path.parent.name == f"date={dt.datetime.now(dt.UTC).date().isoformat()}"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b'{"event_id": "x", "user_id": ', 400, "invalid_json"),
        (json.dumps(event(amount="12.5", event_type="purchase")).encode(), 422, "wrong_type"),
        (json.dumps(event(event_id=123)).encode(), 422, "wrong_type"),
        (json.dumps(event(event_type="teleport")).encode(), 422, "unknown_event_type"),
        (
            json.dumps(event(timestamp=(NOW + dt.timedelta(days=30)).isoformat())).encode(),
            422,
            "future_timestamp",
        ),
        (json.dumps(event(timestamp="yesterday-ish")).encode(), 422, "invalid_timestamp"),
        (json.dumps(event(product_id=None)).encode(), 422, "missing_product_id"),
        (json.dumps(event(properties={"blob": "x" * 1500})).encode(), 422, "oversize_properties"),
        (json.dumps(event(properties={"blob": "x" * 3000})).encode(), 413, "body_too_large"),
    ],
)
def test_bad_input_gets_its_4xx_and_reason_and_is_kept_in_the_rejected_file(
    collector, body, status, reason
):
    client, landing = collector
    response = client.post("/v1/track", content=body)
    assert response.status_code == status
    assert response.json()["reason"] == reason
    client.post("/v1/flush")
    [record] = rejected(landing)
    assert record["reason"] == reason and record["endpoint"] == "track"
    if status == 422:
        assert record["event"] == json.loads(body)
    else:
        assert record["raw"] == body.decode()[: len(record["raw"])] and record["raw"]
    assert landed(landing) == []
    assert client.get("/healthz").json()["status"] == "ok"  # still up
    assert client.post("/v1/track", json=event()).status_code == 202


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "missing_write_key"), ({"X-Write-Key": "guess"}, "invalid_write_key")],
)
def test_a_missing_or_wrong_write_key_is_401_and_the_body_is_kept(collector, headers, reason):
    client, landing = collector
    sent = event()
    response = httpx.post(f"{client.base_url}/v1/track", json=sent, headers=headers)
    assert response.status_code == 401 and response.json()["reason"] == reason
    client.post("/v1/flush")
    [record] = rejected(landing)
    assert record["reason"] == reason and json.loads(record["raw"]) == sent
    assert landed(landing) == []
    bearer = httpx.post(
        f"{client.base_url}/v1/track", json=event(), headers={"Authorization": "Bearer s3cret"}
    )
    assert bearer.status_code == 202


def test_a_batch_is_judged_per_event_and_refused_ones_are_listed_by_index(collector):
    client, landing = collector
    good = [event() for _ in range(3)]
    bad = event(event_type="purchase", amount=-5)
    response = client.post("/v1/batch", json={"events": [good[0], bad, *good[1:]]})
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "negative_amount")]
    assert client.post("/v1/batch", json=[event(), event()]).status_code == 202
    client.post("/v1/flush")
    assert len(landed(landing)) == 5
    assert [(r["index"], r["reason"], r["event"]) for r in rejected(landing)] == [
        (1, "negative_amount", bad)
    ]


def test_malformed_batches_and_too_many_events_are_refused(collector):
    client, landing = collector
    assert client.post("/v1/batch", json={"events": "nope"}).json()["reason"] == "invalid_batch"
    too_many = client.post("/v1/batch", json=[{"a": 1}] * 1001)
    assert too_many.status_code == 413 and too_many.json()["reason"] == "too_many_events"
    client.post("/v1/flush")
    assert [r["reason"] for r in rejected(landing)] == ["invalid_batch", "too_many_events"]


def test_behavioural_events_of_a_customer_without_tracking_consent_are_dropped(collector):
    client, landing = collector
    view = event(user_id="C0002 ")  # the warehouse trims and lower-cases ids
    purchase = event(user_id="c0002", event_type="purchase", amount=10.0)
    anonymous = event(user_id="anon-7f3a")
    consenting = event(user_id="c0001")
    response = client.post("/v1/track", json=view)
    assert response.status_code == 202
    assert response.json() == {"status": "dropped", "reason": "no_tracking_consent"}
    batch = client.post("/v1/batch", json=[purchase, anonymous, consenting]).json()
    assert batch["accepted"] == 3 and batch["dropped"] == 0
    client.post("/v1/flush")
    assert [e["event_id"] for e in landed(landing)] == [
        purchase["event_id"],
        anonymous["event_id"],
        consenting["event_id"],
    ]
    assert rejected(landing) == []  # a consent drop keeps nothing


def test_files_are_renamed_after_flush_max_events_and_after_flush_max_ms(collector_settings):
    settings = collector_settings(flush_max_events=3, flush_max_ms=300)
    with serve(create_collector_app(settings)) as url:
        client = httpx.Client(base_url=url, timeout=10)
        assert client.post("/v1/batch", json=[event() for _ in range(3)]).status_code == 202
        assert len(landed(settings.landing_dir)) == 3  # full: renamed at once
        client.post("/v1/track", json=event())
        assert len(landed(settings.landing_dir)) == 3
        deadline = time.monotonic() + 10
        while len(landed(settings.landing_dir)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(landed(settings.landing_dir)) == 4  # due: renamed by the flusher
        assert len(event_files(settings.landing_dir)[0]) == 2


def test_a_signed_unsubscribe_link_lands_one_unsubscribe_event(collector):
    client, landing = collector
    link = email_links("https://shop.example.com", "c0002", "weekly_newsletter", "key")
    query = link["unsubscribe_url"].split("?", 1)[1]
    for _ in range(2):  # a second click is the same event (same id): deduplicated downstream
        response = httpx.get(f"{client.base_url}/u?{query}")  # no write key: the token is the proof
        assert response.status_code == 200 and response.json()["status"] == "unsubscribed"
    forged = httpx.post(f"{client.base_url}/u?c=c0001&k=weekly_newsletter&t=forged")
    assert forged.status_code == 403 and forged.json()["reason"] == "invalid_token"
    client.post("/v1/flush")
    events = landed(landing)
    assert [(e["event_type"], e["user_id"], e["campaign_id"]) for e in events] == [
        ("unsubscribe", "c0002", "weekly_newsletter")
    ] * 2
    assert events[0]["event_id"] == events[1]["event_id"]
    assert [r["reason"] for r in rejected(landing)] == ["invalid_token"]
