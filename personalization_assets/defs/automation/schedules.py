"""Schedules: the nightly full rebuild and retrain, and frequent trigger evaluation."""

import datetime as dt

import dagster as dg

from personalization_assets import paths
from personalization_assets.defs.automation.jobs import campaign_job, full_pipeline_job, range_tags
from personalization_assets.defs.ingest.landing import landing_days
from personalization_assets.defs.warehouse.assets import FULL_REFRESH_TAG


@dg.schedule(
    job=full_pipeline_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Nightly: reload every landing day, rebuild the incremental dbt models from scratch "
    "(--full-refresh), retrain and rescore.",
)
def nightly_full_rebuild(context: dg.ScheduleEvaluationContext):
    days = landing_days(paths.landing_dir())
    if not days:
        return dg.SkipReason(f"no event files under {paths.landing_dir()}")
    return dg.RunRequest(
        run_key=None, tags={**range_tags(days[0], days[-1]), FULL_REFRESH_TAG: "true"}
    )


@dg.schedule(
    job=campaign_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    description="Every 15 minutes: triggers, journeys and sending at the current clock (e.g. carts "
    "turning abandoned, journey waits ending).",
)
def trigger_evaluation(context: dg.ScheduleEvaluationContext):
    clock = context.scheduled_execution_time.astimezone(dt.UTC).replace(tzinfo=None)
    run_config = {"clock": clock.isoformat(), "send_date": clock.date().isoformat()}
    return dg.RunRequest(
        run_key=None,
        run_config={
            "ops": {
                "campaigns__campaign_decisions": {"config": run_config},
                "campaigns__email_payloads": {"config": run_config},
                "delivery__journey_progress": {"config": {"clock": clock.isoformat()}},
                "delivery__delivery_feedback": {"config": {"clock": clock.isoformat()}},
                "delivery__email_deliveries": {"config": {"clock": clock.isoformat()}},
            }
        },
    )
