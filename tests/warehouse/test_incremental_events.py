"""The cleaned event layer is incremental by landing day and still exact.

Real landing files → real partitioned Dagster runs → real incremental dbt models on DuckDB. A run
over some landing days re-processes only those days, deduplicates them against every other day,
removes the rows of a day whose files disappeared, and agrees with a full refresh.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb

from personalization_assets.defs.automation.jobs import range_tags
from personalization_assets.defs.warehouse.assets import FULL_REFRESH_TAG
from tests.conftest import run_job, write_landing
from tests.features.test_customer_features import CUSTOMERS, PRODUCTS, _event

WAREHOUSE_ONLY = dg.AssetSelection.groups("ingest", "warehouse")
DAY1, DAY2 = "2026-10-30", "2026-10-31"


def _keys():
    from personalization_assets.definitions import defs

    return list(WAREHOUSE_ONLY.resolve(defs().resolve_asset_graph()))


def _run(root, first, last, **tags):
    result = run_job(
        root,
        asset_selection=_keys(),
        tags={**range_tags(dg_date(first), dg_date(last)), **tags},
    )
    assert result.success
    return result


def dg_date(text):
    import datetime as dt

    return dt.date.fromisoformat(text)


def _state(root):
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        classified = con.execute(
            """select source_file, line_no, event_id, disposition, reason
               from int_events__classified order by all"""
        ).fetchall()
        events = con.execute(
            "select * exclude (day_loaded_at) from fct_events order by event_id"
        ).fetchall()
        stamps = dict(
            con.execute(
                "select landing_date::varchar, max(day_loaded_at) from int_events__classified "
                "group by all"
            ).fetchall()
        )
        unaccounted = con.execute("select sum(unaccounted) from ingest_reconciliation").fetchone()
        return classified, events, stamps, unaccounted[0]
    finally:
        con.close()


def _add_file(landing, day, name, lines):
    folder = landing / "events" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def test_only_reloaded_days_are_reprocessed_and_dedup_spans_days(tmp_path):
    day1 = [
        _event("e1", "c1", "page_view", f"{DAY1}T10:00:00Z"),
        _event("e2", "c1", "page_view", f"{DAY1}T11:00:00Z"),
    ]
    landing = write_landing(tmp_path, events={DAY1: day1}, customers=CUSTOMERS, products=PRODUCTS)
    _run(tmp_path, DAY1, DAY1)
    _, _, stamps_before, _ = _state(tmp_path)

    # Day 2 re-delivers e2 (a duplicate of day 1's), brings e3 and one unparseable line.
    _add_file(
        landing, DAY2, "events_2.ndjson", [_event("e2", "c1", "page_view", f"{DAY1}T11:00:00Z")]
    )
    with (landing / "events" / f"date={DAY2}" / "events_2.ndjson").open("a") as handle:
        handle.write(json.dumps(_event("e3", "c2", "page_view", f"{DAY2}T09:00:00Z")) + "\n")
        handle.write("{not json\n")
    _run(tmp_path, DAY2, DAY2)
    classified, events, stamps, unaccounted = _state(tmp_path)

    assert stamps[DAY1] == stamps_before[DAY1], "day 1 was not re-processed"
    by_event = {(row[0].split("/")[1], row[2]): (row[3], row[4]) for row in classified}
    assert by_event[(f"date={DAY1}", "e2")] == ("accepted", None)
    assert by_event[(f"date={DAY2}", "e2")] == ("duplicate", "duplicate_event_id")
    assert by_event[(f"date={DAY2}", "e3")] == ("accepted", None)
    assert by_event[(f"date={DAY2}", None)] == ("quarantined", "invalid_json")
    assert sorted(e[0] for e in events) == ["e1", "e2", "e3"]
    assert unaccounted == 0

    # The nightly full refresh rebuilds from scratch and agrees with the incremental state.
    _run(tmp_path, DAY1, DAY2, **{FULL_REFRESH_TAG: "true"})
    refreshed, refreshed_events, _, _ = _state(tmp_path)
    assert refreshed == classified and refreshed_events == events


def test_a_day_whose_files_are_gone_loses_its_rows_and_a_rerun_is_idempotent(tmp_path):
    events = {
        DAY1: [_event("e1", "c1", "page_view", f"{DAY1}T10:00:00Z")],
        DAY2: [_event("e2", "c2", "page_view", f"{DAY2}T10:00:00Z")],
    }
    landing = write_landing(tmp_path, events=events, customers=CUSTOMERS, products=PRODUCTS)
    _run(tmp_path, DAY1, DAY2)
    first = _state(tmp_path)
    _run(tmp_path, DAY2, DAY2)
    again = _state(tmp_path)
    assert again[:2] == first[:2] and again[2][DAY1] == first[2][DAY1]

    for path in (landing / "events" / f"date={DAY2}").iterdir():
        path.unlink()
    _run(tmp_path, DAY2, DAY2)
    classified, remaining, stamps, unaccounted = _state(tmp_path)
    assert [e[0] for e in remaining] == ["e1"]
    assert DAY2 not in stamps and unaccounted == 0
