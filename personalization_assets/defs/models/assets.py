"""Models group: XGBoost churn and purchase propensity, implicit-ALS recommendations."""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from personalization_assets import engine, paths
from personalization_assets.defs.models import (
    propensity,
    recommendation_runs,
    recommendations,
    spark_propensity,
    training,
)
from personalization_assets.defs.models.settings import load_model_settings
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseResource,
)
from personalization_assets.spark_session import engine_spark_session

GROUP = "models"
OWNERS = ["team:data-science"]
SNAPSHOTS = dg.AssetKey(["features", "customer_feature_snapshots"])
LABELS = dg.AssetKey(["features", "training_labels"])
FEATURES = dg.AssetKey(["features", "customer_features"])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def _metrics_table(result: propensity.PropensityResult) -> str:
    keys = [k for k in result.metrics if k in result.baseline_metrics]
    lines = ["| metric | model | baseline |", "|---|---:|---:|"]
    lines += [f"| {k} | {result.metrics[k]:.4f} | {result.baseline_metrics[k]:.4f} |" for k in keys]
    return "\n".join(lines)


def _calibration_table(result: propensity.PropensityResult) -> str:
    frame = result.calibration
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---:|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append(
            "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
        )
    return "\n".join(lines)


def _importance_table(result: propensity.PropensityResult) -> str:
    lines = ["| feature | gain |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in list(result.feature_importance.items())[:15]]
    return "\n".join(lines)


def _propensity_asset(model_name: str, description: str):
    key = dg.AssetKey(["models", f"{model_name}_model"])

    @dg.asset(
        key=key,
        deps=[SNAPSHOTS, LABELS],
        group_name=GROUP,
        owners=OWNERS,
        kinds={"xgboost", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=description,
        check_specs=[
            dg.AssetCheckSpec(
                "promotion_gate",
                asset=key,
                description="The candidate beats its AUC floor and its baseline; otherwise it is not promoted.",
            )
        ],
    )
    def _model(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        project_config: ProjectConfigResource,
    ):
        settings = load_model_settings(project_config.path).propensity
        target = getattr(settings, model_name)
        with warehouse.connect() as con:
            frame = training.propensity_frame(
                con, features=settings.features, horizon_days=target.horizon_days, target=model_name
            )
            previous = training.current_model(con, model_name)
        frame["baseline"] = _baseline(model_name, frame, target.horizon_days)
        try:
            result = propensity.train_propensity(
                frame,
                feature_columns=settings.features,
                label_column="label",
                as_of_column="as_of",
                baseline_column="baseline",
                params=settings.params,
                fit=spark_propensity.spark_fit(f"personalization-{model_name}-model")
                if engine.engine() == "spark"
                else None,
            )
        except propensity.InsufficientTrainingData as error:
            context.log.warning(f"{model_name}: not trained, previous model kept: {error}")
            yield dg.MaterializeResult(
                metadata={"trained": False, "reason": str(error), "training_rows": len(frame)}
            )
            yield dg.AssetCheckResult(
                check_name="promotion_gate",
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"reason": f"not trained: {error}"},
            )
            return
        promoted, decision = propensity.promotion_decision(
            result.metrics,
            auc_floor=target.auc_floor,
            baseline_metrics=result.baseline_metrics,
            previous_metrics=previous[2]
            if previous and previous[0] != result.model_version
            else None,
        )
        path = propensity.save_model(result, paths.models_dir() / model_name)
        with warehouse.connect() as con:
            training.record_model(
                con,
                model_name=model_name,
                version=result.model_version,
                path=str(path),
                metrics=result.metrics,
                baseline_metrics=result.baseline_metrics,
                promoted=promoted,
                decision=decision,
                trained_at=_now(),
            )
        yield dg.MaterializeResult(
            metadata={
                "trained": True,
                "engine": result.extra.get("engine", "duckdb"),
                "model_version": result.model_version,
                "promoted": promoted,
                "decision": decision,
                "roc_auc": result.metrics["roc_auc"],
                "baseline_roc_auc": result.baseline_metrics["roc_auc"],
                "metrics_vs_baseline": dg.MetadataValue.md(_metrics_table(result)),
                "calibration_by_decile": dg.MetadataValue.md(_calibration_table(result)),
                "feature_importance_gain": dg.MetadataValue.md(_importance_table(result)),
                "rows_train_valid_test": f"{result.n_train} / {result.n_valid} / {result.n_test}",
                "test_as_of": str(result.test_as_of),
                "artifact": dg.MetadataValue.path(str(path)),
            }
        )
        yield dg.AssetCheckResult(
            check_name="promotion_gate", passed=promoted, metadata={"decision": decision}
        )

    return _model


def _baseline(model_name: str, frame: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Simple rules the models must beat: recency for churn, historical rate for purchase."""
    if model_name == "churn":
        return propensity.recency_baseline(frame["recency_days"], horizon_days)
    return propensity.historical_rate_baseline(frame["purchases_per_month"] * 3, 90, horizon_days)


churn_model = _propensity_asset(
    "churn",
    "XGBoost churn propensity: P(no purchase in the churn horizon) for customers who have purchased.\n\n"
    "Trained on leakage-free feature snapshots with a time split; promoted only when it beats the "
    "recency baseline and the AUC floor.",
)
purchase_model = _propensity_asset(
    "purchase",
    "XGBoost purchase propensity: P(a purchase within the purchase horizon) for every customer.\n\n"
    "Trained on leakage-free feature snapshots with a time split; promoted only when it beats the "
    "historical-rate baseline and the AUC floor.",
)


@dg.asset(
    key=["models", "propensity_scores"],
    deps=[
        dg.AssetKey(["models", "churn_model"]),
        dg.AssetKey(["models", "purchase_model"]),
        FEATURES,
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"xgboost", "duckdb"},
    pool=WAREHOUSE_POOL,
)
def propensity_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
) -> dg.MaterializeResult:
    """Churn and purchase scores for every customer (keyed by customer_key), from the currently promoted models.

    Each row records the model version and scoring time; a model never promoted is reported, not scored.
    """
    settings = load_model_settings(project_config.path).propensity
    scored_at = _now()
    metadata: dict = {"engine": engine.engine()}
    with engine_spark_session("personalization-scores") as spark, warehouse.connect() as con:
        frame = training.scoring_frame(con, settings.features)
        for model_name in ("churn", "purchase"):
            current = training.current_model(con, model_name)
            if current is None:
                metadata[f"{model_name}"] = "no promoted model yet: not scored"
                context.log.warning(f"{model_name}: no promoted model; scores not written")
                continue
            version, path, _ = current
            model = propensity.load_model(path)
            population = frame[frame["orders_all_time"] > 0] if model_name == "churn" else frame
            scored = (
                spark_propensity.score_on_spark(spark, model, population)
                if spark
                else propensity.score(model, population)
            )
            scores = population[["customer_key"]].assign(score=scored)
            n = training.write_scores(con, model_name, version, scores, scored_at)
            metadata[f"{model_name}_version"] = version
            metadata[f"{model_name}_scored"] = n
            metadata[f"{model_name}_mean_score"] = float(scores["score"].mean()) if n else 0.0
    return dg.MaterializeResult(metadata={**metadata, "scored_at": str(scored_at)})


class RecommendationRunConfig(dg.Config):
    """`full` refits ALS for everyone; `incremental` (the sensor's choice) refreshes only customers
    with new events since the last fit, without a retrain."""

    mode: str = "full"


RECOMMENDATIONS_KEY = dg.AssetKey(["models", "product_recommendations"])


@dg.asset(
    key=RECOMMENDATIONS_KEY,
    deps=[
        dg.AssetKey(["warehouse", "fct_events"]),
        dg.AssetKey(["warehouse", "dim_products"]),
        dg.AssetKey(["warehouse", "customer_keys"]),
        FEATURES,
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"implicit", "duckdb"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "als_beats_popularity_and_previous",
            asset=RECOMMENDATIONS_KEY,
            description="On the time-split holdout, ALS precision@10 beats popularity and is not "
            "more than 10% below the previous full fit.",
        )
    ],
)
def product_recommendations(
    context: dg.AssetExecutionContext,
    config: RecommendationRunConfig,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Top-N products per customer_key from implicit ALS (views, carts, purchases, time-decayed), with
    purchased and out-of-stock products excluded and flagged cold-start fallbacks; plus similar products.

    Full runs evaluate first (ALS trained up to a holdout cut-off versus popularity and versus the
    previous fit), then refit on everything; incremental runs refresh only customers with new events.
    """
    settings = load_model_settings(project_config.path).recommendations
    with warehouse.connect(read_only=True) as con:
        interactions = con.execute(
            "select customer_key, product_id, event_type, event_ts from "
            f"{pseudonym.keyed_relation_sql('main.fct_events')} "
            "where product_id is not null and event_type in "
            "('product_view', 'email_click', 'add_to_cart', 'purchase')"
        ).df()
        catalog = con.execute("select product_id, category, in_stock from main.dim_products").df()
        customers = [
            r[0] for r in con.execute("select customer_key from main.customer_features").fetchall()
        ]
        as_of = con.execute("select as_of from main.feature_as_of").fetchone()[0]
    state_dir = paths.models_dir() / "recommendations"
    incremental = config.mode == "incremental"
    refresh = (
        recommendation_runs.incremental_refresh if incremental else recommendation_runs.full_refresh
    )(interactions, catalog, customers, settings, as_of, state_dir)
    evaluation = (
        {}
        if refresh.mode == "incremental"
        else _evaluate_recommenders(interactions, settings, as_of)
    )
    with warehouse.connect() as con:
        _store_recommendations(con, refresh)
        previous = _previous_als_metrics(con) if evaluation else {}
        if evaluation:
            _record_als_metrics(con, evaluation, as_of)
        total = con.execute("select count(*) from models.product_recommendations").fetchone()[0]
    metadata = {
        "mode": refresh.mode,
        "dagster/row_count": total,
        "customers_refreshed": len(refresh.refreshed_customers),
        "matrix": f"{refresh.matrix_shape[0]} customers × {refresh.matrix_shape[1]} products",
    }
    if not refresh.recommendations.empty:
        sources = refresh.recommendations.groupby("source")["customer_key"].nunique().to_dict()
        metadata["customers_by_source"] = dg.MetadataValue.json(
            {k: int(v) for k, v in sources.items()}
        )
    if evaluation:
        metadata["evaluation_at_10"] = dg.MetadataValue.md(_evaluation_table(evaluation, previous))
    yield dg.MaterializeResult(metadata=metadata)
    if not evaluation:
        yield dg.AssetCheckResult(
            check_name="als_beats_popularity_and_previous",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "note": f"not re-evaluated ({refresh.mode} refresh): the item factors of the "
                "last full fit, which was evaluated, are unchanged"
            },
        )
    else:
        als_p = evaluation["als"].get("precision_at_k", 0.0)
        pop_p = evaluation["popularity"].get("precision_at_k", 0.0)
        prev_p = previous.get("precision_at_k")
        passed = als_p > pop_p and (prev_p is None or als_p >= 0.9 * prev_p)
        yield dg.AssetCheckResult(
            check_name="als_beats_popularity_and_previous",
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "als_precision_at_10": als_p,
                "popularity_precision_at_10": pop_p,
                "previous_precision_at_10": prev_p if prev_p is not None else "none",
            },
        )


def _store_recommendations(con, refresh: recommendation_runs.RefreshResult) -> None:
    con.execute("create schema if not exists models")
    con.register("_recs", refresh.recommendations)
    if refresh.mode == "full":
        con.execute("create or replace table models.product_recommendations as select * from _recs")
        con.register("_similar", refresh.similar)
        con.execute("create or replace table models.similar_products as select * from _similar")
    else:
        con.execute(
            "delete from models.product_recommendations where customer_key in (select unnest(?))",
            [list(refresh.refreshed_customers)],
        )
        con.execute("insert into models.product_recommendations select * from _recs")


def _previous_als_metrics(con) -> dict[str, float]:
    training.ensure_registry(con)
    return dict(
        con.execute(
            """
            select metric, value from models.model_metrics
            where model_name = 'recommendations' and scorer = 'model'
              and trained_at = (select max(trained_at) from models.model_metrics
                                where model_name = 'recommendations')
            """
        ).fetchall()
    )


def _record_als_metrics(con, evaluation, as_of) -> None:
    trained_at = _now()
    rows = [
        ("recommendations", str(as_of), trained_at, scorer, metric, float(value))
        for scorer, key in (("model", "als"), ("baseline", "popularity"))
        for metric, value in evaluation[key].items()
    ]
    con.executemany("insert into models.model_metrics values (?, ?, ?, ?, ?, ?)", rows)


def _evaluate_recommenders(
    interactions: pd.DataFrame, settings, as_of
) -> dict[str, dict[str, float]]:
    split = pd.Timestamp(as_of) - pd.Timedelta(days=settings.evaluation_holdout_days)
    train, test = recommendations.time_split_interactions(interactions, split)
    if train.empty or test.empty:
        return {}
    matrix = recommendations.build_matrix(train, settings.weights, split)
    model = recommendations.fit_als(matrix, settings.als)
    return {
        "als": recommendations.evaluate_topk(
            recommendations.als_recommender(model, matrix), matrix, test, 10
        ),
        "popularity": recommendations.evaluate_topk(
            recommendations.popularity_recommender(matrix), matrix, test, 10
        ),
    }


def _evaluation_table(evaluation: dict[str, dict[str, float]], previous: dict[str, float]) -> str:
    if not evaluation:
        return "not enough history for a holdout evaluation"
    if previous:
        evaluation = {**evaluation, "previous ALS fit": previous}
    metrics = [
        m
        for m in ("precision_at_k", "recall_at_k", "map_at_k", "ndcg_at_k", "n_users")
        if m in evaluation["als"]
    ]
    lines = ["| recommender | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, values in evaluation.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{values.get(m, float('nan')):.4f}" for m in metrics)
            + " |"
        )
    return "\n".join(lines)
