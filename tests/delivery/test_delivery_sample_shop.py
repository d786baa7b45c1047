"""Delivery of the sample shop's rendered payloads through the real Dagster asset and SMTP."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import duckdb
import pytest

from personalization_assets.defs.campaigns.decisions import build_decisions
from personalization_assets.defs.delivery.assets import DELIVERIES_KEY
from personalization_assets.defs.delivery.smtp_sink import SmtpSink
from tests.conftest import run_job


@pytest.fixture
def shop_copy(sample_shop, tmp_path):
    shutil.copytree(sample_shop.landing, tmp_path / "landing")
    shutil.copy(sample_shop.database, tmp_path / "warehouse.duckdb")
    return tmp_path


def _query(database, sql, params=None):
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _deliver_with_smtp(root, port, monkeypatch):
    monkeypatch.setenv("PERSONALIZATION_SENDER_MODE", "smtp")
    monkeypatch.setenv("PERSONALIZATION_SMTP_PORT", str(port))
    result = run_job(root, asset_selection=[DELIVERIES_KEY])
    assert result.success
    return result


def test_the_pipeline_run_delivered_nothing_in_dry_run(sample_shop):
    assert sample_shop.result.success
    statuses = dict(
        sample_shop.query("select status, count(*) from delivery.send_ledger group by all")
    )
    rendered = sample_shop.query(
        "select count(*) from campaigns.email_payloads where status = 'rendered'"
    )[0][0]
    assert rendered > 0 and statuses.get("dry_run", 0) > 0
    assert "sent" not in statuses
    assert sum(statuses.values()) >= rendered
    journeys = sample_shop.result.asset_materializations_for_node("delivery__journey_progress")
    assert journeys and "cart_recovery" in journeys[0].metadata["journeys"].value


def test_every_eligible_sample_payload_arrives_exactly_once_as_mime(shop_copy, monkeypatch):
    database = shop_copy / "warehouse.duckdb"
    expected = dict(
        _query(
            database,
            "select idempotency_key, to_address from delivery.send_ledger where status = 'dry_run'",
        )
    )
    payloads = {
        key: (subject, headers)
        for key, subject, headers in _query(
            database, "select idempotency_key, subject, headers from campaigns.email_payloads"
        )
    }
    with SmtpSink(shop_copy / "sink") as sink:
        # A copy of the shipped config with a high rate limit keeps the test quick.
        config_dir = shop_copy / "config"
        shutil.copytree(sample_config_dir(), config_dir)
        text = (config_dir / "delivery.yaml").read_text()
        (config_dir / "delivery.yaml").write_text(
            text.replace("rate_limit_per_second: 20", "rate_limit_per_second: 5000")
        )
        monkeypatch.setenv("PERSONALIZATION_CONFIG_DIR", str(config_dir))
        result = _deliver_with_smtp(shop_copy, sink.port, monkeypatch)
        messages = sink.messages()
        metadata = result.asset_materializations_for_node("delivery__email_deliveries")[0].metadata
        assert metadata["sent"].value == len(expected)
        keys = [m["X-Idempotency-Key"] for m in messages]
        assert sorted(keys) == sorted(expected)
        for message in messages:
            key = message["X-Idempotency-Key"]
            subject, headers = payloads[key]
            assert message["To"] == expected[key] and message["Subject"] == subject
            assert message.get_content_type() == "multipart/alternative"
            assert {p.get_content_type() for p in message.iter_parts()} == {
                "text/plain",
                "text/html",
            }
            assert message["List-Unsubscribe"] and "List-Unsubscribe=One-Click" in str(
                message["List-Unsubscribe-Post"]
            )
            assert message["Message-ID"].startswith(f"<{key}@")
        rerun = _deliver_with_smtp(shop_copy, sink.port, monkeypatch)
        assert len(sink.messages()) == len(messages)
        rerun_metadata = rerun.asset_materializations_for_node("delivery__email_deliveries")[0]
        assert rerun_metadata.metadata["attempts"].value == 0


def sample_config_dir():
    from personalization_assets import paths

    return paths.PROJECT_ROOT / "config"


def test_a_bounced_customer_is_ineligible_in_the_next_decisions_run(shop_copy):
    from personalization_assets import paths
    from personalization_assets.defs.campaigns.config import load_campaigns_config
    from personalization_assets.defs.delivery.delivery import Clock, deliver
    from personalization_assets.defs.delivery.senders import SmtpSender, SmtpSettings
    from tests.delivery.support import delivery_config

    con = duckdb.connect(str(shop_copy / "warehouse.duckdb"))
    con.execute("set TimeZone = 'UTC'")
    customer, address, send_date = con.execute(
        "select customer_id, to_address, send_date from campaigns.email_payloads "
        "where campaign_id = 'weekly_newsletter' and status = 'rendered' order by 1 limit 1"
    ).fetchall()[0]
    # Only this customer's payloads are delivered here (the whole set is the test above).
    con.execute("delete from delivery.send_ledger")
    con.execute("delete from campaigns.email_payloads where customer_id != ?", [customer])
    # Due now: the shop's newsletter is scheduled for a past local morning and would have expired.
    con.execute("update campaigns.email_payloads set send_at = null")
    with SmtpSink(shop_copy / "sink", rules={address: "reject"}) as sink:
        deliver(
            con,
            SmtpSender(SmtpSettings(port=sink.port)),
            delivery_config(),
            run_id="bounce",
            mode="smtp",
            clock=Clock(),
        )
        assert address not in {m["To"] for m in sink.messages()}
    assert con.execute(
        "select status from delivery.send_ledger where customer_id = ? and campaign_id = ?",
        [customer, "weekly_newsletter"],
    ).fetchall() == [("bounced",)]
    campaigns = load_campaigns_config(paths.PROJECT_ROOT / "config" / "campaigns.yaml")
    next_day = send_date + dt.timedelta(days=1)
    clock = dt.datetime.combine(next_day, dt.time(9))
    build_decisions(con, campaigns, send_date=next_day, clock=clock)
    outcomes = con.execute(
        "select distinct status, reason from campaigns.campaign_decisions "
        "where customer_id = ? and send_date = ?",
        [customer, next_day],
    ).fetchall()
    assert outcomes == [("excluded", "suppressed")]
    con.close()


def test_delivery_assets_are_in_their_own_group_and_job():
    from personalization_assets.definitions import defs

    definitions = defs()
    job = definitions.resolve_job_def("email_delivery")
    keys = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert keys == {
        "delivery/email_deliveries",
        "delivery/journey_progress",
        "delivery/delivery_feedback",
    }
    full = definitions.resolve_job_def("full_pipeline").asset_layer.selected_asset_keys
    assert dg.AssetKey(["delivery", "email_deliveries"]) in full
