"""Full and incremental recommendation refreshes around the ALS logic. No Dagster imports.

A full refresh fits ALS on all interactions and recommends for every customer. An incremental
refresh (what the event sensor runs) reloads the last fitted model and matrix, rebuilds the
matrix on the same item columns, recomputes only the factors of customers with new weighted
events since the last fit (implicit's exact per-user solve; item factors and every other
customer stay untouched) and replaces only their recommendation rows. The nightly full run
retrains everything. The state is a pickle of (model, matrix) under `<models>/recommendations/`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from personalization_assets.defs.models import recommendations as als

STATE_FILE = "als_state.pkl"


@dataclass
class RefreshResult:
    mode: str
    recommendations: pd.DataFrame
    similar: pd.DataFrame | None
    refreshed_customers: list[Any]
    matrix_shape: tuple[int, int]


def _state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def save_state(directory: Path, model, matrix: als.InteractionMatrix) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = _state_path(directory)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps((model, matrix)))
    tmp.replace(path)
    return path


def load_state(directory: Path):
    path = _state_path(directory)
    return pickle.loads(path.read_bytes()) if path.exists() else None


def full_refresh(
    interactions: pd.DataFrame,
    catalog: pd.DataFrame,
    customers: list[Any],
    settings,
    as_of,
    state_dir: Path,
) -> RefreshResult:
    matrix = als.build_matrix(interactions, settings.weights, as_of)
    model = als.fit_als(matrix, settings.als)
    recs = _recommend(model, matrix, interactions, catalog, settings, as_of, customers)
    out_of_stock = als.out_of_stock_items(catalog)
    similar = als.similar_items(
        model, matrix, list(matrix.item_index), n=settings.top_n, out_of_stock=out_of_stock
    )
    save_state(state_dir, model, matrix)
    return RefreshResult("full", recs, similar, list(customers), matrix.shape)


def incremental_refresh(
    interactions: pd.DataFrame,
    catalog: pd.DataFrame,
    customers: list[Any],
    settings,
    as_of,
    state_dir: Path,
) -> RefreshResult:
    """Refresh only customers with new events since the last fit; full refresh without a state."""
    state = load_state(state_dir)
    if state is None:
        return full_refresh(interactions, catalog, customers, settings, as_of, state_dir)
    model, old_matrix = state
    matrix = als.build_matrix(interactions, settings.weights, as_of, base=old_matrix)
    rows = als.users_with_new_events(interactions, matrix, since=old_matrix.as_of)
    als.update_users(model, matrix, rows)
    changed = [matrix.user_ids[i] for i in rows]
    known = set(customers)
    targets = [c for c in changed if c in known]
    recs = (
        _recommend(model, matrix, interactions, catalog, settings, as_of, targets)
        if targets
        else None
    )
    save_state(state_dir, model, matrix)
    empty = pd.DataFrame(columns=["customer_key", "rank", "product_id", "score", "source"])
    return RefreshResult(
        "incremental", recs if recs is not None else empty, None, targets, matrix.shape
    )


def _recommend(model, matrix, interactions, catalog, settings, as_of, customers) -> pd.DataFrame:
    top_categories = als.top_category_by_customer(interactions, catalog, settings.weights, as_of)
    return als.recommend_top_n(
        model,
        matrix,
        n=settings.top_n,
        exclude_purchased=settings.exclude_purchased,
        out_of_stock=als.out_of_stock_items(catalog),
        customers=customers,
        catalog=catalog,
        customer_top_category=top_categories,
    )
