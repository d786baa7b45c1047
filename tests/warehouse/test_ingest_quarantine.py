"""The cleaned warehouse accounts for every landing row: a real Dagster run with real dbt on DuckDB
over a generated shop whose manifest lists every injected bad row."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from tests.conftest import failed_checks


def test_full_graph_materializes_with_all_checks_passing(sample_shop):
    assert sample_shop.result.success
    errors = {k: v for k, v in failed_checks(sample_shop.result).items() if v == "ERROR"}
    assert errors == {}


def test_every_injected_bad_event_is_quarantined_with_its_reason(sample_shop):
    expected = {
        (row["file"], row["line"]): row["reason"]
        for row in sample_shop.manifest["injected"]
        if row["source"] == "events" and row["disposition"] == "quarantined"
    }
    actual = {
        (source_file, line): reason
        for source_file, line, reason in sample_shop.query(
            "select source_file, source_row, reason from quarantined_rows where source = 'events'"
        )
    }
    assert actual == expected
    assert len(set(expected.values())) >= 10


def test_duplicates_are_set_aside_not_dropped(sample_shop):
    expected = {
        (row["file"], row["line"])
        for row in sample_shop.manifest["injected"]
        if row["disposition"] == "duplicate"
    }
    actual = set(sample_shop.query("select source_file, line_no from event_duplicates"))
    assert expected and actual == expected


def test_accepted_counts_reconcile_exactly_with_the_manifest(sample_shop):
    counts = sample_shop.manifest["counts"]
    rows = {
        source: (received, accepted, quarantined, duplicates, unaccounted)
        for source, received, accepted, quarantined, duplicates, unaccounted in sample_shop.query(
            "select * from ingest_reconciliation"
        )
    }
    assert rows["events"] == (
        counts["event_lines"],
        counts["expected_events_accepted"],
        counts["expected_events_quarantined"],
        counts["expected_events_duplicates"],
        0,
    )
    assert rows["customers"][1:3] == (
        counts["expected_customers_accepted"],
        counts["expected_customers_quarantined"],
    )
    assert rows["products"][1:3] == (
        counts["expected_products_accepted"],
        counts["expected_products_quarantined"],
    )
    assert rows["assignments"][1:3] == (
        counts["expected_assignments_accepted"],
        counts["expected_assignments_quarantined"],
    )
    assert all(row[4] == 0 for row in rows.values())


def test_bad_crm_and_catalog_rows_are_quarantined_with_their_reasons(sample_shop):
    expected = Counter(
        (row["source"], row["reason"])
        for row in sample_shop.manifest["injected"]
        if row["source"] in ("customers", "products") and row["disposition"] == "quarantined"
    )
    actual = Counter(
        dict(
            ((source, reason), n)
            for source, reason, n in sample_shop.query(
                "select source, reason, count(*) from quarantined_rows "
                "where source in ('customers', 'products') group by all"
            )
        )
    )
    assert actual == expected


def test_stray_case_and_whitespace_ids_are_normalized_and_accepted(sample_shop):
    injected = [
        row for row in sample_shop.manifest["injected"] if row["kind"] == "stray_case_whitespace"
    ]
    assert injected
    for row in injected:
        raw = _raw_line(sample_shop, row["file"], row["line"])
        stored = sample_shop.query(
            "select customer_id, product_id from fct_events where event_id = ?", [row["event_id"]]
        )
        assert stored == [
            (
                raw["user_id"].strip().lower(),
                raw["product_id"].strip().lower() if raw["product_id"] else None,
            )
        ]


def test_non_utc_offsets_are_converted_to_the_same_instant_in_utc(sample_shop):
    injected = [row for row in sample_shop.manifest["injected"] if row["kind"] == "non_utc_offset"]
    assert injected
    for row in injected:
        raw = _raw_line(sample_shop, row["file"], row["line"])
        assert not raw["timestamp"].endswith("+00:00")
        expected = datetime.fromisoformat(raw["timestamp"]).astimezone(UTC).replace(tzinfo=None)
        stored = sample_shop.query(
            "select event_ts from fct_events where event_id = ?", [row["event_id"]]
        )
        assert stored == [(expected,)]


def test_quarantine_keeps_the_raw_line_and_file_of_each_rejected_event(sample_shop):
    rows = sample_shop.query(
        "select source_file, source_row, raw_content from quarantined_rows "
        "where source = 'events' and reason = 'invalid_json' limit 5"
    )
    assert rows
    for source_file, line, raw_content in rows:
        assert raw_content == _raw_text(sample_shop, source_file, line)


def _raw_text(shop, source_file: str, line: int) -> str:
    return (shop.landing / source_file).read_text(encoding="utf-8").split("\n")[line - 1]


def _raw_line(shop, source_file: str, line: int) -> dict:
    return json.loads(_raw_text(shop, source_file, line))
