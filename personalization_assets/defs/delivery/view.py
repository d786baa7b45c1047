"""The target of an email's signed "view in browser" link: `/view/<payload key>?t=<token>`.

The link carries no customer id: the token binds the payload key (`links.view_token`), so a link
cannot be forged or reused for another email. Two lookups, same answer:

- `view_in_browser(con, ...)` reads the warehouse (campaign and journey payloads; batch code and
  tests);
- `PayloadFiles` reads the ESP-ready JSONL files the payloads and journey assets write
  (`<output>/payloads/send_date=*/<campaign>.jsonl` and `journey__<journey>.jsonl`, replaced by
  write-then-rename). The send-time API serves the link from them, so the edge never opens the
  warehouse while Dagster writes it.

No Dagster imports.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import duckdb

from personalization_assets.defs.campaigns import links
from personalization_assets.defs.delivery import ledger

# `_write_jsonl` writes the key first; reading it from the line's start avoids parsing the HTML.
_KEY_PREFIX = re.compile(r'^\{"idempotency_key":\s*"([^"\\]*)"')


def view_in_browser(
    con: duckdb.DuckDBPyConnection, payload_key: str, token: str, secret: bytes | None = None
) -> str | None:
    """The rendered HTML for a valid link, else None (unknown key or wrong token alike)."""
    ledger.ensure_tables(con)
    rows = con.execute(
        f"select customer_id, html from ({ledger.payloads_sql(con)}) "
        "where idempotency_key = ? and status = 'rendered'",
        [payload_key],
    ).fetchall()
    if not rows:
        return None
    customer_id, html = rows[0]
    if not links.verify_view(token, payload_key, customer_id, secret):
        return None
    return html


class PayloadFiles:
    """payload key → rendered HTML from the payload JSONL files under `root`.

    An index (key → file, byte offset) is kept per file and rebuilt only for files whose
    (inode, mtime, size) changed, checked at most every `check_interval_ms`. A file replaced
    between the check and the read is noticed (the line at the offset no longer carries the key)
    and re-indexed once.
    """

    def __init__(self, root: Path, *, check_interval_ms: int = 1000) -> None:
        self.root = root
        self.check_interval_s = check_interval_ms / 1000
        self._files: dict[Path, tuple[tuple[int, int, int], dict[str, int]]] = {}
        self._where: dict[str, tuple[Path, int]] = {}
        self._checked_at = -float("inf")
        self._lock = threading.Lock()

    def html(self, payload_key: str, token: str, secret: bytes | None = None) -> str | None:
        """The HTML for a valid link, else None (unknown key or wrong token alike)."""
        if not links.verify_view(token, payload_key, secret=secret):
            return None
        self._refresh(force=False)
        item = self._read(payload_key)
        if item is None and payload_key in self._where:
            self._refresh(force=True)
            item = self._read(payload_key)
        return None if item is None else item.get("html")

    def __len__(self) -> int:
        return len(self._where)

    def _read(self, payload_key: str) -> dict | None:
        found = self._where.get(payload_key)
        if found is None:
            return None
        path, offset = found
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                item = json.loads(handle.readline())
        except (OSError, ValueError):
            return None
        return item if item.get("idempotency_key") == payload_key else None

    def _refresh(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_interval_s:
            return
        with self._lock:
            self._checked_at = now
            current: dict[Path, tuple[tuple[int, int, int], dict[str, int]]] = {}
            for path in sorted(self.root.glob("send_date=*/*.jsonl")):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                known = self._files.get(path)
                if known is not None and known[0] == signature and not force:
                    current[path] = known
                else:
                    current[path] = (signature, _index(path))
            self._files = current
            self._where = {
                key: (path, offset)
                for path, (_, keys) in current.items()
                for key, offset in keys.items()
            }


def _index(path: Path) -> dict[str, int]:
    keys: dict[str, int] = {}
    try:
        with path.open("rb") as handle:
            offset = 0
            for line in handle:
                text = line[:200].decode("utf-8", "replace")
                match = _KEY_PREFIX.match(text)
                if match:
                    keys[match.group(1)] = offset
                elif line.strip():
                    key = json.loads(line).get("idempotency_key")
                    if isinstance(key, str):
                        keys[key] = offset
                offset += len(line)
    except (OSError, ValueError):
        return keys
    return keys
