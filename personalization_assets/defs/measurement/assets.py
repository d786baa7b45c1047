"""Measurement group: per campaign × variant results with the right statistics."""

import dagster as dg
import numpy as np

from personalization_assets.defs.measurement import attribution, stats
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseResource,
)
from personalization_assets.settings import load_pipeline_settings

KEY = dg.AssetKey(["measurement", "campaign_results"])


@dg.asset(
    key=KEY,
    deps=[dg.AssetKey(["warehouse", "fct_events"]), dg.AssetKey(["warehouse", "fct_orders"])],
    group_name="measurement",
    owners=["team:marketing-analytics"],
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "sample_ratio_mismatch",
            asset=KEY,
            description="Fails when a campaign's variant counts are off their expected (equal) split.",
        )
    ],
)
def campaign_results(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Sends, opens, clicks, conversions and revenue per campaign and variant, with lift vs control.

    Opens/clicks attributed to sends (deduplicated, not before the send, bot bursts excluded),
    conversions within the attribution window; z-tests for rates, Welch for revenue, Holm across
    variants, a power note, and a sample-ratio-mismatch check.
    """
    settings = load_pipeline_settings(project_config.path).measurement
    with warehouse.connect() as con:
        outcomes, excluded = attribution.recipient_outcomes(
            con,
            window_days=settings.attribution_window_days,
            max_clicks_per_minute=settings.max_clicks_per_minute,
        )
        results, mismatches = _analyze(outcomes, settings)
        con.execute("create schema if not exists measurement")
        if results.empty:  # no A/B campaign with sends yet: an empty table, not an error
            con.execute(
                "create or replace table measurement.campaign_results "
                "(campaign_id varchar, variant varchar, recipients bigint, sends bigint)"
            )
        else:
            con.register("_results", results)
            con.execute(
                "create or replace table measurement.campaign_results as select * from _results"
            )
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(results),
            "campaigns": int(results["campaign_id"].nunique()) if len(results) else 0,
            "latest_campaigns": dg.MetadataValue.md(_table(results)),
            "conversion_rate_chart": dg.MetadataValue.md(_chart(results)),
            **{k: v for k, v in excluded.items()},
        }
    )
    yield dg.AssetCheckResult(
        check_name="sample_ratio_mismatch",
        passed=not mismatches,
        metadata={"campaigns_with_mismatch": ", ".join(mismatches) or "none"},
    )


def _analyze(outcomes, settings):
    import pandas as pd

    frames, mismatches = [], []
    for campaign_id, group in outcomes.groupby("campaign_id", sort=True):
        variants = sorted(group["variant"].unique())
        if settings.control_variant not in variants or len(variants) < 2:
            continue
        weights = {v: 1.0 for v in variants}
        result = stats.analyze_variants(
            group,
            variant_column="variant",
            control=settings.control_variant,
            expected_weights=weights,
            srm_alpha=settings.srm_alpha,
        )
        result.insert(0, "campaign_id", campaign_id)
        if bool(result["srm_mismatch"].fillna(False).any()):
            mismatches.append(str(campaign_id))
        frames.append(result)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), mismatches


def _table(results) -> str:
    if results.empty:
        return "no A/B campaigns with sends yet"
    recent = results[results["campaign_id"].isin(sorted(results["campaign_id"].unique())[-4:])]
    lines = [
        "| campaign | variant | sends | open rate | CTR | conv. rate | rev/recipient | conv. lift | p (Holm) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in recent.itertuples(index=False):
        lift = _fmt(getattr(row, "conversion_rate_lift", np.nan))
        p_adjusted = _fmt(getattr(row, "conversion_rate_p_adjusted", np.nan))
        lines.append(
            f"| {row.campaign_id} | {row.variant} | {row.sends} | {row.open_rate:.3f} | {row.ctr:.3f} | "
            f"{row.conversion_rate:.4f} | {row.revenue_per_recipient:.2f} | {lift} | {p_adjusted} |"
        )
    return "\n".join(lines)


def _chart(results) -> str:
    if results.empty:
        return "no data"
    top = results["conversion_rate"].max() or 1.0
    lines = ["```"]
    for row in results.tail(12).itertuples(index=False):
        bar = "█" * int(round(30 * row.conversion_rate / top))
        lines.append(
            f"{row.campaign_id[-12:]:>12} {row.variant:<3} {bar} {row.conversion_rate:.4f}"
        )
    return "\n".join(lines + ["```"])


def _fmt(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"
