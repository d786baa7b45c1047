"""Micro-batch files in the landing zone, written so that no reader ever sees half a file.

Accepted events are appended, as they arrive, to `events/date=YYYY-MM-DD/<name>.ndjson.tmp`
(the UTC day they arrived = their landing day) and flushed to the OS after every request, so an
acknowledged event survives a crash of the collector process. When the file holds
`flush_max_events` events, or `flush_max_ms` after its first event, or on shutdown, it is
fsynced and renamed to `<name>.ndjson` (the README's write-then-rename convention): the landing
sensor and loaders read final names only and never see a `.tmp`. A collector killed
mid-write leaves a `.tmp`; the next start recovers it (drops a torn last line into the rejected
file, renames the complete lines into place). Rejected events go the same way to
`rejected/date=YYYY-MM-DD/<name>.ndjson`, one JSON object per event with its reasons.
No framework imports.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "collector"
TMP_SUFFIX = ".tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _OpenFile:
    day: dt.date
    tmp: Path
    final: Path
    handle: object
    opened_at: float
    events: int = 0


@dataclass
class Recovery:
    files: list[Path] = field(default_factory=list)
    events: int = 0
    torn_lines: list[str] = field(default_factory=list)


class MicroBatchWriter:
    """Appends NDJSON lines to one `.tmp` file per landing day and renames it when full or due."""

    def __init__(self, root: Path, *, max_events: int, max_ms: int) -> None:
        self.root = root
        self.max_events = max_events
        self.max_ms = max_ms
        self._pid = os.getpid()
        self._started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        self._seq = itertools.count(1)
        self._file: _OpenFile | None = None
        self._lock = threading.Lock()
        self.flushed_files: list[Path] = []
        self.events_written = 0

    def append(self, lines: list[str], now: dt.datetime) -> None:
        """Write complete lines (each ending in a newline) for the landing day of `now`."""
        if not lines:
            return
        with self._lock:
            day = now.astimezone(dt.UTC).date()
            if self._file is not None and self._file.day != day:
                self._flush_locked()
            current = self._file or self._open(day)
            current.handle.write("".join(lines))
            current.handle.flush()
            current.events += len(lines)
            self.events_written += len(lines)
            if current.events >= self.max_events:
                self._flush_locked()

    def flush_if_due(self) -> Path | None:
        with self._lock:
            current = self._file
            if current and (time.monotonic() - current.opened_at) * 1000 >= self.max_ms:
                return self._flush_locked()
        return None

    def flush(self) -> Path | None:
        with self._lock:
            return self._flush_locked()

    @property
    def pending_events(self) -> int:
        return self._file.events if self._file else 0

    def _open(self, day: dt.date) -> _OpenFile:
        folder = self.root / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{PREFIX}-{self._started}-{self._pid}-{next(self._seq):06d}.ndjson"
        tmp = folder / (name + TMP_SUFFIX)
        handle = tmp.open("w", encoding="utf-8")
        self._file = _OpenFile(day, tmp, folder / name, handle, time.monotonic())
        return self._file

    def _flush_locked(self) -> Path | None:
        current, self._file = self._file, None
        if current is None:
            return None
        current.handle.flush()
        os.fsync(current.handle.fileno())
        current.handle.close()
        os.replace(current.tmp, current.final)
        _fsync_dir(current.final.parent)
        self.flushed_files.append(current.final)
        return current.final

    def recover(self) -> Recovery:
        """Rename the `.tmp` files of collectors that are no longer running into place.

        Complete lines are kept; a torn last line (the process died inside a write, so that
        request was never acknowledged) is returned for the rejected file.
        """
        recovery = Recovery()
        for tmp in sorted(self.root.glob(f"date=*/{PREFIX}-*.ndjson{TMP_SUFFIX}")):
            parts = tmp.name.split("-")
            pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
            if pid is not None and pid != self._pid and _pid_alive(pid):
                continue
            data = tmp.read_bytes()
            complete, _, torn = data.rpartition(b"\n")
            if torn.strip():
                recovery.torn_lines.append(torn.decode("utf-8", "replace"))
            if not complete.strip():
                tmp.unlink()
                continue
            with tmp.open("r+b") as handle:
                handle.truncate(len(complete) + 1)
                os.fsync(handle.fileno())
            final = tmp.with_name(tmp.name[: -len(TMP_SUFFIX)])
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            recovery.files.append(final)
            recovery.events += complete.count(b"\n") + 1
        return recovery


def event_line(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"


def rejected_line(
    *,
    received_at: dt.datetime,
    endpoint: str,
    reason: str,
    reasons: list[str] | None = None,
    fields: list[str] | None = None,
    index: int | None = None,
    event: object = None,
    raw: str | None = None,
) -> str:
    """One rejected-file record: why, where from, and the event (parsed, or its raw text)."""
    record = {
        "received_at": received_at.astimezone(dt.UTC).isoformat(),
        "endpoint": endpoint,
        "reason": reason,
        "reasons": reasons or [reason],
        "fields": fields or [],
        "index": index,
        "event": event,
        "raw": raw,
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
