"""Freshness at the edge: events the warehouse has not seen yet, and the ALS user update.

`LandingJournal` reads the final-named event files in the landing zone that the serving
snapshot does not list in `landing_files` (they arrived after the last materialization; the
collector wrote them) and keeps, per customer, their interaction events. The landing zone is the
shared state between the collector and the API (two processes), so nothing else is needed.

`EdgeAls` redoes, for one customer, what the incremental batch refresh does for every customer
with new events: the customer's decayed interaction row from the snapshot is decayed to the newest
event, the new events are added, the row is rescaled with the snapshot's BM25 statistics and
implicit's exact least-squares user solve (`recalculate_user`) runs against the snapshot's item
factors. Item factors, BM25 statistics and every other customer stay as in the snapshot.

Fresh at the edge: recommendations of customers with new product events (views, email clicks,
carts, purchases; purchased items are excluded at once). Not fresh until the next
materialization: segments, features, tokens, consent, decisions and cold-start lists (a customer
without an ALS row in the snapshot keeps the snapshot's list). No framework imports.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from personalization_assets.edge.snapshot import ServingSnapshot
from personalization_assets.edge.validation import customer_key, parse_timestamp


@dataclass(frozen=True)
class FreshEvent:
    product_id: str
    event_type: str
    ts: dt.datetime


@dataclass
class LandingJournal:
    """Interaction events in landing files newer than the snapshot, by customer."""

    landing_dir: Path
    known_files: set[str] = field(default_factory=set)
    events: dict[str, list[FreshEvent]] = field(default_factory=lambda: defaultdict(list))
    read_files: set[str] = field(default_factory=set)
    version: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def reset(self, known_files: set[str]) -> None:
        self.known_files = known_files
        self.events = defaultdict(list)
        self.read_files = set()
        self.version = defaultdict(int)

    def scan(self) -> int:
        """Read final-named event files not in the snapshot and not read yet; return #events."""
        root = self.landing_dir / "events"
        added = 0
        try:
            days = [e for e in os.scandir(root) if e.is_dir() and e.name.startswith("date=")]
        except FileNotFoundError:
            return 0
        for day in days:
            for entry in os.scandir(day.path):
                if not entry.name.endswith(".ndjson") or entry.name.startswith("."):
                    continue
                relative = f"events/{day.name}/{entry.name}"
                if relative in self.known_files or relative in self.read_files:
                    continue
                self.read_files.add(relative)
                added += self._read(Path(entry.path))
        return added

    def _read(self, path: Path) -> int:
        added = 0
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                customer = customer_key(event)
                product = event.get("product_id")
                ts = event.get("timestamp")
                kind = event.get("event_type")
                if not (customer and isinstance(product, str) and isinstance(ts, str)):
                    continue
                parsed = parse_timestamp(ts)
                if parsed is None or not isinstance(kind, str):
                    continue
                self.events[customer].append(
                    FreshEvent(product.strip().lower(), kind.strip().lower(), parsed)
                )
                self.version[customer] += 1
                added += 1
        return added


class EdgeAls:
    """The snapshot's ALS item side, able to refresh one customer's factors and top-N."""

    def __init__(self, snapshot: ServingSnapshot) -> None:
        items = snapshot.als_items()
        if items is None:
            raise ValueError("the snapshot has no ALS export")
        self.item_factors, self.idf, self.columns = items
        params = snapshot.meta_json("als_params")
        self.weights = snapshot.meta_json("als_weights")
        self.as_of = dt.datetime.fromisoformat(snapshot.meta["als_as_of"])
        if self.as_of.tzinfo is None:
            self.as_of = self.as_of.replace(tzinfo=dt.UTC)
        self.avg_row_sum = float(snapshot.meta["als_avg_row_sum"])
        self.top_n = int(snapshot.meta.get("top_n", "10"))
        self.exclude_purchased = snapshot.meta_json("exclude_purchased")
        self.product_ids = np.empty(len(self.columns), dtype=object)
        for product, col in self.columns.items():
            self.product_ids[col] = product
        in_stock = np.ones(len(self.columns), dtype=bool)
        for product, col in self.columns.items():
            row = snapshot.products.get(product)
            in_stock[col] = bool(row and row.get("in_stock"))
        self.in_stock = in_stock
        self.model = AlternatingLeastSquares(
            factors=params["factors"],
            regularization=params["regularization"],
            alpha=params["alpha"],
            num_threads=1,
        )
        self.model.item_factors = self.item_factors

    def scaled_row(
        self, cells: list[tuple[int, float, bool]], fresh: list[FreshEvent]
    ) -> tuple[sp.csr_matrix, set[int]]:
        """The customer's confidence row after `fresh`, scaled as `build_matrix` scales rows."""
        event_weights = self.weights["event_weights"]
        half_life = self.weights.get("half_life_days")
        purchase_types = set(self.weights.get("purchase_event_types", ["purchase"]))
        as_of = max([self.as_of, *(e.ts for e in fresh)])
        shift = (as_of - self.as_of) / dt.timedelta(days=1)
        decay = 2.0 ** (-shift / half_life) if half_life else 1.0
        raw: dict[int, float] = defaultdict(float)
        bought = {col for col, _, purchased in cells if purchased}
        for col, value, _ in cells:
            raw[col] += value * decay
        for event in fresh:
            col = self.columns.get(event.product_id)
            weight = float(event_weights.get(event.event_type, 0.0))
            if col is None or weight <= 0:
                continue
            age = (as_of - event.ts) / dt.timedelta(days=1)
            raw[col] += weight * (2.0 ** (-age / half_life) if half_life else 1.0)
            if event.event_type in purchase_types:
                bought.add(col)
        cols = np.array(sorted(raw), dtype=np.int32)
        values = np.array([raw[c] for c in cols], dtype=np.float64)
        confidence = self.weights.get("confidence", "bm25")
        if confidence == "bm25" and len(values):
            # implicit's bm25_weight with the snapshot's global statistics (idf, mean row sum).
            k1, b = self.weights.get("bm25_k1", 100.0), self.weights.get("bm25_b", 0.8)
            length_norm = (1.0 - b) + b * values.sum() / self.avg_row_sum
            values = values * (k1 + 1.0) / (k1 * length_norm + values) * self.idf[cols]
            values = np.maximum(values, 1e-3)
        elif confidence == "log":
            values = 1.0 + self.weights.get("log_alpha", 1.0) * np.log1p(values)
        row = sp.csr_matrix(
            (values.astype(np.float32), (np.zeros(len(cols), dtype=np.int32), cols)),
            shape=(1, len(self.columns)),
        )
        row.sort_indices()
        return row, bought

    def user_factors(self, row: sp.csr_matrix) -> np.ndarray:
        with threadpool_limits(limits=1, user_api="blas"):
            return np.asarray(self.model.recalculate_user(0, row), dtype=np.float32)

    def recommend(
        self, cells: list[tuple[int, float, bool]], fresh: list[FreshEvent]
    ) -> list[dict]:
        """Top-N after the fresh events: (rank, product_id, score, source='als_edge')."""
        row, bought = self.scaled_row(cells, fresh)
        if row.nnz == 0:
            return []
        scores = self.item_factors @ self.user_factors(row)
        allowed = self.in_stock.copy()
        if self.exclude_purchased and bought:
            allowed[list(bought)] = False
        candidates = np.flatnonzero(allowed)
        order = candidates[np.argsort(-scores[candidates], kind="stable")][: self.top_n]
        return [
            {
                "rank": rank,
                "product_id": self.product_ids[col],
                "score": float(scores[col]),
                "source": "als_edge",
            }
            for rank, col in enumerate(order, start=1)
        ]
