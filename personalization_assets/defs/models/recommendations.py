"""Implicit-feedback ALS product recommendations (pure logic, no Dagster).

Pipeline::

    interactions (customer_key, product_id, event_type, event_ts)
        --build_matrix-->  InteractionMatrix (users x items CSR confidences + id maps)
        --fit_als------->  implicit.cpu.als.AlternatingLeastSquares
        --recommend_top_n--> (customer_key, rank, product_id, score, source)

Confidence of a (user, item) cell = sum over that user's events on the item of
``event_weight[event_type] * 0.5 ** (age_days / half_life_days)``, then rescaled by
BM25 (``implicit.nearest_neighbours.bm25_weight``: down-weights popular items and
very active users), ``1 + log_alpha * log1p(x)``, or left as is.

Threads and BLAS: implicit's ALS solves many tiny per-user linear systems in its own
OpenMP loop (``AlsParams.num_threads``; default 1). If OpenBLAS is also allowed to
spawn threads each tiny BLAS call fights for the cores, which implicit documents as a
10x slowdown, so every call into implicit here runs inside
``threadpoolctl.threadpool_limits(1, "blas")`` (equivalent to ``OPENBLAS_NUM_THREADS=1``
for the duration of the call, without changing the process-wide setting). With a fixed
``random_state`` fitting is deterministic: per-user/per-item solves are independent,
so the result does not depend on ``num_threads`` either.

Cold start: customers without trained factors (unseen in the matrix, or added after
the fit and not refreshed with :func:`update_users`) get the most popular items of
their top category (``source='popular_in_category'``) and then overall popular items
(``source='popular'``). ALS results are ``source='als'``. Scores are comparable only
within a source: ALS scores are dot products, fallback scores are item popularity
(sum of decayed event weights) divided by the top item's popularity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import bm25_weight
from pydantic import BaseModel, ConfigDict, Field
from threadpoolctl import threadpool_limits

__all__ = [
    "AlsParams",
    "InteractionMatrix",
    "InteractionWeights",
    "RecommenderFn",
    "als_recommender",
    "build_matrix",
    "evaluate_topk",
    "fit_als",
    "out_of_stock_items",
    "popularity_recommender",
    "recommend_top_n",
    "similar_items",
    "time_split_interactions",
    "top_category_by_customer",
    "update_users",
    "users_with_new_events",
]

SOURCE_ALS = "als"
SOURCE_CATEGORY = "popular_in_category"
SOURCE_POPULAR = "popular"

# implicit's topk marks filtered / missing slots with the lowest float32 score.
_FILTERED_SCORE = -1e37
_BATCH = 50_000

RecommenderFn = Callable[[np.ndarray, int], np.ndarray]
"""``fn(user_indices, k) -> int array (len(user_indices), k)`` of item indices, -1 = none."""


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Pin BLAS to one thread while implicit runs its own OpenMP loop (see module doc)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# --------------------------------------------------------------------------- config


def _default_event_weights() -> dict[str, float]:
    return {"product_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}


class InteractionWeights(BaseModel):
    """How raw events become ALS confidences.

    * ``event_weights``: weight per event type; unlisted types weigh 0 (ignored).
    * ``half_life_days``: exponential time decay relative to ``as_of`` (``None`` = off).
    * ``confidence``: ``'bm25'`` (``bm25_weight(X, K1=bm25_k1, B=bm25_b)`` on the
      users x items matrix: idf over items, length norm over users), ``'log'``
      (``1 + log_alpha * log1p(x)``) or ``'none'``.
    * ``purchase_event_types``: events recorded in ``InteractionMatrix.purchased``
      (what ``exclude_purchased`` filters); they need a positive weight to be kept.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_weights: dict[str, float] = Field(default_factory=_default_event_weights)
    half_life_days: float | None = Field(default=30.0, gt=0)
    confidence: Literal["bm25", "log", "none"] = "bm25"
    log_alpha: float = Field(default=1.0, gt=0)
    bm25_k1: float = Field(default=100.0, gt=0)
    bm25_b: float = Field(default=0.8, ge=0, le=1)
    purchase_event_types: tuple[str, ...] = ("purchase",)

    def model_post_init(self, __context: Any) -> None:
        negative = {k: v for k, v in self.event_weights.items() if v < 0}
        if negative:
            raise ValueError(f"event weights must be >= 0, got {negative}")


class AlsParams(BaseModel):
    """``implicit`` ALS hyper-parameters (CPU). ``alpha`` multiplies the confidences."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factors: int = Field(default=64, ge=1)
    regularization: float = Field(default=0.05, ge=0)
    alpha: float = Field(default=1.0, gt=0)
    iterations: int = Field(default=15, ge=1)
    random_state: int = 42
    num_threads: int = Field(default=1, ge=0)
    use_cg: bool = True


# --------------------------------------------------------------------------- matrix


@dataclass
class InteractionMatrix:
    """Users x items confidences plus the id <-> index maps.

    ``user_ids[i]`` / ``item_ids[j]`` are the ids of row ``i`` / column ``j``;
    ``user_index`` / ``item_index`` are ``pd.Index`` objects for vectorised lookup.
    ``purchased`` (same shape, 1.0 where bought up to ``as_of``) drives
    ``exclude_purchased``. ``item_popularity`` is the per-item sum of decayed event
    weights (before confidence scaling), used by the popularity fallbacks.
    """

    user_items: sp.csr_matrix
    purchased: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_popularity: np.ndarray
    as_of: pd.Timestamp
    weights: InteractionWeights
    dropped_unknown_items: int = 0

    @property
    def user_index(self) -> pd.Index:
        return pd.Index(self.user_ids)

    @property
    def item_index(self) -> pd.Index:
        return pd.Index(self.item_ids)

    @property
    def shape(self) -> tuple[int, int]:
        return self.user_items.shape

    def user_rows(self, customer_keys: Sequence[Any]) -> np.ndarray:
        """Row index per customer id, -1 if unseen."""
        return self.user_index.get_indexer(pd.Index(customer_keys)).astype(np.int64)

    def item_cols(self, product_ids: Collection[Any]) -> np.ndarray:
        """Column index per product id, -1 if unknown."""
        return self.item_index.get_indexer(pd.Index(list(product_ids))).astype(np.int64)


def _as_of_like(as_of: Any, ts: pd.Series) -> pd.Timestamp:
    as_of = pd.Timestamp(as_of)
    tz = getattr(ts.dt, "tz", None)
    if tz is not None and as_of.tzinfo is None:
        as_of = as_of.tz_localize(tz)
    elif tz is None and as_of.tzinfo is not None:
        as_of = as_of.tz_convert("UTC").tz_localize(None)
    return as_of


def _lookup(values: pd.Series, table: Mapping[Any, float], default: float = 0.0) -> np.ndarray:
    """``table[value]`` per row as float64 (``default`` if absent/null); one dict lookup
    per distinct value, so it is cheap on tens of millions of categorical event rows."""
    codes, uniques = pd.factorize(values)
    per_value = np.array([float(table.get(u, default)) for u in uniques] + [default])
    return per_value[codes]  # code -1 (null) picks the trailing default


def _ordered_ids(values: pd.Series, base: np.ndarray | None) -> np.ndarray:
    """Sorted unique ids (deterministic regardless of row order), appended to ``base``."""
    uniques = pd.Index(pd.unique(values))
    try:
        uniques = uniques.sort_values()
    except TypeError:  # mixed, unorderable ids: fall back to their string order
        uniques = pd.Index(sorted(uniques, key=str), dtype=object)
    if base is None:
        return uniques.to_numpy()
    base_index = pd.Index(base)
    return base_index.append(uniques[~uniques.isin(base_index)]).to_numpy()


def build_matrix(
    interactions: pd.DataFrame,
    weights: InteractionWeights | None = None,
    as_of: Any = None,
    *,
    base: InteractionMatrix | None = None,
) -> InteractionMatrix:
    """Aggregate events up to and including ``as_of`` into a CSR confidence matrix.

    Events after ``as_of`` and events whose type weighs 0 are ignored. ``as_of=None``
    uses the latest event timestamp. With ``base`` (an earlier matrix) the item columns
    are kept identical, events on items ``base`` does not know are dropped (counted in
    ``dropped_unknown_items``), and known users keep their rows while new users are
    appended: use this to build the matrix for :func:`update_users`.
    """
    weights = weights or InteractionWeights()
    required = {"customer_key", "product_id", "event_type", "event_ts"}
    missing = required - set(interactions.columns)
    if missing:
        raise KeyError(f"interactions missing columns: {sorted(missing)}")
    ts = pd.to_datetime(interactions["event_ts"])
    if as_of is None:
        as_of = ts.max() if len(ts) else pd.Timestamp.now()
    as_of = _as_of_like(as_of, ts)

    event_weight = _lookup(interactions["event_type"], weights.event_weights)
    keep = (ts <= as_of).to_numpy() & (event_weight > 0)
    events = interactions.loc[keep, ["customer_key", "product_id", "event_type"]]
    value = event_weight[keep]
    if weights.half_life_days is not None:
        age_days = ((as_of - ts[keep]) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)
        value = value * np.exp2(-age_days / weights.half_life_days)

    user_ids = _ordered_ids(events["customer_key"], None if base is None else base.user_ids)
    if base is None:
        item_ids = _ordered_ids(events["product_id"], None)
    else:
        if base.item_ids.shape[0] == 0:
            raise ValueError("base matrix has no items")
        item_ids = base.item_ids
    rows = pd.Index(user_ids).get_indexer(events["customer_key"])
    cols = pd.Index(item_ids).get_indexer(events["product_id"])
    known = cols >= 0
    dropped = int((~known).sum())
    rows, cols, value = rows[known], cols[known], value[known]
    purchase_types = dict.fromkeys(weights.purchase_event_types, 1.0)
    is_purchase = _lookup(events["event_type"], purchase_types)[known] > 0

    shape = (len(user_ids), len(item_ids))
    raw = sp.csr_matrix((value, (rows, cols)), shape=shape, dtype=np.float64)
    raw.sum_duplicates()
    raw.eliminate_zeros()
    purchased = sp.csr_matrix(
        (np.ones(int(is_purchase.sum()), dtype=np.float32), (rows[is_purchase], cols[is_purchase])),
        shape=shape,
    )
    purchased.sum_duplicates()
    purchased.data[:] = 1.0
    item_popularity = np.asarray(raw.sum(axis=0), dtype=np.float64).ravel()

    if weights.confidence == "bm25" and raw.nnz:
        scaled = bm25_weight(raw, K1=weights.bm25_k1, B=weights.bm25_b).tocsr()
        # idf = log(N) - log1p(df) is <= 0 for an item nearly every user touched;
        # keep such cells as weak positives rather than turning them into dislikes.
        scaled.data = np.maximum(scaled.data, 1e-3)
    elif weights.confidence == "log":
        scaled = raw.copy()
        scaled.data = 1.0 + weights.log_alpha * np.log1p(scaled.data)
    else:
        scaled = raw
    user_items = sp.csr_matrix(scaled, dtype=np.float32)
    user_items.sort_indices()
    purchased.sort_indices()
    return InteractionMatrix(
        user_items=user_items,
        purchased=purchased.astype(np.float32),
        user_ids=np.asarray(user_ids),
        item_ids=np.asarray(item_ids),
        item_popularity=item_popularity,
        as_of=as_of,
        weights=weights,
        dropped_unknown_items=dropped,
    )


def time_split_interactions(
    interactions: pd.DataFrame, split_ts: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, test)``: events at or before ``split_ts`` / strictly after it."""
    ts = pd.to_datetime(interactions["event_ts"])
    split_ts = _as_of_like(split_ts, ts)
    before = (ts <= split_ts).to_numpy()
    return interactions.loc[before], interactions.loc[~before]


def out_of_stock_items(catalog: pd.DataFrame) -> set[Any]:
    """Product ids whose ``in_stock`` is false (null counts as out of stock)."""
    in_stock = catalog["in_stock"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return set(catalog.loc[~in_stock, "product_id"].tolist())


def top_category_by_customer(
    interactions: pd.DataFrame,
    catalog: pd.DataFrame,
    weights: InteractionWeights | None = None,
    as_of: Any = None,
) -> pd.Series:
    """customer_key -> category with the largest summed event weight (ties: first by name)."""
    weights = weights or InteractionWeights()
    ts = pd.to_datetime(interactions["event_ts"])
    frame = interactions.assign(_w=_lookup(interactions["event_type"], weights.event_weights))
    if as_of is not None:
        frame = frame.loc[(ts <= _as_of_like(as_of, ts)).to_numpy()]
    frame = frame.loc[frame["_w"] > 0].merge(
        catalog[["product_id", "category"]], on="product_id", how="inner"
    )
    totals = frame.groupby(["customer_key", "category"], observed=True)["_w"].sum().reset_index()
    totals = totals.sort_values(["customer_key", "_w", "category"], ascending=[True, False, True])
    top = totals.drop_duplicates("customer_key")
    return pd.Series(top["category"].to_numpy(), index=top["customer_key"].to_numpy())


# --------------------------------------------------------------------------- fitting


def _csr(matrix: InteractionMatrix | sp.spmatrix) -> sp.csr_matrix:
    if isinstance(matrix, InteractionMatrix):
        return matrix.user_items
    return sp.csr_matrix(matrix, dtype=np.float32)


def fit_als(
    matrix: InteractionMatrix | sp.spmatrix, params: AlsParams | None = None
) -> AlternatingLeastSquares:
    """Fit implicit's CPU ALS on the users x items matrix (deterministic per seed)."""
    params = params or AlsParams()
    user_items = _csr(matrix)
    if user_items.nnz == 0:
        raise ValueError("interaction matrix is empty; nothing to fit")
    with _single_threaded_blas():
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            use_cg=params.use_cg,
            num_threads=params.num_threads,
            random_state=params.random_state,
        )
        model.fit(user_items, show_progress=False)
    return model


def update_users(
    model: AlternatingLeastSquares,
    matrix_with_new_rows: InteractionMatrix | sp.spmatrix,
    user_indices: Sequence[int] | np.ndarray,
) -> AlternatingLeastSquares:
    """Refresh the factors of ``user_indices`` in place, keeping item factors fixed.

    Uses ``model.partial_fit_users`` (an exact least-squares solve of each user's
    row against the current item factors, i.e. implicit's ``recalculate_user``).
    Every other user's factor row is left untouched (byte-identical). Indices beyond
    the current factor table (new users) grow it; rows of new users that are *not*
    refreshed stay zero and are served by the cold-start path. The matrix must share
    the model's item columns (build it with ``build_matrix(..., base=old_matrix)``).
    Users not refreshed keep factors fitted on their older rows (time decay and BM25's
    global statistics shift every row a little); schedule a full :func:`fit_als`
    periodically. Returns ``model``.
    """
    user_items = _csr(matrix_with_new_rows)
    indices = np.unique(np.asarray(user_indices, dtype=np.int64))
    if user_items.shape[1] != model.item_factors.shape[0]:
        raise ValueError(
            f"matrix has {user_items.shape[1]} items but the model has "
            f"{model.item_factors.shape[0]}; build it with base=<training matrix>"
        )
    if len(indices) == 0:
        return model
    if indices[0] < 0 or indices[-1] >= user_items.shape[0]:
        raise IndexError("user_indices out of range for the matrix")
    with _single_threaded_blas():
        model.partial_fit_users(indices, user_items[indices])
    return model


def users_with_new_events(
    interactions: pd.DataFrame, matrix: InteractionMatrix, since: Any
) -> np.ndarray:
    """Row indices (sorted) of matrix users with a weighted event in ``(since, as_of]``."""
    ts = pd.to_datetime(interactions["event_ts"])
    since = _as_of_like(since, ts)
    weight = _lookup(interactions["event_type"], matrix.weights.event_weights)
    mask = ((ts > since) & (ts <= matrix.as_of)).to_numpy() & (weight > 0)
    rows = matrix.user_rows(pd.unique(interactions.loc[mask, "customer_key"]))
    return np.sort(rows[rows >= 0])


# --------------------------------------------------------------------------- recommend


def _trained_users(model: AlternatingLeastSquares, matrix: InteractionMatrix) -> np.ndarray:
    """Bool per matrix row: has a non-zero trained factor and a non-empty row."""
    n_users = matrix.shape[0]
    ok = np.zeros(n_users, dtype=bool)
    limit = min(n_users, model.user_factors.shape[0])
    ok[:limit] = np.any(model.user_factors[:limit] != 0, axis=1)
    ok &= np.diff(matrix.user_items.indptr) > 0
    return ok


def _purchased_csr(
    purchased: sp.spmatrix | Collection[tuple[Any, Any]] | None, matrix: InteractionMatrix
) -> sp.csr_matrix:
    if purchased is None:
        return matrix.purchased
    if sp.issparse(purchased):
        if purchased.shape != matrix.shape:
            raise ValueError(f"purchased matrix shape {purchased.shape} != {matrix.shape}")
        return sp.csr_matrix(purchased, dtype=np.float32)
    pairs = list(purchased)
    if not pairs:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)
    customers, products = zip(*pairs, strict=True)
    rows, cols = matrix.user_rows(customers), matrix.item_cols(products)
    ok = (rows >= 0) & (cols >= 0)
    out = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], cols[ok])), shape=matrix.shape
    )
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


def _popular_order(matrix: InteractionMatrix, exclude: np.ndarray) -> np.ndarray:
    """Item columns by descending popularity (ties: lower column first), minus ``exclude``."""
    order = np.lexsort((np.arange(matrix.shape[1]), -matrix.item_popularity))
    order = order[matrix.item_popularity[order] > 0]
    return order[~np.isin(order, exclude)]


def _fallback_rows(
    customer_keys: np.ndarray,
    top_categories: Sequence[Any],
    *,
    n: int,
    matrix: InteractionMatrix,
    popular: np.ndarray,
    item_category: np.ndarray | None,
    per_customer_exclude: Mapping[int, np.ndarray],
) -> pd.DataFrame:
    """Cold-start lists: top-category popular items, then overall popular items.

    Customers sharing a top category share one list (vectorised); only customers with
    their own exclusions (``per_customer_exclude``, keyed by position) are built singly.
    """
    top_pop = matrix.item_popularity[popular[0]] if len(popular) else 1.0
    codes, categories = pd.factorize(pd.Series(list(top_categories), dtype=object))
    frames = []
    for code in np.unique(codes):
        positions = np.flatnonzero(codes == code)
        if code >= 0 and item_category is not None:
            in_cat = popular[item_category[popular] == categories[code]][:n]
        else:
            in_cat = popular[:0]
        rest = popular[~np.isin(popular, in_cat)]
        items = np.concatenate([in_cat, rest])
        source = np.array([SOURCE_CATEGORY] * len(in_cat) + [SOURCE_POPULAR] * len(rest))
        special = np.array([p in per_customer_exclude for p in positions], dtype=bool)
        plain = positions[~special]
        if len(plain):
            top, top_source = items[:n], source[:n]
            frames.append(
                pd.DataFrame(
                    {
                        "customer_key": np.repeat(customer_keys[plain], len(top)),
                        "rank": np.tile(np.arange(1, len(top) + 1), len(plain)),
                        "product_id": np.tile(matrix.item_ids[top], len(plain)),
                        "score": np.tile(matrix.item_popularity[top] / top_pop, len(plain)),
                        "source": np.tile(top_source, len(plain)),
                    }
                )
            )
        for pos in positions[special]:
            keep = ~np.isin(items, per_customer_exclude[int(pos)])
            top, top_source = items[keep][:n], source[keep][:n]
            frames.append(
                pd.DataFrame(
                    {
                        "customer_key": np.repeat(customer_keys[pos : pos + 1], len(top)),
                        "rank": np.arange(1, len(top) + 1),
                        "product_id": matrix.item_ids[top],
                        "score": matrix.item_popularity[top] / top_pop,
                        "source": top_source,
                    }
                )
            )
    return _concat(frames)


_COLUMNS = ["customer_key", "rank", "product_id", "score", "source"]
_SOURCES = [SOURCE_ALS, SOURCE_CATEGORY, SOURCE_POPULAR]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if frames:
        out = pd.concat(frames, ignore_index=True)[_COLUMNS]
    else:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in _COLUMNS}).astype(
            {"rank": np.int64, "score": np.float64}
        )
    return out.assign(source=pd.Categorical(out["source"], categories=_SOURCES))


def recommend_top_n(
    model: AlternatingLeastSquares,
    matrix: InteractionMatrix,
    *,
    n: int = 10,
    exclude_purchased: bool = True,
    purchased: sp.spmatrix | Collection[tuple[Any, Any]] | None = None,
    out_of_stock: Collection[Any] = (),
    customers: Sequence[Any] | None = None,
    catalog: pd.DataFrame | None = None,
    customer_top_category: Mapping[Any, Any] | pd.Series | None = None,
    batch_size: int = _BATCH,
) -> pd.DataFrame:
    """Top-``n`` products per customer as ``(customer_key, rank, product_id, score, source)``.

    * ``customers=None``: every matrix user with trained factors. Otherwise the given
      ids (deduplicated, output in that order); unknown ones get the cold-start path.
    * ``exclude_purchased``: drop items the customer bought (``purchased``: a CSR
      aligned with ``matrix``, a set of ``(customer_key, product_id)`` pairs, or
      ``None`` for ``matrix.purchased``) via implicit's ``filter_already_liked_items``.
    * ``out_of_stock``: product ids never recommended (``filter_items``); ids in
      ``catalog`` with ``in_stock`` false are added.
    * ``customer_top_category`` + ``catalog``: cold-start customers with a known top
      category get that category's popular items first.
    A list is shorter than ``n`` only when fewer than ``n`` items remain after filtering.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if model.item_factors.shape[0] != matrix.shape[1]:
        raise ValueError("model and matrix disagree on the number of items")
    oos = set(out_of_stock)
    item_category = None
    if catalog is not None:
        oos |= out_of_stock_items(catalog)
        cat_map = catalog.drop_duplicates("product_id").set_index("product_id")["category"]
        item_category = cat_map.reindex(matrix.item_ids).to_numpy(dtype=object)
    elif customer_top_category is not None:
        raise ValueError("customer_top_category needs catalog (product_id -> category)")
    oos_cols = np.unique(matrix.item_cols(oos)) if oos else np.empty(0, np.int64)
    oos_cols = oos_cols[oos_cols >= 0].astype(np.int32)
    bought = _purchased_csr(purchased, matrix) if exclude_purchased else None

    trained = _trained_users(model, matrix)
    if customers is None:
        wanted_ids = matrix.user_ids[trained]
        rows = np.flatnonzero(trained)
    else:
        wanted_ids = np.asarray(pd.unique(pd.Series(list(customers), dtype=object)))
        rows = matrix.user_rows(wanted_ids)
    is_als = rows >= 0
    is_als[is_als] = trained[rows[is_als]]

    popular = _popular_order(matrix, oos_cols)
    frames: list[pd.DataFrame] = []

    als_rows = rows[is_als]
    for start in range(0, len(als_rows), batch_size):
        chunk = als_rows[start : start + batch_size]
        ids, scores = _top_n_excluding(model, chunk, bought, n, oos_cols if len(oos_cols) else None)
        valid = (scores > _FILTERED_SCORE) & (ids >= 0)
        counts = valid.sum(axis=1)
        user_pos = np.repeat(np.arange(len(chunk)), counts)
        frames.append(
            pd.DataFrame(
                {
                    "customer_key": matrix.user_ids[chunk][user_pos],
                    "rank": (np.cumsum(valid, axis=1)[valid]).astype(np.int64),
                    "product_id": matrix.item_ids[ids[valid]],
                    "score": scores[valid].astype(np.float64),
                    "source": SOURCE_ALS,
                }
            )
        )

    cold_ids = wanted_ids[~is_als]
    if len(cold_ids):
        cold_rows = rows[~is_als]
        per_customer_exclude: dict[int, np.ndarray] = {}
        if bought is not None:
            # Read the CSR arrays directly: one scipy row slice per cold customer took 7 s
            # for 62k of them at 100k customers.
            indptr, indices = bought.indptr, bought.indices
            known = np.flatnonzero(cold_rows >= 0)
            starts, ends = indptr[cold_rows[known]], indptr[cold_rows[known] + 1]
            bought_any = ends > starts
            for pos, lo, hi in zip(
                known[bought_any], starts[bought_any], ends[bought_any], strict=True
            ):
                per_customer_exclude[int(pos)] = indices[lo:hi]
        if customer_top_category is not None:
            mapping = pd.Series(customer_top_category)
            top_cats = mapping.reindex(pd.Index(cold_ids, dtype=object)).tolist()
        else:
            top_cats = [None] * len(cold_ids)
        frames.append(
            _fallback_rows(
                cold_ids,
                top_cats,
                n=n,
                matrix=matrix,
                popular=popular,
                item_category=item_category,
                per_customer_exclude=per_customer_exclude,
            )
        )

    out = _concat(frames)
    if customers is None:  # ALS users only, already in matrix row order
        return out
    order = pd.Index(wanted_ids).get_indexer(out["customer_key"])
    out = out.assign(_o=order).sort_values(["_o", "rank"], kind="stable")
    return out.drop(columns="_o").reset_index(drop=True)


# --------------------------------------------------------------------------- similar items


def similar_items(
    model: AlternatingLeastSquares,
    matrix: InteractionMatrix,
    product_ids: Sequence[Any],
    n: int = 10,
    *,
    out_of_stock: Collection[Any] = (),
) -> pd.DataFrame:
    """Cosine-nearest items by ALS item factors: ``(product_id, rank, similar_product_id,
    score)``. The item itself is never returned; unknown product ids yield no rows."""
    cols = matrix.item_cols(product_ids)
    query = np.asarray(list(product_ids), dtype=object)[cols >= 0]
    cols = cols[cols >= 0]
    if len(cols) == 0:
        return pd.DataFrame(columns=["product_id", "rank", "similar_product_id", "score"])
    oos = np.unique(matrix.item_cols(out_of_stock)) if out_of_stock else np.empty(0, np.int64)
    oos = oos[oos >= 0].astype(np.int32)
    with _single_threaded_blas():
        ids, scores = model.similar_items(
            cols, N=min(n + 1, matrix.shape[1]), filter_items=oos if len(oos) else None
        )
    ids, scores = np.asarray(ids), np.asarray(scores)
    valid = (ids != cols[:, None]) & (ids >= 0) & (scores > _FILTERED_SCORE)
    valid &= np.cumsum(valid, axis=1) <= n
    counts = valid.sum(axis=1)
    return pd.DataFrame(
        {
            "product_id": np.repeat(query, counts),
            "rank": np.cumsum(valid, axis=1)[valid].astype(np.int64),
            "similar_product_id": matrix.item_ids[ids[valid]],
            "score": scores[valid].astype(np.float64),
        }
    )


_MAX_EXTRA = 32  # candidates fetched beyond n to make room for a user's excluded items


def _top_n_excluding(
    model: AlternatingLeastSquares,
    users: np.ndarray,
    exclude: sp.csr_matrix | None,
    n: int,
    filter_items: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """implicit's top-``n`` with each user's ``exclude`` row filtered out: (ids, scores), -1 /
    ``_FILTERED_SCORE`` where fewer remain.

    implicit's own per-user filter (``filter_already_liked_items``) slices the CSR in Python
    for every few users (~4.5 s per 50k users here). Instead the top ``n + extra`` are asked for
    unfiltered (``extra`` = the most items any of these users excludes, capped), the excluded
    ones dropped with one vectorised lookup, and the first ``n`` kept: the same list, since at
    most ``extra`` candidates can go. Users excluding more than the cap go through implicit's
    filter as before."""
    users = np.asarray(users)

    def ask(who: np.ndarray, liked: sp.csr_matrix | None, k: int):
        with _single_threaded_blas():
            ids, scores = model.recommend(
                who,
                liked,
                N=k,
                filter_already_liked_items=liked is not None,
                filter_items=filter_items,
            )
        return np.asarray(ids).reshape(len(who), -1), np.asarray(scores).reshape(len(who), -1)

    if exclude is None or exclude.nnz == 0 or len(users) == 0:
        return ask(users, None, n)
    rows = exclude[users]
    row_len = np.diff(rows.indptr)
    extra = int(min(row_len.max(), _MAX_EXTRA))
    ids, scores = ask(users, None, n + extra)
    n_items = model.item_factors.shape[0]
    keys = _row_keys(rows)
    excluded = _in_sorted(np.arange(len(users), dtype=np.int64)[:, None] * n_items + ids, keys)
    keep = ~excluded & (ids >= 0) & (scores > _FILTERED_SCORE)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :n]  # kept first, in score order
    out_ids = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ids, order, 1), -1)
    out_scores = np.where(out_ids >= 0, np.take_along_axis(scores, order, 1), _FILTERED_SCORE)
    heavy = np.flatnonzero(row_len > extra)
    if len(heavy):
        h_ids, h_scores = ask(users[heavy], rows[heavy], n)
        out_ids[heavy] = -1
        out_scores[heavy] = _FILTERED_SCORE
        out_ids[heavy, : h_ids.shape[1]] = h_ids
        out_scores[heavy, : h_scores.shape[1]] = h_scores
    return out_ids, out_scores


# --------------------------------------------------------------------------- evaluation


def _in_sorted(query: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(query, sorted_keys)`` by binary search: no re-sort of the (large) keys."""
    if len(sorted_keys) == 0:
        return np.zeros(np.shape(query), dtype=bool)
    pos = np.searchsorted(sorted_keys, query)
    return sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == query


def _row_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """Sorted int64 keys ``row * n_cols + col`` of the stored cells."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return np.sort(rows * matrix.shape[1] + matrix.indices.astype(np.int64))


def als_recommender(
    model: AlternatingLeastSquares,
    train_matrix: InteractionMatrix,
    *,
    filter_already_liked: bool = True,
) -> RecommenderFn:
    """Recommender fn over ``train_matrix`` indices; filters all training interactions."""

    def recommend(users: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(users), k), -1, dtype=np.int64)
        for start in range(0, len(users), _BATCH):
            chunk = np.asarray(users[start : start + _BATCH])
            ids, scores = _top_n_excluding(
                model, chunk, train_matrix.user_items if filter_already_liked else None, k, None
            )
            ids = np.where(scores > _FILTERED_SCORE, ids, -1)
            out[start : start + len(chunk), : ids.shape[1]] = ids
        return out

    return recommend


def popularity_recommender(
    train_matrix: InteractionMatrix, *, filter_already_liked: bool = True
) -> RecommenderFn:
    """Baseline: globally most popular items, skipping each user's training items."""
    popular = _popular_order(train_matrix, np.empty(0, np.int64))
    keys = _row_keys(train_matrix.user_items) if filter_already_liked else None
    row_len = np.diff(train_matrix.user_items.indptr)
    n_items = train_matrix.shape[1]

    def recommend(users: np.ndarray, k: int) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.full((len(users), k), -1, dtype=np.int64)
        for start in range(0, len(users), _BATCH):
            chunk = users[start : start + _BATCH]
            depth = k + (int(row_len[chunk].max()) if keys is not None and len(chunk) else 0)
            cand = popular[: min(depth, len(popular))]
            grid = np.broadcast_to(cand, (len(chunk), len(cand)))
            if keys is not None:
                seen = _in_sorted(chunk[:, None] * n_items + grid, keys)
                # unseen candidates first, each group still in popularity order
                order = np.argsort(seen, axis=1, kind="stable")
                grid = np.where(
                    np.take_along_axis(seen, order, 1), -1, np.take_along_axis(grid, order, 1)
                )
            width = min(k, grid.shape[1])
            out[start : start + len(chunk), :width] = grid[:, :width]
        return out

    return recommend


def evaluate_topk(
    recommender_fn: RecommenderFn,
    train_matrix: InteractionMatrix,
    test_interactions: pd.DataFrame,
    k: int = 10,
    *,
    positive_event_types: Collection[str] = ("purchase",),
    exclude_train_items: bool = True,
) -> dict[str, float]:
    """precision@k, recall@k, MAP@k, NDCG@k (binary relevance), averaged over users.

    Held-out positives are test events of ``positive_event_types`` on users and items
    the training matrix knows. With ``exclude_train_items`` (the default, matching
    recommenders that filter already-seen items) pairs already in the training matrix
    are not counted as positives. Users without a remaining positive are skipped.
    recall@k = hits / |positives|; MAP@k normalises by min(|positives|, k).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    test = test_interactions.loc[test_interactions["event_type"].isin(positive_event_types)]
    rows = train_matrix.user_rows(test["customer_key"].to_numpy())
    cols = train_matrix.item_cols(test["product_id"].to_numpy())
    ok = (rows >= 0) & (cols >= 0)
    n_items = train_matrix.shape[1]
    pos_keys = np.unique(rows[ok] * n_items + cols[ok])
    if exclude_train_items and len(pos_keys):
        pos_keys = pos_keys[~_in_sorted(pos_keys, _row_keys(train_matrix.user_items))]
    result = {
        "k": float(k),
        "n_users": 0.0,
        "n_positives": float(len(pos_keys)),
        "precision_at_k": 0.0,
        "recall_at_k": 0.0,
        "map_at_k": 0.0,
        "ndcg_at_k": 0.0,
    }
    if len(pos_keys) == 0:
        return result
    pos_users = pos_keys // n_items
    users, n_rel = np.unique(pos_users, return_counts=True)
    recs = np.asarray(recommender_fn(users, k), dtype=np.int64)
    if recs.shape != (len(users), k):
        raise ValueError(f"recommender returned shape {recs.shape}, expected {(len(users), k)}")
    hits = (recs >= 0) & _in_sorted(users[:, None] * n_items + recs, pos_keys)
    ranks = np.arange(1, k + 1)
    hit_count = hits.sum(axis=1)
    precision_at_i = np.cumsum(hits, axis=1) / ranks
    ap = (precision_at_i * hits).sum(axis=1) / np.minimum(n_rel, k)
    discounts = 1.0 / np.log2(ranks + 1)
    dcg = (hits * discounts).sum(axis=1)
    idcg = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
    result.update(
        n_users=float(len(users)),
        precision_at_k=float((hit_count / k).mean()),
        recall_at_k=float((hit_count / n_rel).mean()),
        map_at_k=float(ap.mean()),
        ndcg_at_k=float((dcg / idcg).mean()),
    )
    return result
