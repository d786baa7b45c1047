"""Read the serving snapshot (see `defs/serving/export.py`) without ever touching the warehouse.

`SnapshotReader` keeps one read-only DuckDB connection to the newest snapshot file and checks,
at most every `check_interval_ms`, whether the file was replaced (inode / mtime / size: one
`stat`). A replaced file is opened before the old one is closed, so requests always see one
complete snapshot; the per-customer cache is dropped with the old snapshot. Lookups are point
queries on small sorted tables; a cached customer costs a dict lookup. No framework imports.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np


@dataclass
class CustomerView:
    """Everything the snapshot knows about one customer."""

    customer: dict[str, Any]
    segments: list[dict[str, Any]]
    decisions: dict[str, dict[str, Any]]
    recommendations: list[dict[str, Any]]
    recent_purchase: dict[str, Any] | None
    als_cells: list[tuple[int, float, bool]] = field(default_factory=list)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class ServingSnapshot:
    """One opened snapshot file (read-only)."""

    def __init__(self, path: Path, signature: tuple[int, int, int]) -> None:
        self.path = path
        self.signature = signature
        # ATTACH, not connect(path): connect() reuses an open instance of the same path, which
        # would keep serving the replaced file.
        self._con = duckdb.connect()
        self._con.execute("set threads = 1")
        self._con.execute(f"attach '{path.as_posix()}' as snapshot (read_only)")
        self._con.execute("use snapshot")
        self._lock = threading.Lock()
        self.meta = dict(self._con.execute("select key, value from meta").fetchall())
        self.products = {r["product_id"]: r for r in _rows(self._con, "select * from products", [])}
        self.campaigns = dict(
            self._con.execute("select campaign_id, name from campaigns").fetchall()
        )
        self.landing_files = {
            r[0] for r in self._con.execute("select source_file from landing_files").fetchall()
        }
        self._similar: dict[str, list[str]] = {}
        self._has_group_consent = bool(
            self._con.execute(
                "select count(*) from duckdb_tables() where database_name = 'snapshot' "
                "and table_name = 'group_consent'"
            ).fetchall()[0][0]
        )
        self._als_items: tuple[np.ndarray, np.ndarray, dict[str, int]] | None = None

    @property
    def snapshot_at(self) -> str:
        return self.meta.get("snapshot_at", "")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def customer(self, customer_id: str) -> CustomerView | None:
        with self._lock:
            con = self._con
            found = _rows(con, "select * from customers where customer_id = ?", [customer_id])
            if not found:
                return None
            segments = _rows(
                con,
                "select segment, segment_type from segments where customer_id = ?",
                [customer_id],
            )
            decisions = _rows(con, "select * from decisions where customer_id = ?", [customer_id])
            recs = _rows(
                con,
                "select rank, product_id, score, source from recommendations "
                "where customer_id = ? order by rank",
                [customer_id],
            )
            recent = _rows(
                con,
                "select product_id, name from recent_purchase where customer_id = ?",
                [customer_id],
            )
            cells = con.execute(
                "select col, raw, purchased from als_cells where customer_id = ?", [customer_id]
            ).fetchall()
        return CustomerView(
            customer=found[0],
            segments=segments,
            decisions={d["campaign_id"]: d for d in decisions},
            recommendations=recs,
            recent_purchase=recent[0] if recent else None,
            als_cells=[(int(c), float(r), bool(p)) for c, r, p in cells],
        )

    def similar_products(self, product_id: str) -> list[str]:
        if product_id not in self._similar:
            with self._lock:
                rows = self._con.execute(
                    "select similar_product_id from similar_products where product_id = ? "
                    "order by rank",
                    [product_id],
                ).fetchall()
            self._similar[product_id] = [r[0] for r in rows]
        return self._similar[product_id]

    def tracking_consent(self) -> dict[str, bool]:
        """customer id → tracking consent, for every customer in the snapshot."""
        with self._lock:
            return dict(
                self._con.execute("select customer_id, tracking_consent from customers").fetchall()
            )

    def email_preferences(self, customer_id: str) -> tuple[bool, dict[str, bool]]:
        """(opted out of all email, subscription group → subscribed) for the preference centre.

        Group states come from an optional `group_consent` table (customer_id, group_id,
        granted); without it, or for a group without a row, the state is unknown (absent).
        """
        with self._lock:
            flags = self._con.execute(
                "select coalesce(unsubscribed, false) or not coalesce(email_consent, false) "
                "from customers where customer_id = ?",
                [customer_id],
            ).fetchall()
            groups = (
                self._con.execute(
                    "select group_id, granted from group_consent where customer_id = ?",
                    [customer_id],
                ).fetchall()
                if self._has_group_consent
                else []
            )
        return (bool(flags[0][0]) if flags else False), {g: bool(v) for g, v in groups}

    def als_items(self) -> tuple[np.ndarray, np.ndarray, dict[str, int]] | None:
        """(item factors, BM25 idf, product id → column), or None without an ALS export."""
        if self._als_items is None and "als_params" in self.meta:
            with self._lock:
                rows = self._con.execute(
                    "select col, product_id, idf, factors from als_items order by col"
                ).fetchall()
            if rows:
                factors = np.asarray([r[3] for r in rows], dtype=np.float32)
                idf = np.asarray([r[2] for r in rows], dtype=np.float64)
                self._als_items = (factors, idf, {r[1]: int(r[0]) for r in rows})
        return self._als_items

    def meta_json(self, key: str) -> Any:
        return json.loads(self.meta[key])


class SnapshotReader:
    """The newest snapshot, reopened when the file is replaced; `None` until one exists."""

    def __init__(self, path: Path, *, check_interval_ms: int = 1000, cache_size: int = 100_000):
        self.path = path
        self.check_interval_s = check_interval_ms / 1000
        self.cache_size = cache_size
        self.current: ServingSnapshot | None = None
        self.cache: OrderedDict[str, CustomerView | None] = OrderedDict()
        self.reloads = 0
        self._checked_at = -float("inf")
        self._lock = threading.Lock()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def get(self) -> ServingSnapshot | None:
        now = time.monotonic()
        if now - self._checked_at >= self.check_interval_s:
            self._checked_at = now
            self.reload_if_changed()
        return self.current

    def reload_if_changed(self) -> bool:
        with self._lock:
            signature = self._signature()
            if signature is None or (self.current and self.current.signature == signature):
                return False
            fresh = ServingSnapshot(self.path, signature)
            old, self.current = self.current, fresh
            self.cache = OrderedDict()
            self.reloads += 1
        if old is not None:
            old.close()
        return True

    def customer(self, customer_id: str) -> CustomerView | None:
        """A customer's view from the current snapshot (cached; None when unknown)."""
        snapshot = self.get()
        if snapshot is None:
            return None
        cache = self.cache
        if customer_id in cache:
            cache.move_to_end(customer_id)
            return cache[customer_id]
        view = snapshot.customer(customer_id)
        if snapshot is self.current:
            cache[customer_id] = view
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        return view
