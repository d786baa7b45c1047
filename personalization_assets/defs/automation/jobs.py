"""Jobs: named selections over the asset graph, and how to run them over landing days.

They run in-process: the graph's steps are short and all write the same DuckDB file, so a
process per step (about 2.5 s each here) would cost more than the work and buy no parallelism
under the single-writer lock.
"""

import datetime as dt

import dagster as dg

from personalization_assets.defs.automation.partitions import landing_day_partitions

full_pipeline_job = dg.define_asset_job(
    name="full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Everything: landing files → raw tables → dbt warehouse (+ checks) → features, "
    "segments, models, campaigns. Run it over a range of landing days (a single-run backfill).",
    executor_def=dg.in_process_executor,
    partitions_def=landing_day_partitions,
)

# Retraining (training snapshots, labels, model fits, the lifecycle fit) is nightly work; fresh
# events only rescore.
NIGHTLY_ONLY = dg.AssetSelection.assets(
    ["models", "churn_model"],
    ["models", "purchase_model"],
    ["features", "customer_feature_snapshots"],
    ["features", "training_labels"],
    ["features", "feature_snapshot_dates"],
    ["models", "customer_lifecycle"],
    ["models", "send_time_preferences"],
)

event_refresh_job = dg.define_asset_job(
    name="event_refresh",
    # Only what new events change: CRM/catalog/order exports and the retrain are nightly work.
    selection=dg.AssetSelection.assets(
        ["ingest", "raw_event_lines"], ["ingest", "raw_event_day_loads"]
    ).downstream()
    - NIGHTLY_ONLY
    # Sending is the trigger schedule's work (every 15 minutes), not on the latency path.
    - dg.AssetSelection.groups("delivery"),
    description="What the landing sensor runs for new event files: the affected landing days "
    "(the incremental dbt models re-process only those), then everything downstream of the events "
    "except the nightly retrain.",
    executor_def=dg.in_process_executor,
    partitions_def=landing_day_partitions,
)

campaign_job = dg.define_asset_job(
    name="campaign_triggers",
    selection=dg.AssetSelection.groups("campaigns", "delivery", "serving"),
    description="Evaluate triggers, render payloads, advance journeys, read bounce feedback and send "
    "what is due, at the current clock (time passing matters: a cart becomes abandoned one hour "
    "after the add-to-cart, a journey's wait ends, with no new event), and refresh the serving "
    "snapshot the send-time API reads.",
    executor_def=dg.in_process_executor,
)


def range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    """Run tags that make a partitioned job cover the landing days first..last in one run."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
