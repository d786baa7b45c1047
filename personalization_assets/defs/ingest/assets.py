"""Ingest group: the landing zone's files, copied verbatim into the warehouse's `raw` schema."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg

from personalization_assets import contract
from personalization_assets.defs.automation.partitions import landing_day_partitions
from personalization_assets.defs.ingest import landing
from personalization_assets.defs.ingest.order_imports import load_order_imports_config
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    LandingZoneResource,
    ProjectConfigResource,
    WarehouseResource,
)
from personalization_assets.settings import load_pipeline_settings

GROUP = "ingest"
OWNERS = ["team:data-engineering"]

landing_specs = [
    dg.AssetSpec(
        key=["landing", name],
        description=description,
        group_name=GROUP,
        owners=OWNERS,
        kinds={"file"},
    )
    for name, description in [
        (
            "events",
            "NDJSON event files in `events/date=YYYY-MM-DD/` (written by collectors/exporters).",
        ),
        ("crm_customers", "CRM customer export(s) `crm/*.csv`: demographics, birthday, consent."),
        ("catalog_products", "Catalog export(s) `catalog/*.csv`: category, price, stock."),
        ("order_exports", "Historic order exports `orders/*.csv` (e.g. UCI Online Retail II)."),
        (
            "experiment_assignments",
            "Experiment assignment export(s) `experiments/*.csv`: campaign, customer, variant "
            "or `holdout`, assigned_at (optional planned_share).",
        ),
    ]
]

# The assignment record of campaigns run outside the engine, `experiments/*.csv` (README "Measurement").
ASSIGNMENT_COLUMNS = ("campaign_id", "customer_id", "variant", "assigned_at", "planned_share")
REQUIRED_ASSIGNMENT_COLUMNS = ("campaign_id", "customer_id", "variant", "assigned_at")


def _metadata(result: landing.LoadResult) -> dict[str, dg.MetadataValue | int | str]:
    metadata: dict[str, dg.MetadataValue | int | str] = {
        "dagster/row_count": result.rows,
        "table": result.table,
        "files_loaded": len(result.files),
        "files": dg.MetadataValue.md("\n".join(f"- `{f}`" for f in result.files[:50]) or "none"),
    }
    if result.skipped_files:
        metadata["files_skipped"] = dg.MetadataValue.md(
            "Outside the landing contract, not loaded:\n"
            + "\n".join(f"- `{f}`" for f in result.skipped_files[:50])
        )
    if result.malformed_records:
        metadata["malformed_records"] = result.malformed_records
    if result.message:
        metadata["note"] = result.message
    if result.erased_rows:
        metadata["erased_customer_rows"] = result.erased_rows
    return metadata


def _log(context: dg.AssetExecutionContext, result: landing.LoadResult) -> None:
    if result.message:
        context.log.warning(result.message)
    if result.skipped_files:
        context.log.warning(
            f"{len(result.skipped_files)} file(s) outside the landing contract were not loaded: "
            f"{result.skipped_files[:5]}"
        )


RAW_EVENT_LINES = dg.AssetKey(["ingest", "raw_event_lines"])
RAW_EVENT_DAY_LOADS = dg.AssetKey(["ingest", "raw_event_day_loads"])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_EVENT_LINES,
            deps=[["landing", "events"], ["privacy", "event_retention"]],
            description="Every non-blank line of the landing event files, as text with its file "
            "and line number. Nothing is parsed or dropped here, so dbt can quarantine bad lines "
            "with a reason.",
            group_name=GROUP,
            owners=OWNERS,
            kinds={"duckdb"},
            partitions_def=landing_day_partitions,
        ),
        dg.AssetSpec(
            RAW_EVENT_DAY_LOADS,
            deps=[["landing", "events"], ["privacy", "event_retention"]],
            description="When each landing day was last replaced: the incremental dbt event models "
            "re-process exactly the days reloaded since they last ran.",
            group_name=GROUP,
            owners=OWNERS,
            kinds={"duckdb"},
            partitions_def=landing_day_partitions,
        ),
    ],
    pool=WAREHOUSE_POOL,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def raw_event_lines(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
    project_config: ProjectConfigResource,
) -> Iterator[dg.MaterializeResult]:
    """Load the event files of the run's landing days into `raw.event_lines`.

    One partition per landing folder `events/date=YYYY-MM-DD`; a run over a range replaces
    exactly those days (idempotent) and stamps them in `raw.event_day_loads`.
    """
    window = context.partition_key_range
    days = (dt.date.fromisoformat(window.start), dt.date.fromisoformat(window.end))
    batch_mb = load_pipeline_settings(project_config.path).ingest.load_batch_mb
    with warehouse.connect() as con:
        result = landing.load_event_lines(
            con, landing_zone.path, days=days, batch_bytes=batch_mb * 1024 * 1024
        )
    _log(context, result)
    span = f"{window.start} … {window.end}"
    yield dg.MaterializeResult(
        asset_key=RAW_EVENT_LINES, metadata={**_metadata(result), "landing_days": span}
    )
    yield dg.MaterializeResult(asset_key=RAW_EVENT_DAY_LOADS, metadata={"landing_days": span})


def _csv_export_asset(
    name: str,
    landing_key: str,
    folder: str,
    columns: tuple[str, ...],
    required: tuple[str, ...],
    description: str,
) -> dg.AssetsDefinition:
    """A raw table loaded verbatim from every `<folder>/*.csv` of the landing zone."""

    @dg.asset(
        key=["ingest", f"raw_{name}"],
        deps=[["landing", landing_key]],
        group_name=GROUP,
        owners=OWNERS,
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        description=description,
    )
    def _load(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        landing_zone: LandingZoneResource,
    ) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            result = landing.load_csv_export(
                con,
                landing_zone.path,
                folder=folder,
                table=name,
                columns=columns,
                required=required,
            )
        _log(context, result)
        return dg.MaterializeResult(metadata=_metadata(result))

    return _load


raw_customers = _csv_export_asset(
    "customers",
    "crm_customers",
    "crm",
    contract.CUSTOMER_COLUMNS,
    landing.REQUIRED_CUSTOMER_COLUMNS,
    "The CRM customer export(s), every record as text; malformed CSV records kept with the "
    "parser's error.\n\nA file missing a required column fails with a message naming the file "
    "and the column.",
)
raw_products = _csv_export_asset(
    "products",
    "catalog_products",
    "catalog",
    contract.PRODUCT_COLUMNS,
    landing.REQUIRED_PRODUCT_COLUMNS,
    "The catalog export(s), every record as text; malformed CSV records kept with the parser's "
    "error.\n\nA file missing a required column fails with a message naming the file and the column.",
)

raw_assignments = _csv_export_asset(
    "assignments",
    "experiment_assignments",
    "experiments",
    ASSIGNMENT_COLUMNS,
    REQUIRED_ASSIGNMENT_COLUMNS,
    "The experiment assignment export(s), every record as text; malformed CSV records kept with "
    "the parser's error.\n\nOptional source: with no files in `experiments/` the table is empty. "
    "A file missing a required column fails with a message naming the file and the column.",
)


@dg.asset(
    key=["ingest", "raw_order_lines"],
    deps=[["landing", "order_exports"]],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
)
def raw_order_lines(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
    project_config: ProjectConfigResource,
) -> dg.MaterializeResult:
    """Historic order exports renamed to canonical order-line columns by `config/order_imports.yaml`.

    Optional source: with no files in `orders/` the table is empty and the run goes on.
    """
    config = load_order_imports_config(project_config.path / "order_imports.yaml")
    with warehouse.connect() as con:
        result = landing.load_order_exports(con, landing_zone.path, config)
    _log(context, result)
    return dg.MaterializeResult(metadata=_metadata(result))
