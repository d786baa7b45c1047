"""The preference centre on a real collector (uvicorn on loopback): page, form, landed events."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil

import duckdb
import httpx
import pytest

from personalization_assets import paths
from personalization_assets.defs.campaigns import links
from personalization_assets.edge.collector import create_collector_app
from personalization_assets.edge.send_time import create_send_time_app
from personalization_assets.edge.settings import load_edge_settings
from personalization_assets.edge.validation import validate_event
from tests.edge.servers import serve, tiny_snapshot, write_edge_config

GROUPS = ["newsletter", "offers", "reminders"]


@pytest.fixture
def edge(tmp_path):
    """(settings, landing dir); the shipped campaigns.yaml beside edge.yaml."""
    config = write_edge_config(tmp_path / "config")
    shutil.copy(paths.PROJECT_ROOT / "config" / "campaigns.yaml", config / "campaigns.yaml")
    settings = load_edge_settings(
        config, landing_dir=tmp_path / "landing", snapshot_path=tmp_path / "snapshot.duckdb"
    )
    return settings, tmp_path / "landing"


def _query(customer: str, campaign: str = "weekly_newsletter", token: str | None = None):
    return {
        "c": customer,
        "k": campaign,
        "t": token or links.sign("preferences", customer, campaign),
    }


def _checkboxes(html: str) -> dict[str, bool]:
    boxes = re.findall(r'<input type="checkbox" name="group" value="([^"]+)"( checked)?>', html)
    return {value: bool(checked) for value, checked in boxes}


def _landed(landing) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted((landing / "events").glob("date=*/*.ndjson"))
        for line in path.read_text().splitlines()
        if line
    ]


def _flush(client: httpx.Client) -> None:
    assert client.post("/v1/flush").status_code == 200


def test_the_page_lists_every_group_ticked_when_the_state_is_unknown(edge):
    settings, _ = edge
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/preferences", params=_query("c1"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert _checkboxes(response.text) == dict.fromkeys(GROUPS, True)
    for name in ("Newsletter", "Offers and greetings", "Cart reminders"):
        assert name in response.text
    assert 'value="unsubscribe_all"' in response.text
    action = re.search(r'<form method="post" action="([^"]+)"', response.text).group(1)
    assert action.startswith("/preferences?c=c1&amp;k=weekly_newsletter&amp;t=")


def test_the_page_shows_the_snapshot_state_when_it_carries_one(edge):
    settings, _ = edge
    tiny_snapshot(settings.snapshot_path, {"c1": True, "c2": True})
    con = duckdb.connect(str(settings.snapshot_path))
    con.execute("create table group_consent (customer_id varchar, group_id varchar, granted bool)")
    con.execute("insert into group_consent values ('c1', 'offers', false), ('c2', 'offers', true)")
    con.execute("update customers set unsubscribed = true where customer_id = 'c2'")
    con.close()
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        first = client.get("/preferences", params=_query("c1")).text
        second = client.get("/preferences", params=_query("c2")).text
    assert _checkboxes(first) == {"newsletter": True, "offers": False, "reminders": True}
    assert "currently unsubscribed" not in first
    assert _checkboxes(second) == dict.fromkeys(GROUPS, True)
    assert "currently unsubscribed from all" in second


def test_group_names_are_escaped(edge):
    settings, _ = edge
    path = settings.config_dir / "campaigns.yaml"
    path.write_text(
        "subscription_groups:\n"
        "  - {id: news, name: '<b>News</b>', description: 'a & b'}\n"
        "campaigns: []\n"
    )
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        html = client.get("/preferences", params=_query("c1")).text
    assert "&lt;b&gt;News&lt;/b&gt;" in html and "<b>News" not in html
    assert "a &amp; b" in html


def test_posting_the_form_lands_one_preference_update_event(edge):
    settings, landing = edge
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = client.post(
            "/preferences",
            params=_query("c1"),
            content="n=abc&group=newsletter&group=reminders&action=save",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        _flush(client)
    assert response.status_code == 200
    assert "Your preferences are saved" in response.text
    assert _checkboxes(response.text) == {"newsletter": True, "offers": False, "reminders": True}
    (event,) = _landed(landing)
    assert event["event_type"] == "preference_update"
    assert (event["user_id"], event["campaign_id"]) == ("c1", "weekly_newsletter")
    assert event["properties"] == {"newsletter": True, "offers": False, "reminders": True}
    assert validate_event(event, now=dt.datetime.now(dt.UTC)).ok


def test_a_resubmitted_form_is_one_event_id_and_a_new_visit_a_new_one(edge):
    settings, landing = edge
    form = {"content-type": "application/x-www-form-urlencoded"}
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        for nonce in ("visit1", "visit1", "visit2"):
            body = f"n={nonce}&group=offers&action=save"
            assert client.post(
                "/preferences", params=_query("c1"), content=body, headers=form
            ).is_success
        # A visit's page carries a fresh nonce, so identical choices on two visits differ.
        pages = [client.get("/preferences", params=_query("c1")).text for _ in range(2)]
        _flush(client)
    ids = [e["event_id"] for e in _landed(landing)]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]
    nonces = [re.search(r'name="n" value="([^"]+)"', page).group(1) for page in pages]
    assert nonces[0] != nonces[1]


def test_unsubscribe_from_all_lands_an_unsubscribe_event(edge):
    settings, landing = edge
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        response = client.post(
            "/preferences",
            params=_query("c1", "birthday"),
            content="n=x&group=offers&action=unsubscribe_all",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        _flush(client)
    assert response.status_code == 200 and "unsubscribed from all" in response.text
    (event,) = _landed(landing)
    assert (event["event_type"], event["user_id"], event["campaign_id"]) == (
        "unsubscribe",
        "c1",
        "birthday",
    )


@pytest.mark.parametrize(
    "query",
    [
        _query("c1", token=links.sign("preferences", "c2", "weekly_newsletter")),
        _query("c1", token=links.sign("unsubscribe", "c1", "weekly_newsletter")),
        _query("c1", token=links.sign("preferences", "c1", "weekly_newsletter", b"other")),
        {"c": "c1", "k": "weekly_newsletter"},
    ],
    ids=["other_customer", "other_purpose", "other_secret", "no_token"],
)
def test_a_forged_link_is_refused_and_lands_nothing(edge, query):
    settings, landing = edge
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        page = client.get("/preferences", params=query)
        post = client.post(
            "/preferences",
            params=query,
            content="n=x&group=offers&action=save",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        _flush(client)
    assert (page.status_code, post.status_code) == (403, 403)
    assert "checkbox" not in page.text
    assert _landed(landing) == []
    rejected = (landing / "rejected").rglob("*.ndjson")
    reasons = [json.loads(line)["reason"] for p in rejected for line in p.read_text().splitlines()]
    assert reasons == ["invalid_token", "invalid_token"]


def test_the_send_time_api_answers_opted_out_for_a_campaign_of_a_group_left(sample_shop, tmp_path):
    """With group states in the snapshot, a campaign of a group the customer left is opted out."""
    served = tmp_path / "snapshot.duckdb"
    shutil.copy(sample_shop.output / "serving" / "snapshot.duckdb", served)
    [(customer,)] = sample_shop.query(
        "select d.customer_id from campaigns.campaign_decisions d "
        "join main.dim_customers c using (customer_id) "
        "where d.status = 'send' and c.email_consent and not c.unsubscribed "
        "order by d.customer_id limit 1"
    )
    con = duckdb.connect(str(served))
    con.execute(
        "create or replace table group_consent "
        "(customer_id varchar, group_id varchar, granted bool)"
    )
    con.execute("insert into group_consent values (?, 'offers', false)", [customer])
    con.close()
    settings = load_edge_settings(
        paths.config_dir(),
        snapshot_path=served,
        landing_dir=tmp_path / "landing",
        api={"reload_check_ms": 0},
    )
    with serve(create_send_time_app(settings)) as url, httpx.Client(base_url=url) as client:
        answers = {
            campaign: client.get(
                f"/v1/customers/{customer}/content", params={"campaign": campaign}
            ).json()
            for campaign in ("win_back", "weekly_newsletter")
        }
    assert (answers["win_back"]["status"], answers["win_back"]["reason"]) == (
        "opted_out",
        "group_opt_out",
    )
    assert answers["weekly_newsletter"]["status"] == "ok"
