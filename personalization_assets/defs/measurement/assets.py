"""Measurement group: per campaign × variant results with the right statistics."""

import dagster as dg
import numpy as np
import pandas as pd

from personalization_assets.defs.measurement import attribution, stats
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseResource,
)
from personalization_assets.settings import load_pipeline_settings

KEY = dg.AssetKey(["measurement", "campaign_results"])
HOLDOUT = attribution.HOLDOUT
VS_CONTROL, VS_HOLDOUT = "variant_vs_control", "incremental_vs_holdout"
# Only these are comparable with a holdout, which receives no email (so no opens or clicks).
HOLDOUT_METRICS = ("conversions", "revenue")


@dg.asset(
    key=KEY,
    deps=[
        dg.AssetKey(["warehouse", "fct_events"]),
        dg.AssetKey(["warehouse", "fct_orders"]),
        dg.AssetKey(["warehouse", "stg_experiments__assignments"]),
        dg.AssetKey(["campaigns", "campaign_decisions"]),
    ],
    group_name="measurement",
    owners=["team:marketing-analytics"],
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "sample_ratio_mismatch",
            asset=KEY,
            description="Fails when a campaign's arm counts are off their planned split.",
        )
    ],
)
def campaign_results(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Per campaign and variant: sends, opens, clicks, conversions, revenue; lift vs control and
    incremental lift vs the holdout, with intervals and tests.

    Variant vs control: responses attributed to sends (deduplicated, not before the send, bot
    bursts excluded), conversions within the window after the first open/click. Variant vs
    holdout: intent-to-treat over the assignment record, conversions and revenue within the
    window after assignment. z-tests for rates, Welch for revenue, Holm across variants, a power
    note, and a sample-ratio-mismatch check.
    """
    settings = load_pipeline_settings(project_config.path).measurement
    with warehouse.connect() as con:
        outcomes, excluded = attribution.recipient_outcomes(
            con,
            window_days=settings.attribution_window_days,
            max_clicks_per_minute=settings.max_clicks_per_minute,
        )
        assigned, assignment_counts = attribution.assignment_outcomes(
            con,
            window_days=settings.attribution_window_days,
            max_clicks_per_minute=settings.max_clicks_per_minute,
        )
        shares = planned_shares(assigned)
        vs_control, mismatches = _analyze(outcomes, settings, shares)
        vs_holdout, holdout_mismatches = _analyze_holdout(assigned, settings)
        frames = [f for f in (vs_control, vs_holdout) if not f.empty]
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        mismatches = sorted(set(mismatches) | set(holdout_mismatches))
        con.execute("create schema if not exists measurement")
        if results.empty:  # no A/B campaign with sends yet: an empty table, not an error
            con.execute(
                "create or replace table measurement.campaign_results "
                "(campaign_id varchar, comparison varchar, baseline varchar, variant varchar, "
                "recipients bigint, sends bigint)"
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
            "latest_campaigns": dg.MetadataValue.md(_table(vs_control)),
            "incremental_lift_vs_holdout": dg.MetadataValue.md(_holdout_table(vs_holdout)),
            "conversion_rate_chart": dg.MetadataValue.md(_chart(vs_control)),
            "assignments_analyzed": int(assigned["window_complete"].sum()) if len(assigned) else 0,
            **excluded,
            **assignment_counts,
        }
    )
    yield dg.AssetCheckResult(
        check_name="sample_ratio_mismatch",
        passed=not mismatches,
        metadata={"campaigns_with_mismatch": ", ".join(mismatches) or "none"},
    )


def planned_shares(assigned: pd.DataFrame) -> dict[str, dict[str, float]]:
    """campaign -> arm -> planned share, for campaigns whose every arm states one."""
    if assigned.empty:
        return {}
    known = assigned.groupby("campaign_id")["planned_share"].apply(lambda s: s.notna().all())
    rows = assigned[assigned["campaign_id"].isin(known[known].index)]
    shares = rows.groupby(["campaign_id", "variant"])["planned_share"].first()
    out: dict[str, dict[str, float]] = {}
    for (campaign, arm), share in shares.items():
        out.setdefault(str(campaign), {})[str(arm)] = float(share)
    return out


def _analyze(outcomes, settings, shares: dict[str, dict[str, float]] | None = None):
    """Every variant vs the control variant, on sends (weights: planned shares, else equal)."""
    frames, mismatches = [], []
    shares = shares or {}
    for campaign_id, group in outcomes.groupby("campaign_id", sort=True):
        variants = sorted(group["variant"].unique())
        if settings.control_variant not in variants or len(variants) < 2:
            continue
        planned = shares.get(str(campaign_id), {})
        weights = {v: planned.get(v, 1.0) if planned else 1.0 for v in variants}
        result = stats.analyze_variants(
            group,
            variant_column="variant",
            control=settings.control_variant,
            expected_weights=weights,
            srm_alpha=settings.srm_alpha,
        )
        result.insert(0, "campaign_id", campaign_id)
        result.insert(1, "comparison", VS_CONTROL)
        result.insert(2, "baseline", settings.control_variant)
        if bool(result["srm_mismatch"].fillna(False).any()):
            mismatches.append(str(campaign_id))
        frames.append(result)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), mismatches


def _analyze_holdout(assigned, settings):
    """Every variant vs the holdout: intent-to-treat conversions and revenue per recipient.

    Only assignments whose window has closed are compared. The split is checked against the
    planned shares when every arm states one; otherwise no split check (a holdout's share is a
    decision, not an assumption).
    """
    frames, mismatches = [], []
    if assigned.empty:
        return pd.DataFrame(), mismatches
    complete = assigned[assigned["window_complete"].astype(bool)]
    shares = planned_shares(complete)
    for campaign_id, group in complete.groupby("campaign_id", sort=True):
        arms = set(group["variant"].unique())
        if HOLDOUT not in arms or len(arms) < 2:
            continue
        planned = shares.get(str(campaign_id))
        result = stats.analyze_variants(
            group,
            variant_column="variant",
            control=HOLDOUT,
            metrics=HOLDOUT_METRICS,
            expected_weights=planned,
            srm_alpha=settings.srm_alpha,
        )
        result.insert(0, "campaign_id", campaign_id)
        result.insert(1, "comparison", VS_HOLDOUT)
        result.insert(2, "baseline", HOLDOUT)
        if planned and bool(result["srm_mismatch"].fillna(False).any()):
            mismatches.append(str(campaign_id))
        frames.append(result)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), mismatches


def _recent(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["campaign_id"].isin(sorted(results["campaign_id"].unique())[-4:])]


def _table(results) -> str:
    if results.empty:
        return "no A/B campaigns with sends yet"
    lines = [
        "| campaign | variant | sends | open rate | CTR | conv. rate | rev/recipient | conv. lift | p (Holm) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _recent(results).itertuples(index=False):
        lift = _fmt(getattr(row, "conversion_rate_lift", np.nan))
        p_adjusted = _fmt(getattr(row, "conversion_rate_p_adjusted", np.nan))
        lines.append(
            f"| {row.campaign_id} | {row.variant} | {row.sends} | {row.open_rate:.3f} | {row.ctr:.3f} | "
            f"{row.conversion_rate:.4f} | {row.revenue_per_recipient:.2f} | {lift} | {p_adjusted} |"
        )
    return "\n".join(lines)


def _holdout_table(results) -> str:
    if results.empty:
        return "no campaign with a holdout and a closed attribution window yet"
    lines = [
        "| campaign | arm | recipients | conv. rate | Δ conv. [95% CI] | p (Holm) "
        "| rev/recipient | Δ rev [95% CI] | p (Holm) |",
        "|---|---|---:|---:|---|---:|---:|---|---:|",
    ]
    for row in _recent(results).itertuples(index=False):
        conv = _interval(
            row.conversion_rate_diff,
            row.conversion_rate_diff_ci_low,
            row.conversion_rate_diff_ci_high,
        )
        rev = _interval(
            row.revenue_per_recipient_diff,
            row.revenue_per_recipient_diff_ci_low,
            row.revenue_per_recipient_diff_ci_high,
        )
        lines.append(
            f"| {row.campaign_id} | {row.variant} | {row.recipients} | {row.conversion_rate:.4f} | "
            f"{conv} | {_fmt(row.conversion_rate_p_adjusted)} | {row.revenue_per_recipient:.2f} | "
            f"{rev} | {_fmt(row.revenue_per_recipient_p_adjusted)} |"
        )
    return "\n".join(lines)


def _interval(value, low, high) -> str:
    if value != value:
        return "—"
    return f"{value:+.4f} [{low:+.4f}, {high:+.4f}]"


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
