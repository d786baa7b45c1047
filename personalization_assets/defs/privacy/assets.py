"""Privacy group: erasure of customers (job `erase_customers`) and retention of raw events."""

import datetime as dt

import dagster as dg

from personalization_assets import paths
from personalization_assets.defs.privacy import erasure, pseudonym, retention
from personalization_assets.defs.privacy.config import load_privacy_config
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    LandingZoneResource,
    ProjectConfigResource,
    WarehouseResource,
)

GROUP = "privacy"
OWNERS = ["team:data-engineering"]
RETENTION_KEY = dg.AssetKey(["privacy", "event_retention"])


class EraseCustomersConfig(dg.Config):
    """Which customers to erase, and who asked (for the erasure log)."""

    customer_ids: list[str]
    requested_by: str = ""


@dg.op(pool=WAREHOUSE_POOL, tags={"kind": "privacy"})
def erase_customers_op(
    context: dg.OpExecutionContext,
    config: EraseCustomersConfig,
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
) -> dg.Output[dict]:
    """Remove the customers from landing files, warehouse, models and outputs; log by hash only."""
    if pseudonym.using_dev_key():
        context.log.warning(
            f"{pseudonym.KEY_ENV} is not set: the tombstone uses the public development key"
        )
    places = erasure.Places(
        landing_dir=landing_zone.path,
        output_dir=paths.output_dir(),
        models_dir=paths.models_dir(),
        warehouse_path=warehouse.path,
    )
    with warehouse.connect() as con:
        report = erasure.erase_customers(
            con,
            config.customer_ids,
            places,
            requested_by=config.requested_by or f"dagster run {context.run_id}",
        )
    for error in report.errors:
        context.log.error(f"erasure could not clean {error}")
    counts = report.by_location()
    context.log.info(
        f"erasure {report.request_id}: {len(report.customers)} customer(s), "
        f"{sum(counts.values())} rows/lines/files removed in {len(counts)} location(s)"
    )
    table = ["| location | removed |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in counts.items()]
    if report.errors:
        raise dg.Failure(
            f"erasure {report.request_id} incomplete: {len(report.errors)} location(s) could not "
            "be cleaned (see the errors above); re-run the same request once they are free",
            metadata={"removed": dg.MetadataValue.md("\n".join(table))},
        )
    return dg.Output(
        {"request_id": report.request_id, "removed": counts},
        metadata={
            "request_id": report.request_id,
            "customers": len(report.customers),
            "customer_hashes": ", ".join(c.hash[:12] for c in report.customers),
            "removed": dg.MetadataValue.md("\n".join(table)),
            "errors": len(report.errors),
        },
    )


@dg.job(
    name="erase_customers",
    description="Erase customers (run config `customer_ids`) from landing files, warehouse tables, "
    "model state and rendered payloads; record hashes in `privacy.erased_customers` so no later "
    "run brings them back, and counts in `privacy.erasure_log`.",
    executor_def=dg.in_process_executor,
)
def erase_customers_job():
    erase_customers_op()


class RetentionConfig(dg.Config):
    """`today` for the cutoff (ISO date); empty means the current UTC date."""

    today: str = ""


@dg.asset(
    key=RETENTION_KEY,
    deps=[["landing", "events"]],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "file"},
    pool=WAREHOUSE_POOL,
)
def event_retention(
    context: dg.AssetExecutionContext,
    config: RetentionConfig,
    warehouse: WarehouseResource,
    landing_zone: LandingZoneResource,
    project_config: ProjectConfigResource,
) -> dg.MaterializeResult:
    """Purge landing event files and raw event lines older than `privacy.retention_days`.

    Personal event data is kept no longer than the configured window (README "Privacy").
    """
    settings = load_privacy_config(project_config.path / "privacy.yaml")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    if config.today:
        now = dt.datetime.combine(dt.date.fromisoformat(config.today), dt.time())
    with warehouse.connect() as con:
        result = retention.purge_expired_events(
            con, landing_zone.path, settings.retention_days, now
        )
    if result.purged_days:
        context.log.info(
            f"retention purged {len(result.purged_days)} landing day(s) before {result.cutoff}: "
            f"{len(result.files_deleted)} file(s), {result.raw_lines_deleted} raw line(s)"
        )
    return dg.MaterializeResult(
        metadata={
            "retention_days": settings.retention_days or "unlimited",
            "cutoff": str(result.cutoff) if result.cutoff else "none",
            "purged_days": len(result.purged_days),
            "files_deleted": len(result.files_deleted),
            "raw_lines_deleted": result.raw_lines_deleted,
        }
    )
