"""Sensors: new event files in the landing zone trigger a refresh of the affected days."""

import datetime as dt
import hashlib

import dagster as dg

from personalization_assets import paths
from personalization_assets.defs.automation import landing_sensor
from personalization_assets.defs.automation.jobs import event_refresh_job, range_tags
from personalization_assets.defs.automation.partitions import FRESHNESS, landing_day_partitions

# New events refresh only the affected customers' recommendations (no ALS retrain).
INCREMENTAL_RECOMMENDATIONS = {
    "ops": {"models__product_recommendations": {"config": {"mode": "incremental"}}}
}


@dg.sensor(
    job=event_refresh_job,
    minimum_interval_seconds=FRESHNESS.sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches <landing>/events/date=*/ for new or re-delivered files and requests one "
    "run covering the affected landing days and everything downstream.",
)
def landing_event_files_sensor(context: dg.SensorEvaluationContext):
    """New files → one run over their landing days; the cursor (files seen) survives restarts."""
    first_day = landing_day_partitions.start.date()
    last_day = dt.date.fromisoformat(landing_day_partitions.get_last_partition_key())
    result = landing_sensor.scan(
        paths.landing_dir(),
        landing_sensor.load_cursor(context.cursor),
        first_day=first_day,
        last_day=last_day,
        max_files=FRESHNESS.max_files_per_run,
    )
    for relative in result.out_of_range:
        context.log.warning(
            f"{relative}: landing day outside the partitions {first_day}..{last_day}; skipped"
        )
    context.update_cursor(landing_sensor.dump_cursor(result.cursor))
    if not result.new_files:
        return dg.SkipReason("no new event files")
    run_key = hashlib.sha256("\n".join(sorted(result.new_files)).encode()).hexdigest()[:16]
    yield dg.RunRequest(
        run_key=run_key,
        run_config=INCREMENTAL_RECOMMENDATIONS,
        tags={
            **range_tags(result.days[0], result.days[-1]),
            "landing/files": str(len(result.new_files)),
        },
    )
