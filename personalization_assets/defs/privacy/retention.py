"""Retention of raw events: purge landing days older than `retention_days`. No Dagster imports.

The unit is the landing day (the `events/date=YYYY-MM-DD` folder and the `landing_date` of
`raw.event_lines`, i.e. the partition of `ingest/raw_event_lines`): a day is expired when
`landing_date < today - retention_days`. Purging a day deletes its event files, deletes its raw
lines and stamps it in `raw.event_day_loads`, so the next dbt run removes the day's events
from the cleaned layer too (the incremental event models re-process reloaded days, and a day
without lines is reloaded as empty). Events are not aged by their own timestamp: a late file
keeps its (older) events until its landing day expires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from personalization_assets.defs.ingest import landing


@dataclass
class RetentionResult:
    cutoff: dt.date | None
    purged_days: list[dt.date] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    raw_lines_deleted: int = 0


def cutoff_date(today: dt.date, retention_days: int) -> dt.date:
    """The oldest landing day kept."""
    return today - dt.timedelta(days=retention_days)


def purge_expired_events(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    retention_days: int | None,
    now: dt.datetime,
) -> RetentionResult:
    """Delete landing event files and raw event lines of landing days before the cutoff."""
    if retention_days is None:
        return RetentionResult(cutoff=None)
    cutoff = cutoff_date(now.date(), retention_days)
    result = RetentionResult(cutoff=cutoff)
    days: set[dt.date] = set()
    root = landing_dir / "events"
    folders = sorted(root.glob("date=*")) if root.is_dir() else []
    for folder in folders:
        match = landing.EVENT_FOLDER_RE.match(folder.name)
        if not folder.is_dir() or not match or not landing._valid_day(match):
            continue
        day = dt.date.fromisoformat(match.group(1))
        if day >= cutoff:
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            result.files_deleted.append(path.relative_to(landing_dir).as_posix())
            path.unlink()
        folder.rmdir()
        days.add(day)
    landing.ensure_raw_schema(con)
    if _has_event_lines(con):
        rows = con.execute(
            f"""delete from {landing.RAW_SCHEMA}.event_lines where landing_date < ?
                returning landing_date""",
            [cutoff],
        ).fetchall()
        result.raw_lines_deleted = len(rows)
        days |= {r[0] for r in rows}
    landing._mark_days_reloaded(con, days, now)
    result.purged_days = sorted(days)
    return result


def _has_event_lines(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = 'event_lines'",
            [landing.RAW_SCHEMA],
        ).fetchall()[0][0]
    )
