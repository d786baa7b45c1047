"""Warehouse group: the dbt project that cleans, validates, deduplicates and standardizes.

dbt models become assets, dbt tests become asset checks (a failing test fails the check
loudly in the UI). Row counts are read from DuckDB once dbt has released the file lock.
"""

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from personalization_assets import engine as engines
from personalization_assets import paths
from personalization_assets.defs.warehouse.project import dbt_project, dbt_vars
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseDbtResource,
    WarehouseResource,
)
from personalization_assets.defs.warehouse.summary import quarantine_by_reason, table_row_counts

GROUP = "warehouse"
OWNERS = ["team:data-engineering"]
# A run tagged with this (the nightly rebuild) rebuilds the incremental models from scratch.
FULL_REFRESH_TAG = "personalization/dbt_full_refresh"


class WarehouseTranslator(DagsterDbtTranslator):
    """dbt models are keyed and grouped by domain: `features/…` for models/features, else `warehouse/…`."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([self.get_group_name(dbt_resource_props), dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return "features" if "features" in fqn[1:-1] else GROUP

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str]:
        return OWNERS


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=WarehouseTranslator(),
    pool=WAREHOUSE_POOL,
)
def warehouse_dbt_assets(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
) -> Iterator[Any]:
    """Build (run + test) the selected dbt models against the project's DuckDB file.

    The event models are incremental by landing day (only days reloaded since the last build are
    re-processed); runs tagged `personalization/dbt_full_refresh=true` rebuild them from scratch.
    """
    os.environ[paths.DUCKDB_PATH_ENV] = str(warehouse.path)
    args = ["build", "--vars", json.dumps(dbt_vars(project_config.path))]
    if context.run.tags.get(FULL_REFRESH_TAG) == "true":
        args.append("--full-refresh")
    events = list(dbt.cli(args, context=context).stream())
    if isinstance(dbt, WarehouseDbtResource) and dbt.engine_name == "spark":
        # Spark built the tables; the Python assets and the serving snapshot read DuckDB.
        with warehouse.connect() as con:
            engines.import_spark_tables(
                con, column_types=engines.contract_column_types(dbt_project.manifest_path)
            )
    with warehouse.connect(read_only=True) as con:
        counts = table_row_counts(con)
        quarantine = quarantine_by_reason(con)
    for event in events:
        if isinstance(event, dg.Output):
            name = context.asset_key_for_output(event.output_name).path[-1]
            extra: dict[str, Any] = {}
            relation = _relation(event.metadata, name)
            if relation in counts:
                extra["dagster/row_count"] = counts[relation]
            if name == "quarantined_rows" and quarantine:
                extra["rows_by_reason"] = dg.MetadataValue.md(_reason_table(quarantine))
            yield event.with_metadata({**event.metadata, **extra})
        else:
            yield event


def _relation(metadata: Mapping[str, Any], name: str) -> str:
    """`schema.table` of a dbt node from its relation metadata (seeds live in `reference`)."""
    identifier = metadata.get("dagster/table_name") or metadata.get("dagster/relation_identifier")
    text = getattr(identifier, "value", identifier)
    if isinstance(text, str) and text.count(".") >= 1:
        return ".".join(text.split(".")[-2:])
    return f"main.{name}"


def _reason_table(rows: list[tuple[str, str, int]]) -> str:
    lines = ["| source | reason | rows |", "|---|---|---:|"]
    lines += [f"| {source} | {reason} | {count} |" for source, reason, count in rows]
    return "\n".join(lines)
