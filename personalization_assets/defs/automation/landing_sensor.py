"""Which landing files are new: the pure part of the event-arrival sensor. No Dagster imports.

The cursor maps every final-named event file already requested to its (size, mtime_ns). A file
is new when it is absent from the cursor or its size/mtime changed (a re-delivery under the
same name). Files still being written are never seen: writers write `*.tmp` / dot-files and
rename (see ingest/landing.py). Days outside the partition range are reported, not requested.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from personalization_assets.defs.ingest.landing import event_files

Signature = tuple[int, int]


@dataclass
class ScanResult:
    new_files: list[str] = field(default_factory=list)
    days: list[dt.date] = field(default_factory=list)
    out_of_range: list[str] = field(default_factory=list)
    cursor: dict[str, Signature] = field(default_factory=dict)


def load_cursor(text: str | None) -> dict[str, Signature]:
    return {k: tuple(v) for k, v in json.loads(text).items()} if text else {}


def dump_cursor(cursor: dict[str, Signature]) -> str:
    return json.dumps(cursor, sort_keys=True, separators=(",", ":"))


def scan(
    landing_dir: Path,
    cursor: dict[str, Signature],
    *,
    first_day: dt.date,
    last_day: dt.date,
    max_files: int,
) -> ScanResult:
    """New or changed files (at most `max_files`, oldest days first) and the cursor after them."""
    files, _ = event_files(landing_dir)
    result = ScanResult(cursor=dict(cursor))
    candidates = []
    for path in files:
        relative = path.relative_to(landing_dir).as_posix()
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns)
        if cursor.get(relative) != signature:
            candidates.append((dt.date.fromisoformat(path.parent.name[5:]), relative, signature))
    days = set()
    for day, relative, signature in sorted(candidates)[:max_files]:
        result.cursor[relative] = signature
        if first_day <= day <= last_day:
            result.new_files.append(relative)
            days.add(day)
        else:
            result.out_of_range.append(relative)
    result.days = sorted(days)
    return result
