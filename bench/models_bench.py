"""Benchmark the propensity and recommendation models on synthetic data.

Not a test. Reuses the planted-signal generators from ``tests/models/conftest.py``::

    .venv/bin/python bench/models_bench.py --customers 100000 1000000
    .venv/bin/python bench/models_bench.py --customers 100000 --only recommendations

Prints one markdown table per scale: wall-clock seconds per step and the headline
metrics. Times are wall-clock on whatever else the machine is doing; the load average
is printed alongside so noisy numbers can be spotted.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from personalization_assets.defs.models import propensity as prop  # noqa: E402
from personalization_assets.defs.models import recommendations as rec  # noqa: E402


def _load_generators() -> Any:
    spec = importlib.util.spec_from_file_location(
        "models_synthetic", ROOT / "tests" / "models" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


synthetic = _load_generators()
Row = tuple[str, str, str]


@contextmanager
def timed(rows: list[Row], step: str, detail: Callable[[], str] | str = "") -> Any:
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    rows.append((step, f"{elapsed:.2f}", detail() if callable(detail) else detail))
    print(f"  .. {step}: {elapsed:.2f}s", file=sys.stderr, flush=True)


def _fmt(metrics: dict[str, float], keys: list[str]) -> str:
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys)


def bench_propensity(n: int, nthread: int) -> list[Row]:
    rows: list[Row] = []
    with timed(rows, "propensity: generate frame"):
        frame = synthetic.make_propensity_frame(n, seed=1)
    rows[-1] = (*rows[-1][:2], f"{len(frame):,} rows x {len(synthetic.PROPENSITY_FEATURES)} feats")
    params = prop.PropensityParams(nthread=nthread)
    tasks = {
        "churn": ("churned_30d", "churn_baseline"),
        "purchase_7d": ("purchased_7d", "purchase_baseline"),
    }
    for task, (label, baseline) in tasks.items():
        start = time.perf_counter()
        result = prop.train_propensity(
            frame,
            feature_columns=synthetic.PROPENSITY_FEATURES,
            label_column=label,
            as_of_column="as_of",
            baseline_column=baseline,
            params=params,
        )
        elapsed = time.perf_counter() - start
        print(f"  .. {task}: train {elapsed:.2f}s", file=sys.stderr, flush=True)
        lift = result.metrics["roc_auc"] - result.baseline_metrics["roc_auc"]
        rows.append(
            (
                f"{task}: train (split+fit+eval)",
                f"{elapsed:.2f}",
                f"n_train={result.n_train:,} best_iter={result.best_iteration} "
                f"AUC={result.metrics['roc_auc']:.4f} vs baseline "
                f"{result.baseline_metrics['roc_auc']:.4f} (lift {lift:+.4f}), "
                + _fmt(result.metrics, ["pr_auc", "log_loss", "brier"]),
            )
        )
        with timed(rows, f"{task}: score all rows", f"{len(frame):,} rows"):
            probs = prop.score(result, frame)
        assert len(probs) == len(frame)
        with timed(rows, f"{task}: model_version hash"):
            prop.model_version(frame, params, synthetic.PROPENSITY_FEATURES)
        with tempfile.TemporaryDirectory() as tmp, timed(rows, f"{task}: save + load"):
            prop.load_model(prop.save_model(result, tmp))
    del frame
    gc.collect()
    return rows


def bench_recommendations(n: int, n_items: int, events: float, als: rec.AlsParams) -> list[Row]:
    rows: list[Row] = []
    with timed(rows, "recs: generate interactions"):
        interactions, catalog = synthetic.make_interactions(
            n, n_items, 20, events_per_user=events, string_ids=False, seed=1
        )
    rows[-1] = (*rows[-1][:2], f"{len(interactions):,} events, {n_items:,} items")
    split = synthetic.EPOCH + pd.Timedelta(days=50)
    train, test = rec.time_split_interactions(interactions, split)
    weights = rec.InteractionWeights()

    matrix: rec.InteractionMatrix
    with timed(rows, "recs: build_matrix (bm25, 30d decay)"):
        matrix = rec.build_matrix(train, weights, split)
    shape = f"{matrix.shape[0]:,} x {matrix.shape[1]:,}, nnz={matrix.user_items.nnz:,}"
    rows[-1] = (*rows[-1][:2], shape)

    with timed(
        rows,
        "recs: fit_als",
        f"factors={als.factors} iters={als.iterations} threads={als.num_threads}",
    ):
        model = rec.fit_als(matrix, als)

    out: pd.DataFrame
    with timed(rows, "recs: recommend_top_n all users (n=10)"):
        out = rec.recommend_top_n(model, matrix, n=10, catalog=catalog)
    rows[-1] = (*rows[-1][:2], f"{len(out):,} rows, {out['customer_key'].nunique():,} customers")
    del out

    metrics: dict[str, dict[str, float]] = {}
    for name, fn in (
        ("als", rec.als_recommender(model, matrix)),
        ("popularity", rec.popularity_recommender(matrix)),
    ):
        with timed(rows, f"recs: evaluate_topk {name} (k=10)"):
            metrics[name] = rec.evaluate_topk(
                fn, matrix, test, 10, positive_event_types=("purchase", "add_to_cart")
            )
        rows[-1] = (
            *rows[-1][:2],
            f"users={int(metrics[name]['n_users']):,} "
            + _fmt(metrics[name], ["precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k"]),
        )

    # incremental: the next 2 days of events, refreshed without a refit
    later = split + pd.Timedelta(days=2)
    window = interactions[interactions["event_ts"] <= later]
    with timed(rows, "recs: build_matrix (+2 days, base=)"):
        grown = rec.build_matrix(window, weights, later, base=matrix)
    idx = rec.users_with_new_events(window, grown, split)
    with timed(rows, "recs: update_users", f"{len(idx):,} users refreshed"):
        rec.update_users(model, grown, idx)

    items = list(matrix.item_ids[:1000])
    with timed(rows, "recs: similar_items (1,000 items, n=10)"):
        rec.similar_items(model, matrix, items, n=10)
    del interactions, train, test, matrix, grown, model
    gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000])
    parser.add_argument("--only", choices=["propensity", "recommendations"], default=None)
    parser.add_argument("--nthread", type=int, default=1, help="XGBoost threads")
    parser.add_argument("--als-threads", type=int, default=1, help="implicit ALS threads")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--events-per-customer", type=float, default=20.0)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    args = parser.parse_args()

    als = rec.AlsParams(
        factors=args.factors, iterations=args.iterations, num_threads=args.als_threads
    )
    print(f"cpus={os.cpu_count()} nthread(xgb)={args.nthread} als_threads={args.als_threads}")
    for n in args.customers:
        rows: list[Row] = []
        if args.only in (None, "propensity"):
            rows += bench_propensity(n, args.nthread)
        if args.only in (None, "recommendations"):
            rows += bench_recommendations(n, args.items, args.events_per_customer, als)
        load = os.getloadavg()[0]
        print(f"\n### customers={n:,}  (1-min load avg at end: {load:.2f})\n")
        print("| step | seconds | detail |")
        print("|---|---:|---|")
        for step, seconds, detail in rows:
            print(f"| {step} | {seconds} | {detail} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
