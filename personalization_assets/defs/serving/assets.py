"""Serving group: the read-only snapshot the real-time edge (collector, send-time API) reads."""

import dagster as dg

from personalization_assets import paths
from personalization_assets.defs.campaigns.config import load_campaigns_config
from personalization_assets.defs.models import recommendation_runs
from personalization_assets.defs.models.settings import load_model_settings
from personalization_assets.defs.serving import export
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseResource,
)

GROUP = "serving"
OWNERS = ["team:crm-marketing"]


@dg.asset(
    key=["serving", "serving_snapshot"],
    deps=[
        dg.AssetKey(["campaigns", "email_payloads"]),
        dg.AssetKey(["campaigns", "campaign_decisions"]),
        dg.AssetKey(["models", "product_recommendations"]),
        dg.AssetKey(["segments", "customer_segments"]),
        dg.AssetKey(["features", "customer_features"]),
        dg.AssetKey(["warehouse", "customer_keys"]),
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
)
def serving_snapshot(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Consent, tokens, segments, latest decisions, recommendations and ALS factors, copied into a
    separate DuckDB file (atomically replaced) for the send-time API and the event collector.

    The edge answers in milliseconds and must never wait for (or hold) the warehouse's write lock.
    """
    settings = load_model_settings(project_config.path).recommendations
    state = recommendation_runs.load_state(paths.models_dir() / "recommendations")
    campaigns = load_campaigns_config(project_config.path / "campaigns.yaml")
    summary = export.export_snapshot(
        warehouse.path,
        export.snapshot_path(),
        als_state=state,
        als_settings=settings,
        campaign_names={c.id: c.name for c in campaigns.campaigns},
        lock_timeout_s=warehouse.lock_timeout_seconds,
    )
    rows = ["| table | rows |", "|---|---:|"] + [f"| {t} | {n} |" for t, n in summary.rows.items()]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(summary.path)),
            "snapshot_at": summary.snapshot_at.isoformat(),
            "tables": dg.MetadataValue.md("\n".join(rows)),
            "als": summary.als,
            "dagster/row_count": summary.rows.get("customers", 0),
        }
    )
