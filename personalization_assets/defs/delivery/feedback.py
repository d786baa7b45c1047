"""Bounces and complaints reported after sending (ESP webhooks, DSNs) → events + suppressions.

Feedback arrives as JSONL files in a folder (an ESP webhook receiver or a DSN parser writes them,
write-then-rename), one object per line:

    {"type": "bounce" | "complaint" | "unsubscribe", "email": "...", "bounce_type": "hard"|"soft",
     "message_id": "<key@domain>" (or "idempotency_key": "..."), "occurred_at": ISO-8601, "detail"}

Hard bounces, complaints and unsubscribes add a `campaigns.suppressions` row (which eligibility
reads on the next decisions run and delivery re-checks before sending) and set the matching ledger
row to `bounced` / `complained`; soft bounces are recorded as events only. Every line becomes
one `delivery.delivery_events` row, keyed by file and line, so re-reading a file adds nothing;
files already read (same size and mtime, in `delivery.feedback_files`) are skipped.
No Dagster imports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from personalization_assets.defs.delivery import ledger

FILES = f"{ledger.SCHEMA}.feedback_files"
FILES_DDL = f"""
create table if not exists {FILES} (
    path varchar, size bigint, mtime_ns bigint, processed_at timestamp)
"""
SUPPRESSING = {"complaint": "complaint", "unsubscribe": "unsubscribed"}


@dataclass
class FeedbackSummary:
    files: int = 0
    new_events: int = 0
    suppressed: int = 0
    invalid_lines: list[str] = field(default_factory=list)


def apply_feedback(
    con: duckdb.DuckDBPyConnection, folder: Path, now: dt.datetime
) -> FeedbackSummary:
    ledger.ensure_tables(con)
    con.execute(FILES_DDL)
    summary = FeedbackSummary()
    if not folder.is_dir():
        return summary
    for path in sorted(folder.glob("*.jsonl")):
        if path.name.startswith("."):
            continue  # still being written (write-then-rename)
        stat = path.stat()
        seen = con.execute(
            f"select count(*) from {FILES} where path = ? and size = ? and mtime_ns = ?",
            [str(path), stat.st_size, stat.st_mtime_ns],
        ).fetchall()[0][0]
        if seen:
            continue
        summary.files += 1
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                _apply_line(con, path, number, line, now, summary)
        con.execute(f"delete from {FILES} where path = ?", [str(path)])
        con.execute(
            f"insert into {FILES} values (?, ?, ?, ?)",
            [str(path), stat.st_size, stat.st_mtime_ns, now],
        )
    return summary


def _apply_line(con, path: Path, number: int, line: str, now, summary: FeedbackSummary) -> None:
    where = f"{path.name}:{number}"
    try:
        item = json.loads(line)
        kind = item["type"]
        if kind not in ("bounce", "complaint", "unsubscribe"):
            raise ValueError(f"unknown type {kind!r}")
        occurred = dt.datetime.fromisoformat(item.get("occurred_at") or now.isoformat())
    except (ValueError, KeyError, TypeError) as error:
        summary.invalid_lines.append(f"{where}: {error}")
        return
    if occurred.tzinfo is not None:
        occurred = occurred.astimezone(dt.UTC).replace(tzinfo=None)
    event_id = hashlib.md5(f"{path.name}|{number}|{line}".encode()).hexdigest()
    if con.execute(
        f"select count(*) from {ledger.EVENTS} where event_id = ?", [event_id]
    ).fetchall()[0][0]:
        return
    key = item.get("idempotency_key") or _key_from_message_id(item.get("message_id"))
    found = con.execute(
        f"select customer_id, campaign_id, to_address from {ledger.LEDGER} where idempotency_key = ?",
        [key],
    ).fetchall()
    customer, campaign, address = found[0] if found else (item.get("customer_id"), None, None)
    email = item.get("email") or address
    hard = kind != "bounce" or item.get("bounce_type", "hard") == "hard"
    event_type = kind if kind != "bounce" else ("bounce" if hard else "soft_bounce")
    con.execute(
        f"insert into {ledger.EVENTS} values (?, ?, ?, ?, ?, ?, ?, ?, 'feedback')",
        [event_id, key, customer, campaign, email, event_type, occurred, item.get("detail")],
    )
    summary.new_events += 1
    if not hard:
        return
    reason = SUPPRESSING.get(kind, "hard_bounce")
    ledger.suppress(con, customer, email, reason, occurred)
    summary.suppressed += 1
    if key and kind != "unsubscribe":
        con.execute(
            f"update {ledger.LEDGER} set status = ?, updated_at = ?, last_error = ? "
            "where idempotency_key = ? and status in ('sent', 'unknown')",
            [
                "bounced" if kind == "bounce" else "complained",
                now,
                f"{event_type} reported at {occurred}",
                key,
            ],
        )


def _key_from_message_id(message_id: str | None) -> str | None:
    if not message_id:
        return None
    return message_id.strip().strip("<>").split("@", 1)[0] or None
