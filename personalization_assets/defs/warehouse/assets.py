"""Warehouse group: the dbt project that cleans, validates, deduplicates and standardizes.

dbt models become assets, dbt tests become asset checks (a failing test fails the check
loudly in the UI). On DuckDB each built table reports its row count from a dbt post-hook in
dbt's log stream, so materializations are recorded while dbt still runs; on Spark the counts
are read from DuckDB after the tables are imported.
"""

import json
import os
from collections.abc import Iterator, Mapping, Sequence
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
# Log lines of the post-hooks in dbt_project/macros/dagster_metadata.sql.
HOOK_PREFIX = "dagster_metadata "


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
    invocation = dbt.cli(args, context=context)
    if isinstance(dbt, WarehouseDbtResource) and dbt.engine_name == "spark":
        events = list(invocation.stream())
        # Spark built the tables; the Python assets and the serving snapshot read DuckDB.
        with warehouse.connect() as con:
            engines.import_spark_tables(
                con, column_types=engines.contract_column_types(dbt_project.manifest_path)
            )
        yield from _with_warehouse_metadata(context, warehouse, events)
        return
    # DuckDB: every event is passed on as dbt reports it (its event log writes overlap the
    # build), with the row counts the dbt post-hooks logged (macros/dagster_metadata.sql).
    reported: dict[str, dict[str, Any]] = {}
    unreported = []
    for raw in invocation.stream_raw_events():
        node, metadata = _hook_metadata(raw.raw_event)
        if node:
            reported.setdefault(node, {}).update(metadata)
            continue
        for event in raw.to_default_asset_events(
            manifest=invocation.manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            context=context,
            target_path=invocation.target_path,
            project=invocation.project,
        ):
            if not isinstance(event, dg.Output):
                yield event
                continue
            node = _value(event.metadata.get("unique_id"))
            node_metadata = reported.get(node)
            if node_metadata is None and _materialized(invocation.manifest, node) != "view":
                unreported.append(event)  # a hook that did not report: counted below
            else:
                yield event.with_metadata({**event.metadata, **(node_metadata or {})})
    yield from _with_warehouse_metadata(context, warehouse, unreported)


def _hook_metadata(raw_event: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(node unique id, metadata) of a `dagster_metadata` log line from a post-hook."""
    message = raw_event.get("info", {}).get("msg", "")
    if not message.startswith(HOOK_PREFIX):
        return None, {}
    node = raw_event.get("data", {}).get("node_info", {}).get("unique_id")
    reported = json.loads(message.removeprefix(HOOK_PREFIX))
    metadata: dict[str, Any] = {}
    if "row_count" in reported:
        metadata["dagster/row_count"] = reported["row_count"]
    if reported.get("rows_by") == ["source", "reason"] and reported["rows"]:
        metadata["rows_by_reason"] = dg.MetadataValue.md(_reason_table(reported["rows"]))
    return node, metadata


def _materialized(manifest: Mapping[str, Any], node: Any) -> str | None:
    props = manifest.get("nodes", {}).get(node) or {}
    return props.get("config", {}).get("materialized")


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def _with_warehouse_metadata(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, events: list[Any]
) -> Iterator[Any]:
    """The events with row counts (and quarantine reasons) read from DuckDB after the build."""
    if not any(isinstance(event, dg.Output) for event in events):
        yield from events
        return
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


def _reason_table(rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| source | reason | rows |", "|---|---|---:|"]
    lines += [f"| {source} | {reason} | {count} |" for source, reason, count in rows]
    return "\n".join(lines)
