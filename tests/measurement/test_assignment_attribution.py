"""The assignment record and intent-to-treat outcomes on a hand-built warehouse (real DuckDB)."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pytest

from personalization_assets.defs.measurement.assets import _analyze_holdout, planned_shares
from personalization_assets.defs.measurement.attribution import assignment_outcomes
from personalization_assets.settings import MeasurementSettings

T0 = datetime(2026, 6, 2, 7, 0)
EVENTS_DDL = (
    "create table fct_events (event_id varchar, customer_id varchar, event_type varchar, "
    "event_ts timestamp, campaign_id varchar, variant varchar)"
)
ORDERS_DDL = (
    "create table fct_orders (order_id varchar, customer_id varchar, ordered_at timestamp, "
    "net_amount_base double, is_cancellation boolean)"
)


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute(EVENTS_DDL)
    con.execute(ORDERS_DDL)
    con.execute(
        "create table stg_experiments__assignments (campaign_id varchar, customer_id varchar, "
        "variant varchar, assigned_at timestamp, planned_share double, reject_reason varchar)"
    )
    assignments = [
        ("news", "c1", "A", _at(0), 0.45, None),
        ("news", "c1", "B", _at(1), 0.45, None),  # a later assignment: the first one counts
        ("news", "c2", "B", _at(0), 0.45, None),
        ("news", "c3", "holdout", _at(0), 0.10, None),
        ("news", "c4", "holdout", _at(0), 0.10, None),  # contaminated: was sent an email
        ("news", "c9", "A", _at(0), 0.45, "missing_variant"),  # rejected rows are ignored
        ("late", "c1", "A", _at(24 * 9), None, None),  # window still open at the data's end
    ]
    con.executemany(
        "insert into stg_experiments__assignments values (?, ?, ?, ?, ?, ?)", assignments
    )
    events = [
        ("e1", "c1", "email_send", _at(0), "news", "A"),
        ("e2", "c1", "email_open", _at(1), "news", "A"),
        ("e3", "c1", "email_open", _at(1.5), "news", "A"),  # duplicate open
        ("e4", "c2", "email_send", _at(0), "news", "A"),  # sent another variant than assigned
        ("e5", "c4", "email_send", _at(0), "news", "A"),
        ("e6", "c5", "email_send", _at(0), "news", "A"),  # a send nobody assigned
        ("e7", "c1", "page_view", _at(24 * 10), None, None),  # the data's end
    ]
    con.executemany("insert into fct_events values (?, ?, ?, ?, ?, ?)", events)
    orders = [
        ("o1", "c1", _at(-1), 50.0, False),  # before assignment: not counted
        ("o2", "c1", _at(30), 20.0, False),  # inside the window
        ("o3", "c1", _at(40), 5.0, False),  # inside too: revenue adds up, one conversion
        ("o4", "c2", _at(72), 99.0, False),  # exactly at assigned_at + 3 days: outside
        ("o5", "c3", _at(10), 30.0, False),  # holdout buys without an email: counted
        ("o6", "c3", _at(11), -30.0, True),  # a cancellation never counts
    ]
    con.executemany("insert into fct_orders values (?, ?, ?, ?, ?)", orders)
    yield con
    con.close()


def test_outcomes_are_intent_to_treat_from_the_first_assignment(con):
    frame, counts = assignment_outcomes(con, window_days=3, max_clicks_per_minute=5)
    rows = {(r.campaign_id, r.customer_id): r for r in frame.itertuples(index=False)}
    assert set(rows) == {
        ("news", "c1"),
        ("news", "c2"),
        ("news", "c3"),
        ("news", "c4"),
        ("late", "c1"),
    }
    c1 = rows[("news", "c1")]
    assert (c1.variant, c1.sent, c1.opened, c1.converted, c1.revenue) == ("A", 1, 1, 1, 25.0)
    assert (rows[("news", "c2")].converted, rows[("news", "c2")].revenue) == (0, 0.0)
    c3 = rows[("news", "c3")]
    assert (c3.variant, c3.sent, c3.opened, c3.converted, c3.revenue) == ("holdout", 0, 0, 1, 30.0)
    assert rows[("news", "c4")].variant == "holdout" and rows[("news", "c4")].sent == 1
    assert not rows[("late", "c1")].window_complete and rows[("news", "c1")].window_complete
    assert counts == {
        "sends_without_assignment": 1,
        "holdout_members_sent_an_email": 1,
        "sends_in_another_variant": 1,
        "assignments_window_open": 1,
    }


def test_engine_decisions_are_assignments_too(con):
    con.execute("create schema campaigns")
    con.execute(
        "create table campaigns.campaign_decisions (campaign_id varchar, customer_id varchar, "
        "status varchar, variant varchar, clock timestamp)"
    )
    con.executemany(
        "insert into campaigns.campaign_decisions values (?, ?, ?, ?, ?)",
        [
            ("weekly", "c1", "send", "A", _at(0)),
            ("weekly", "c2", "capped", "B", _at(0)),  # assigned, not sent: stays in its arm
            ("weekly", "c3", "holdout", "holdout", _at(0)),
            ("weekly", "c5", "excluded", "A", _at(0)),  # never assigned
        ],
    )
    frame, _ = assignment_outcomes(con, window_days=3, max_clicks_per_minute=5)
    weekly = frame[frame["campaign_id"] == "weekly"].set_index("customer_id")
    assert weekly["variant"].to_dict() == {"c1": "A", "c2": "B", "c3": "holdout"}
    assert set(weekly["source"]) == {"engine"} and weekly["planned_share"].isna().all()
    assert weekly.loc["c3", "converted"] == 1
    # without planned shares there is no split check, but the lift is still reported
    results, mismatches = _analyze_holdout(frame, MeasurementSettings())
    assert "weekly" in set(results["campaign_id"]) and mismatches == []
    assert "weekly" not in planned_shares(frame)


def test_without_any_assignment_record_the_frame_is_empty():
    con = duckdb.connect()
    con.execute(EVENTS_DDL)
    con.execute(ORDERS_DDL)
    frame, counts = assignment_outcomes(con, window_days=3, max_clicks_per_minute=5)
    assert frame.empty and counts["sends_without_assignment"] == 0
    assert _analyze_holdout(frame, MeasurementSettings())[0].empty


def test_engine_decisions_with_planned_shares_get_a_split_check(con):
    con.execute("create schema campaigns")
    con.execute(
        "create table campaigns.campaign_decisions (campaign_id varchar, customer_id varchar, "
        "status varchar, variant varchar, clock timestamp, planned_share double)"
    )
    rows = [("weekly", f"w{i}", "send", "A", _at(0), 0.5) for i in range(300)]
    rows += [("weekly", f"w{i}", "holdout", "holdout", _at(0), 0.5) for i in range(300, 400)]
    con.executemany("insert into campaigns.campaign_decisions values (?, ?, ?, ?, ?, ?)", rows)
    frame, _ = assignment_outcomes(con, window_days=3, max_clicks_per_minute=5)
    assert planned_shares(frame)["weekly"] == {"A": 0.5, "holdout": 0.5}
    _, mismatches = _analyze_holdout(frame, MeasurementSettings())
    assert mismatches == ["weekly"]  # 300 vs 100 where 50/50 was planned
