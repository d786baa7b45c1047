"""Daily partitions of the event layer: one partition per landing folder `events/date=YYYY-MM-DD`."""

import dagster as dg

from personalization_assets import paths
from personalization_assets.settings import load_pipeline_settings

FRESHNESS = load_pipeline_settings(paths.config_dir()).freshness

landing_day_partitions = dg.DailyPartitionsDefinition(
    start_date=FRESHNESS.partitions_start_date,
    end_offset=1,  # today's folder is a valid partition while files are still arriving
)
