"""Training frames and the model registry in the warehouse. No Dagster imports.

Training rows are `features.customer_feature_snapshots` joined to `training_labels`: the same
SQL as the scoring features, evaluated at earlier as-of dates, labelled only from time after
each as-of that the data has fully observed.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from personalization_assets.defs.privacy import pseudonym

SCHEMA = "models"


def propensity_frame(
    con: duckdb.DuckDBPyConnection,
    *,
    features: list[str],
    horizon_days: int,
    target: str,
) -> pd.DataFrame:
    """Snapshot rows with a closed label window. `target` is 'churn' or 'purchase'.

    churn: purchasers before as-of, label 1 = no purchase within the horizon;
    purchase: everyone, label 1 = a purchase within the horizon.
    """
    label = f"purchased_within_{int(horizon_days)}d"
    columns = ", ".join(f's."{c}"' for c in features)
    population = "and l.has_purchased_before" if target == "churn" else ""
    label_sql = f"1 - l.{label}" if target == "churn" else f"l.{label}"
    return con.execute(
        f"""
        select s.as_of, s.customer_key, {columns}, {label_sql} as label
        from main.customer_feature_snapshots s
        join main.training_labels l using (as_of, customer_key)
        where l.{label} is not null {population}
        order by s.as_of, s.customer_key
        """
    ).df()


def scoring_frame(con: duckdb.DuckDBPyConnection, features: list[str]) -> pd.DataFrame:
    """Current features of every customer (the population scores are written for)."""
    columns = ", ".join(f'"{c}"' for c in features)
    return con.execute(
        f"select customer_key, orders_all_time, {columns} from main.customer_features order by customer_key"
    ).df()


def ensure_registry(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"create schema if not exists {SCHEMA}")
    con.execute(
        f"""create table if not exists {SCHEMA}.model_registry (
            model_name varchar, model_version varchar, path varchar, trained_at timestamp,
            is_current boolean, promoted boolean, decision varchar, roc_auc double,
            baseline_roc_auc double)"""
    )
    con.execute(
        f"""create table if not exists {SCHEMA}.model_metrics (
            model_name varchar, model_version varchar, trained_at timestamp, scorer varchar,
            metric varchar, value double)"""
    )


def current_model(con: duckdb.DuckDBPyConnection, model_name: str) -> tuple[str, str, dict] | None:
    """(version, path, metrics) of the serving model, or None."""
    ensure_registry(con)
    row = con.execute(
        f"select model_version, path from {SCHEMA}.model_registry where model_name = ? and is_current",
        [model_name],
    ).fetchone()
    if row is None:
        return None
    metrics = dict(
        con.execute(
            f"select metric, value from {SCHEMA}.model_metrics "
            "where model_name = ? and model_version = ? and scorer = 'model'",
            [model_name, row[0]],
        ).fetchall()
    )
    return row[0], row[1], metrics


def record_model(
    con: duckdb.DuckDBPyConnection,
    *,
    model_name: str,
    version: str,
    path: str,
    metrics: dict[str, float],
    baseline_metrics: dict[str, float],
    promoted: bool,
    decision: str,
    trained_at: dt.datetime,
) -> None:
    """Append metrics (model and baseline) and the registry row; move `is_current` if promoted."""
    ensure_registry(con)
    con.execute(
        f"delete from {SCHEMA}.model_metrics where model_name = ? and model_version = ?",
        [model_name, version],
    )
    rows = [(model_name, version, trained_at, "model", k, float(v)) for k, v in metrics.items()]
    rows += [
        (model_name, version, trained_at, "baseline", k, float(v))
        for k, v in baseline_metrics.items()
    ]
    con.executemany(f"insert into {SCHEMA}.model_metrics values (?, ?, ?, ?, ?, ?)", rows)
    con.execute(
        f"delete from {SCHEMA}.model_registry where model_name = ? and model_version = ?",
        [model_name, version],
    )
    if promoted:
        con.execute(
            f"update {SCHEMA}.model_registry set is_current = false where model_name = ?",
            [model_name],
        )
    con.execute(
        f"insert into {SCHEMA}.model_registry values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            model_name,
            version,
            path,
            trained_at,
            promoted,
            promoted,
            decision,
            metrics.get("roc_auc"),
            baseline_metrics.get("roc_auc"),
        ],
    )


def write_scores(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str,
    frame: pd.DataFrame,
    scored_at: dt.datetime,
) -> int:
    """Replace this model's scores with (customer_key, score) from `frame`."""
    con.execute(
        f"""create table if not exists {SCHEMA}.propensity_scores (
            customer_key varchar, model_name varchar, score double, model_version varchar,
            scored_at timestamp)"""
    )
    pseudonym.rekey_legacy_table(con, f"{SCHEMA}.propensity_scores")
    con.execute(f"delete from {SCHEMA}.propensity_scores where model_name = ?", [model_name])
    scores = frame.assign(model_name=model_name, model_version=version, scored_at=scored_at)[
        ["customer_key", "model_name", "score", "model_version", "scored_at"]
    ]
    con.register("_scores", scores)
    con.execute(f"insert into {SCHEMA}.propensity_scores select * from _scores")
    con.unregister("_scores")
    return len(scores)
