"""Retention purges exactly the landing days older than `retention_days`, files and raw rows."""

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb

from personalization_assets.defs.ingest import landing
from personalization_assets.defs.privacy.assets import event_retention
from personalization_assets.defs.privacy.retention import purge_expired_events
from personalization_assets.defs.warehouse.resources import (
    LandingZoneResource,
    ProjectConfigResource,
    WarehouseResource,
)
from tests.conftest import write_landing

DAYS = ["2026-09-28", "2026-09-29", "2026-09-30", "2026-10-01", "2026-10-02"]


def _landing(tmp_path: Path) -> Path:
    events = {
        day: [
            {
                "event_id": f"{day}-{i}",
                "user_id": f"c{i}",
                "event_type": "page_view",
                "timestamp": f"{day}T10:00:00+00:00",
                "properties": {},
            }
            for i in range(n + 1)
        ]
        for n, day in enumerate(DAYS)
    }
    return write_landing(
        tmp_path,
        events=events,
        customers=[{"customer_id": "c0", "email": "a@b.io", "email_consent": "true"}],
        products=[{"product_id": "p1", "price": "1"}],
    )


def _lines_per_day(con) -> dict[str, int]:
    rows = con.execute(
        "select landing_date, count(*) from raw.event_lines group by 1 order by 1"
    ).fetchall()
    return {str(day): n for day, n in rows}


def test_purge_removes_exactly_the_expired_days(tmp_path):
    root = _landing(tmp_path)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    landing.load_event_lines(con, root, now=dt.datetime(2026, 10, 2))
    before = _lines_per_day(con)
    assert before == {day: n + 1 for n, day in enumerate(DAYS)}

    # today 2026-10-03, keep 3 days: the cutoff is 2026-09-30; 09-28 and 09-29 expire.
    now = dt.datetime(2026, 10, 3, 8)
    result = purge_expired_events(con, root, retention_days=3, now=now)

    assert str(result.cutoff) == "2026-09-30"
    assert [str(d) for d in result.purged_days] == ["2026-09-28", "2026-09-29"]
    assert result.raw_lines_deleted == before["2026-09-28"] + before["2026-09-29"] == 3
    assert _lines_per_day(con) == {d: n for d, n in before.items() if d >= "2026-09-30"}
    assert landing.landing_days(root) == [dt.date.fromisoformat(d) for d in DAYS[2:]]
    assert result.files_deleted == [
        f"events/date={d}/events_{d.replace('-', '')}_0001.ndjson" for d in DAYS[:2]
    ]
    stamped = con.execute(
        "select landing_date from raw.event_day_loads where reloaded_at = ? order by 1", [now]
    ).fetchall()
    assert [str(r[0]) for r in stamped] == DAYS[:2]
    # idempotent: nothing left to purge
    again = purge_expired_events(con, root, retention_days=3, now=now)
    assert again.purged_days == [] and again.raw_lines_deleted == 0
    assert purge_expired_events(con, root, None, now).cutoff is None


def test_retention_asset_uses_privacy_yaml(tmp_path):
    root = _landing(tmp_path)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "privacy.yaml").write_text("retention_days: 2\n")
    database = tmp_path / "w.duckdb"
    result = dg.materialize(
        [event_retention],
        resources={
            "warehouse": WarehouseResource(database=str(database)),
            "landing_zone": LandingZoneResource(root=str(root)),
            "project_config": ProjectConfigResource(directory=str(config_dir)),
        },
        run_config={"ops": {"privacy__event_retention": {"config": {"today": "2026-10-02"}}}},
    )
    metadata = result.asset_materializations_for_node("privacy__event_retention")[0].metadata
    assert metadata["cutoff"].value == "2026-09-30"
    assert metadata["files_deleted"].value == 2
    assert landing.landing_days(root)[0] == dt.date(2026, 9, 30)
