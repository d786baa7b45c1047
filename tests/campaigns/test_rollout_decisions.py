"""Test-then-winner through real campaign decisions on a copy of the sample shop (real DuckDB).

Day 1: only the test share is sent (A/B split), the rest waits. Responses for the test sends are
planted as email events with B clicking far more. After the wait the winner is decided once,
recorded, and sent to the remainder; nobody gets the campaign twice, and a rerun changes nothing.
"""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb

from personalization_assets.defs.campaigns.config import Campaign
from personalization_assets.defs.campaigns.decisions import build_decisions
from personalization_assets.defs.campaigns.rollout import RolloutSpec
from personalization_assets.settings import MeasurementSettings
from tests.campaigns.test_decisions import SHIPPED


def _config(metric_default="A"):
    newsletter = next(c for c in SHIPPED.campaigns if c.trigger.type == "batch")
    campaign = Campaign.model_validate(
        {
            **newsletter.model_dump(),
            "id": "spring_promo",
            "holdout_fraction": 0.0,
            "variants": [{"name": "A", "weight": 0.5}, {"name": "B", "weight": 0.5}],
            "schedule": None,
            "rollout": RolloutSpec(
                test_fraction=0.3,
                wait_hours=24,
                metric="click_rate",
                default_variant=metric_default,
                min_recipients_per_variant=20,
                min_responses_per_variant=1,
            ).model_dump(),
        }
    )
    return SHIPPED.model_copy(update={"campaigns": [campaign], "journeys": []})


def _statuses(con, send_date):
    return dict(
        con.execute(
            """select customer_id, status || ':' || coalesce(variant, '')
               from campaigns.campaign_decisions
               where campaign_id = 'spring_promo' and send_date = ?""",
            [send_date],
        ).fetchall()
    )


def _plant_responses(con, day):
    """Every test send delivered; B recipients click 60 %, A recipients 10 % (by hash)."""
    con.execute(
        """
        insert into main.fct_events (event_id, customer_id, event_type, event_ts, campaign_id,
                                     variant, event_date)
        select 'plant-' || kind || '-' || customer_id, customer_id, 'email_' || kind,
               ts + case kind when 'send' then interval 0 minute when 'open' then interval 30 minute
                              else interval 40 minute end,
               campaign_id, variant, cast(ts as date)
        from (select customer_id, campaign_id, variant, clock as ts,
                     (md5_number(customer_id) % 100) / 100.0 as u
              from campaigns.campaign_decisions
              where campaign_id = 'spring_promo' and status = 'send' and send_date = ?),
             (select unnest(['send', 'open', 'click']) as kind)
        where kind = 'send' or u < case variant when 'B' then 0.6 else 0.1 end
        """,
        [day],
    )


def test_test_phase_then_the_significant_winner_to_everyone_else_once(sample_shop, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    shutil.copy(sample_shop.database, database)
    con = duckdb.connect(str(database))
    con.execute("set TimeZone = 'UTC'")
    config = _config()
    measurement = MeasurementSettings()
    day1, day3 = dt.date(2026, 11, 2), dt.date(2026, 11, 4)

    def decide(day, hour=9):
        clock = dt.datetime.combine(day, dt.time(hour))
        build_decisions(con, config, send_date=day, clock=clock, measurement=measurement)
        return _statuses(con, day)

    first = decide(day1)
    sent_first = {c for c, s in first.items() if s.startswith("send:")}
    waiting = {c for c, s in first.items() if s.startswith("awaiting_winner")}
    assert sent_first and waiting
    share = len(sent_first) / (len(sent_first) + len(waiting))
    assert 0.2 < share < 0.4  # test_fraction 0.3 (eligible customers only are counted)
    assert {s.split(":")[1] for s in first.values() if s.startswith("send:")} == {"A", "B"}
    # Not decided before the wait has passed.
    assert decide(day1, hour=20) == first

    _plant_responses(con, day1)
    third = decide(day3)
    decision = con.execute(
        "select winner, reason from campaigns.rollout_decisions where campaign_id = 'spring_promo'"
    ).fetchall()
    assert decision == [("B", "significant")]
    second_wave = {c for c, s in third.items() if s == "send:B"}
    assert second_wave and second_wave <= waiting
    assert all(third[c] == "already_sent:" + first[c].split(":")[1] for c in sent_first)
    # A rerun (or backfill) of day 3 neither re-decides nor sends anyone a second email.
    assert decide(day3) == third
    assert con.execute("select count(*) from campaigns.rollout_decisions").fetchall() == [(1,)]
    per_customer = con.execute(
        """select max(n) from (select customer_id, count(distinct send_date) as n
                               from campaigns.campaign_decisions
                               where campaign_id = 'spring_promo' and status = 'send'
                               group by customer_id)"""
    ).fetchall()[0][0]
    con.close()
    assert per_customer == 1


def test_without_a_significant_difference_the_default_variant_goes_to_the_rest(
    sample_shop, tmp_path
):
    database = tmp_path / "warehouse.duckdb"
    shutil.copy(sample_shop.database, database)
    con = duckdb.connect(str(database))
    con.execute("set TimeZone = 'UTC'")
    config = _config(metric_default="A")
    day1, day3 = dt.date(2026, 11, 2), dt.date(2026, 11, 4)
    for day in (day1, day3):  # no responses at all: too few to decide
        build_decisions(
            con,
            config,
            send_date=day,
            clock=dt.datetime.combine(day, dt.time(9)),
            measurement=MeasurementSettings(),
        )
    winner, reason = con.execute(
        "select winner, reason from campaigns.rollout_decisions"
    ).fetchall()[0]
    remainder = {s for s in _statuses(con, day3).values() if s.startswith("send:")}
    con.close()
    assert winner == "A" and reason in ("too_few_responses", "not_significant")
    assert remainder == {"send:A"}
