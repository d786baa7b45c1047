"""Event validation at the edge uses the warehouse's reason codes and thresholds."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from personalization_assets import paths
from personalization_assets.edge.settings import load_edge_settings
from personalization_assets.edge.validation import latest_allowed, validate_event

NOW = dt.datetime(2026, 11, 25, 15, 30, tzinfo=dt.UTC)
VALID = {
    "event_id": "e1",
    "user_id": "c1",
    "event_type": "purchase",
    "timestamp": "2026-11-25T10:00:00+01:00",
    "product_id": "p1",
    "amount": 12.5,
    "properties": {"order_id": "o1", "quantity": 1},
}


def reasons(**changes):
    event = {k: v for k, v in {**VALID, **changes}.items() if v is not ...}
    return validate_event(event, now=NOW, max_properties_chars=64).reasons


def test_a_contract_event_is_valid_and_its_timestamp_is_read_as_utc():
    verdict = validate_event(VALID, now=NOW)
    assert verdict.ok
    assert verdict.event_ts == dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"event_id": "  "}, ["missing_event_id"]),
        ({"user_id": ...}, ["missing_user_id"]),
        ({"event_type": "Teleport"}, ["unknown_event_type"]),
        ({"event_type": " PURCHASE "}, []),  # trimmed and lower-cased, as dbt does
        ({"timestamp": "25/11/2026"}, ["invalid_timestamp"]),
        ({"timestamp": "2026-11-27T00:00:01Z"}, ["future_timestamp"]),
        ({"timestamp": "2026-11-27T00:00:00Z"}, []),  # end of landing day + 24 h is allowed
        ({"amount": -1}, ["negative_amount"]),
        ({"amount": ...}, ["missing_amount"]),
        ({"amount": "12.5"}, ["wrong_type"]),
        ({"amount": True}, ["wrong_type"]),
        ({"product_id": None}, ["missing_product_id"]),
        ({"properties": {"note": "x" * 80}}, ["oversize_properties"]),
        ({"properties": [1, 2]}, ["invalid_properties"]),
        ({"event_id": 7}, ["wrong_type", "missing_event_id"]),
    ],
)
def test_each_broken_rule_gives_the_warehouse_reason(changes, expected):
    assert reasons(**changes) == expected


def test_a_non_object_is_invalid_json_like_in_the_warehouse():
    assert validate_event([VALID], now=NOW).reasons == ["invalid_json"]


def test_the_future_limit_is_the_end_of_the_utc_landing_day_plus_the_tolerance():
    late_evening = dt.datetime(2026, 11, 25, 23, 59, tzinfo=dt.UTC)
    assert latest_allowed(late_evening, 24) == dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


def test_edge_thresholds_equal_the_dbt_vars():
    dbt_vars = yaml.safe_load((paths.DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    collector = load_edge_settings(paths.PROJECT_ROOT / "config").collector
    assert collector.future_tolerance_hours == dbt_vars["future_tolerance_hours"]
    assert collector.max_properties_chars == dbt_vars["max_properties_chars"]


def test_invalid_edge_settings_fail_with_the_file_named(tmp_path):
    (tmp_path / "edge.yaml").write_text("collector: {flush_max_events: 0, colour: blue}\n")
    with pytest.raises(ValueError, match=r"(?s)edge\.yaml.*flush_max_events.*colour"):
        load_edge_settings(tmp_path)
