"""Jobs: named selections over the asset graph.

They run in-process: the graph's steps are short and all write the same DuckDB file, so a
process per step (about 2.5 s each here) would cost more than the work and buy no parallelism
under the single-writer lock.
"""

from __future__ import annotations

import dagster as dg

full_pipeline_job = dg.define_asset_job(
    name="full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Everything: landing files → raw tables → dbt warehouse (+ checks) → downstream assets.",
    executor_def=dg.in_process_executor,
)

warehouse_job = dg.define_asset_job(
    name="ingest_and_clean",
    selection=dg.AssetSelection.groups("ingest", "warehouse"),
    description="Load the landing zone and rebuild the cleaned warehouse (with dbt tests).",
    executor_def=dg.in_process_executor,
)
