"""Preference centre → landing → real graph → decisions, journeys, payloads → served "view".

Customers opt out of subscription groups through the real collector; the events are loaded by a
real Dagster run (dbt builds `dim_consent`); campaign decisions, journeys and payloads are then
computed on that warehouse, and the send-time API serves the emails' view-in-browser links from
the payload files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from urllib.parse import urlparse

import duckdb
import httpx
import pytest

from personalization_assets import paths
from personalization_assets.defs.campaigns import links
from personalization_assets.defs.campaigns.config import Journey, load_campaigns_config
from personalization_assets.defs.campaigns.decisions import build_decisions
from personalization_assets.defs.campaigns.payloads import render_payloads, write_journey_jsonl
from personalization_assets.defs.campaigns.rendering import EmailRenderer, RendererConfig
from personalization_assets.defs.delivery.journeys import advance_journeys
from personalization_assets.defs.delivery.view import PayloadFiles
from personalization_assets.edge.collector import create_collector_app
from personalization_assets.edge.send_time import create_send_time_app
from personalization_assets.edge.settings import load_edge_settings
from tests.conftest import run_job, upstream_of_decisions, write_landing
from tests.edge.servers import serve, write_edge_config

SHIPPED = load_campaigns_config(paths.PROJECT_ROOT / "config" / "campaigns.yaml")
RENDERER = EmailRenderer(
    RendererConfig(
        templates_dir=paths.PROJECT_ROOT / "templates",
        brand=SHIPPED.defaults.brand,
        base_url=SHIPPED.defaults.base_url,
    )
)
FORM = {"content-type": "application/x-www-form-urlencoded"}
# customer → the preference-centre submissions they make, in order
SUBMISSIONS = {
    "g1": ["group=offers&group=reminders&action=save"],  # out of newsletter
    "g2": ["group=newsletter&group=offers&action=save"],  # out of reminders
    "g3": ["group=newsletter&action=save", "group=offers&group=newsletter&action=save"],
    "g4": ["group=offers&action=unsubscribe_all"],
    "g5": [],
}


def _customer(customer_id: str) -> dict[str, str]:
    return {
        "customer_id": customer_id,
        "email": f"{customer_id}@example.com",
        "first_name": customer_id.upper(),
        "last_name": "Lee",
        "gender": "f",
        "birth_date": "1985-03-03",
        "city": "Berlin",
        "country": "DE",
        "timezone": "Europe/Berlin",
        "signup_date": "2026-01-01",
        "email_consent": "true",
        "tracking_consent": "true",
        "unsubscribed": "false",
    }


def _cart(customer: str, at: dt.datetime) -> dict:
    return {
        "event_id": f"cart-{customer}",
        "user_id": customer,
        "event_type": "add_to_cart",
        "timestamp": at.isoformat(),
        "product_id": "p1",
    }


def _config():
    """Two batch campaigns (newsletter, offers) and a cart journey (reminders), no holdout."""
    base = next(c for c in SHIPPED.campaigns if c.id == "weekly_newsletter")
    plain = {
        "holdout_fraction": 0.0,
        "audience": base.audience.model_copy(update={"exclude_segments": []}),
    }
    newsletter = base.model_copy(update={**plain, "category": "newsletter", "schedule": None})
    offers = base.model_copy(
        update={
            **plain,
            "id": "batch_offers",
            "name": "Offers",
            "category": "offers",
            "schedule": None,
        }
    )
    journey = Journey.model_validate(
        {
            "id": "cart_follow_up",
            "name": "Cart follow-up",
            "category": "reminders",
            "entry": {"type": "cart_abandonment", "wait_minutes": 60, "lookback_hours": 48},
            "steps": [{"id": "reminder", "send": {"template": "cart_abandonment"}}],
        }
    )
    return SHIPPED.model_copy(update={"campaigns": [newsletter, offers], "journeys": [journey]})


@pytest.fixture(scope="module")
def opted_shop(tmp_path_factory):
    """The shop after the preference submissions went through the collector and a graph run."""
    root = tmp_path_factory.mktemp("opted_shop")
    now = dt.datetime.now(dt.UTC)
    day = now.date().isoformat()
    write_landing(
        root,
        events={day: [_cart(c, now - dt.timedelta(hours=3)) for c in SUBMISSIONS]},
        customers=[_customer(c) for c in SUBMISSIONS],
        products=[
            {
                "product_id": "p1",
                "name": "Runner",
                "category": "shoes",
                "price": "50",
                "currency": "EUR",
                "in_stock": "true",
            }
        ],
    )
    config_dir = write_edge_config(root / "config")
    shutil.copy(paths.PROJECT_ROOT / "config" / "campaigns.yaml", config_dir / "campaigns.yaml")
    settings = load_edge_settings(
        config_dir, landing_dir=root / "landing", snapshot_path=root / "snapshot.duckdb"
    )
    with serve(create_collector_app(settings)) as url, httpx.Client(base_url=url) as client:
        for customer, forms in SUBMISSIONS.items():
            query = {
                "c": customer,
                "k": "weekly_newsletter",
                "t": links.sign("preferences", customer, "weekly_newsletter"),
            }
            for visit, form in enumerate(forms):
                body = f"n={customer}-{visit}&{form}"
                response = client.post("/preferences", params=query, content=body, headers=FORM)
                assert response.status_code == 200
        assert client.post("/v1/flush").status_code == 200
    assert run_job(root, asset_selection=upstream_of_decisions()).success
    clock = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=1)
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    con.execute("set TimeZone = 'UTC'")
    config = _config()
    build_decisions(con, config, send_date=clock.date(), clock=clock)
    render_payloads(
        con,
        RENDERER,
        send_date=clock.date(),
        base_url=config.defaults.base_url,
        campaign_names={c.id: c.name for c in config.campaigns},
        output_dir=root / "output",
    )
    advance_journeys(con, config, RENDERER, clock=clock)
    write_journey_jsonl(con, root / "output", clock)  # as the journey_progress asset does
    con.close()
    return root, settings


def _rows(root, sql: str) -> list[tuple]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_the_ledger_holds_the_latest_choice_per_group(opted_shop):
    root, _ = opted_shop
    rows = _rows(
        root,
        "select customer_id, purpose, granted, source from main.dim_consent "
        "where purpose like 'email_group:%' or source = 'unsubscribe_event' order by all",
    )
    groups = {
        (c, p.removeprefix("email_group:")): g for c, p, g, _ in rows if p != "email_marketing"
    }
    assert groups == {
        ("g1", "newsletter"): False,
        ("g1", "offers"): True,
        ("g1", "reminders"): True,
        ("g2", "newsletter"): True,
        ("g2", "offers"): True,
        ("g2", "reminders"): False,
        ("g3", "newsletter"): True,
        ("g3", "offers"): True,  # opted out, then back in: the latest statement wins
        ("g3", "reminders"): False,
    }
    assert [(c, g) for c, p, g, s in rows if p == "email_marketing"] == [("g4", False)]


def test_campaigns_skip_only_the_group_a_customer_left(opted_shop):
    root, _ = opted_shop
    decided = {
        (customer, campaign): status + (":" + reason if reason else "")
        for customer, campaign, status, reason in _rows(
            root,
            "select customer_id, campaign_id, status, reason from campaigns.campaign_decisions",
        )
    }
    assert decided == {
        ("g1", "weekly_newsletter"): "excluded:group_opt_out",
        ("g1", "batch_offers"): "send",
        ("g2", "weekly_newsletter"): "send",
        ("g2", "batch_offers"): "send",
        ("g3", "weekly_newsletter"): "send",
        ("g3", "batch_offers"): "send",
        ("g4", "weekly_newsletter"): "excluded:unsubscribed",
        ("g4", "batch_offers"): "excluded:unsubscribed",
        ("g5", "weekly_newsletter"): "send",
        ("g5", "batch_offers"): "send",
    }
    payloads = _rows(
        root,
        "select customer_id, campaign_id from campaigns.email_payloads where status = 'rendered' "
        "order by all",
    )
    assert ("g1", "weekly_newsletter") not in payloads and ("g1", "batch_offers") in payloads
    assert not [p for p in payloads if p[0] == "g4"]


def test_journeys_skip_customers_who_left_the_journeys_group(opted_shop):
    root, _ = opted_shop
    states = dict(
        _rows(
            root,
            "select customer_id, coalesce(exit_reason, status) from delivery.journey_state "
            "where journey_id = 'cart_follow_up'",
        )
    )
    sent = {
        row[0]
        for row in _rows(
            root,
            "select customer_id from delivery.journey_payloads "
            "where journey_id = 'cart_follow_up' and status = 'rendered'",
        )
    }
    assert states["g2"] == "ineligible: group_opt_out"
    assert states["g3"] == "ineligible: group_opt_out"  # its latest form left reminders unticked
    assert states["g4"] == "ineligible: unsubscribed"
    assert sent == {"g1", "g5"}


def test_view_in_browser_serves_exactly_the_rendered_payload(opted_shop):
    root, settings = opted_shop
    payloads = _rows(
        root,
        "select idempotency_key, customer_id, html from campaigns.email_payloads "
        "where status = 'rendered' order by customer_id, campaign_id",
    )
    assert len(payloads) == 7
    app = create_send_time_app(settings, payloads_dir=root / "output" / "payloads")
    with serve(app) as url, httpx.Client(base_url=url) as client:
        _follow_view_links(client, [(key, html) for key, _, html in payloads])
        key, customer, _ = payloads[0]
        other_key = payloads[1][0]
        refused = [
            client.get(f"/view/{key}", params={"t": links.view_token(other_key)}),
            client.get(f"/view/{key}", params={"t": links.view_token(key, b"other-secret")}),
            client.get(f"/view/{key}", params={"t": links.sign("view", "g9", key)}),
            client.get(f"/view/{key}"),
            client.get("/view/no-such-key", params={"t": links.view_token("no-such-key")}),
        ]
    assert [r.status_code for r in refused] == [404] * 5
    assert len({r.text for r in refused}) == 1


def test_view_in_browser_serves_journey_emails_too(opted_shop):
    root, settings = opted_shop
    sent = _rows(
        root,
        "select idempotency_key, html from delivery.journey_payloads "
        "where status = 'rendered' order by customer_id",
    )
    assert sent
    app = create_send_time_app(settings, payloads_dir=root / "output" / "payloads")
    with serve(app) as url, httpx.Client(base_url=url) as client:
        _follow_view_links(client, sent)


def _follow_view_links(client: httpx.Client, emails: list[tuple[str, str]]) -> None:
    """Each email's own view-in-browser link (as the HTML carries it) returns that email."""
    for key, html in emails:
        href = re.search(r'href="([^"]*/view/[^"]+)"', html).group(1).replace("&amp;", "&")
        link = urlparse(href)
        assert link.path == f"/view/{key}"
        response = client.get(f"{link.path}?{link.query}")
        assert response.status_code == 200
        assert response.text == html


def _jsonl(path, items: dict[str, str]) -> None:
    """Payload lines as `payloads._write_jsonl` writes them, replaced by write-then-rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    lines = [
        json.dumps({"idempotency_key": k, "to": "x@example.com", "html": h})
        for k, h in items.items()
    ]
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def test_payload_files_follow_replaced_files_and_check_the_token_first(tmp_path):
    folder = tmp_path / "payloads" / "send_date=2026-11-01"
    _jsonl(folder / "weekly_newsletter.jsonl", {"k1": "<p>one</p>", "k2": "<p>two</p>"})
    files = PayloadFiles(tmp_path / "payloads", check_interval_ms=0)
    assert files.html("k2", links.view_token("k2")) == "<p>two</p>"
    assert files.html("k2", links.view_token("k1")) is None
    _jsonl(folder / "weekly_newsletter.jsonl", {"k2": "<p>two, re-rendered</p>"})
    _jsonl(tmp_path / "payloads" / "send_date=2026-11-02" / "birthday.jsonl", {"k3": "<p>3</p>"})
    assert files.html("k2", links.view_token("k2")) == "<p>two, re-rendered</p>"
    assert files.html("k1", links.view_token("k1")) is None  # withdrawn payload
    assert files.html("k3", links.view_token("k3")) == "<p>3</p>"
    assert len(files) == 2
