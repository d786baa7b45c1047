"""Models group: send-time optimisation (each customer's best local hour) with a time-split check."""

import dagster as dg
import numpy as np
import pandas as pd

from personalization_assets.defs.models import send_time
from personalization_assets.defs.models.settings import load_model_settings
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseResource,
)
from personalization_assets.defs.warehouse.summary import table_exists

SEND_TIME_KEY = dg.AssetKey(["models", "send_time_preferences"])
SEND_TIME_TABLE = "models.send_time_preferences"
CHECK_NAME = "beats_global_hour"


@dg.asset(
    key=SEND_TIME_KEY,
    deps=[
        dg.AssetKey(["warehouse", "fct_events"]),
        dg.AssetKey(["warehouse", "dim_customers"]),
        dg.AssetKey(["warehouse", "customer_keys"]),
        dg.AssetKey(["segments", "customer_segments"]),
    ],
    group_name="models",
    owners=["team:data-science"],
    kinds={"numpy", "duckdb"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=SEND_TIME_KEY,
            description="Fitted before the last `holdout_days`, the per-customer best hour puts "
            "more of each customer's holdout opens and clicks within ±`hit_window_hours` than the "
            "single global best hour does (hit-rate lift > `min_lift`). Warns.",
        )
    ],
)
def send_time_preferences(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Each customer's best local send hour from their email opens and clicks, shrunk towards
    their RFM segment's and the global hour distribution when their history is thin.

    Campaigns can send "at the customer's best hour"; the time-split evaluation shows whether
    it beats one global send hour. Keyed by the pseudonymous customer_key.
    """
    params = load_model_settings(project_config.path).send_time
    with warehouse.connect() as con:
        events, customers = _read_inputs(con, params)
        events = send_time.local_hours(events, customers, params.default_zone)
        fitted = send_time.fit_send_times(events, customers, params)
        evaluation = send_time.evaluate_time_split(events, customers, params)
        frame = fitted.frame()
        _write(con, frame)
    context.log.info(
        f"send times for {len(frame)} customers; prior strength {fitted.prior_strength:.3g}; "
        f"hit-rate lift vs global hour {evaluation.hit_rate_lift:.3f}"
    )
    yield dg.MaterializeResult(metadata=_metadata(frame, fitted, evaluation, params))
    yield _check(evaluation, params)


def _read_inputs(con, params: send_time.SendTimeParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and customers keyed by customer_key (ids never enter the model's frames)."""
    types = sorted(params.event_weights)
    events = con.execute(
        "select customer_key, event_type, event_ts from "
        f"{pseudonym.keyed_relation_sql('main.fct_events')} "
        "where event_type in (select unnest(?))",
        [types],
    ).df()
    customers = con.execute(
        "select customer_key, timezone, country from "
        f"{pseudonym.keyed_relation_sql('main.dim_customers')} order by customer_key"
    ).df()
    if table_exists(con, "segments", "customer_segments"):
        segments = con.execute(
            "select customer_key, any_value(segment) as segment from segments.customer_segments "
            "where segment_type = 'rfm' group by customer_key"
        ).df()
        customers = customers.merge(segments, on="customer_key", how="left")
    return events, customers


def _write(con, frame: pd.DataFrame) -> None:
    con.execute("create schema if not exists models")
    con.register("_send_times", frame)
    con.execute(
        f"""create or replace table {SEND_TIME_TABLE} as
            select cast(customer_key as varchar) as customer_key,
                   cast(best_local_hour as integer) as best_local_hour,
                   cast(n_events as double) as n_events,
                   cast(source as varchar) as source,
                   cast(concentration as double) as concentration,
                   cast(hour_probabilities as double[]) as hour_probabilities
            from _send_times"""
    )
    con.unregister("_send_times")


def _md_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def _hour_chart(distribution: np.ndarray, best_hours: np.ndarray) -> str:
    share = np.bincount(best_hours, minlength=send_time.HOURS) / max(len(best_hours), 1)
    frame = pd.DataFrame(
        {
            "local hour": range(send_time.HOURS),
            "global open share": distribution.round(4),
            "customers with this best hour": share.round(4),
        }
    )
    return _md_table(frame)


def _metadata(frame, fitted, evaluation, params) -> dict:
    sources = frame["source"].value_counts().to_dict()
    return {
        "dagster/row_count": len(frame),
        "prior_strength": float(fitted.prior_strength),
        "prior_strength_setting": str(params.prior_strength),
        "global_best_hour": fitted.global_best_hour,
        "customers_by_source": dg.MetadataValue.json({k: int(v) for k, v in sources.items()}),
        "median_events_per_customer": float(frame["n_events"].median()) if len(frame) else 0.0,
        "evaluation": dg.MetadataValue.md(
            f"Fit before {evaluation.cutoff:%Y-%m-%d %H:%M} UTC, scored on "
            f"{evaluation.holdout_events} holdout events of {evaluation.customers} customers "
            f"(hit = within ±{params.hit_window_hours} h):\n\n" + _md_table(evaluation.table)
        ),
        "hit_rate_lift_vs_global_hour": float(evaluation.hit_rate_lift),
        "evaluation_customers": evaluation.customers,
        "hour_distribution": dg.MetadataValue.md(
            _hour_chart(fitted.global_distribution, frame["best_local_hour"].to_numpy())
        ),
        "preview": dg.MetadataValue.md(
            _md_table(frame.drop(columns="hour_probabilities").head(10))
        ),
    }


def _check(evaluation: send_time.SplitEvaluation, params) -> dg.AssetCheckResult:
    if evaluation.customers == 0:
        return dg.AssetCheckResult(
            check_name=CHECK_NAME,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"note": "no customer has opens or clicks both before and after the cutoff"},
        )
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=evaluation.beats_global(params.min_lift),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "model_hit_rate": evaluation.metric("model", "hit_rate"),
            "global_hour_hit_rate": evaluation.metric("global_hour", "hit_rate"),
            "segment_hit_rate": evaluation.metric("segment", "hit_rate"),
            "hit_rate_lift": float(evaluation.hit_rate_lift),
            "min_lift": params.min_lift,
            "model_log_likelihood": evaluation.metric("model", "mean_log_likelihood"),
            "global_log_likelihood": evaluation.metric("global_hour", "mean_log_likelihood"),
            "customers": evaluation.customers,
            "holdout_days": params.holdout_days,
        },
    )
