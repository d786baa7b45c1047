"""Segments group: the standard RFM map and marketers' rule segments, with membership history."""

import dagster as dg

from personalization_assets import paths
from personalization_assets.defs.segments import membership
from personalization_assets.defs.segments.config import load_segment_files, manifest_feature_schema
from personalization_assets.defs.warehouse.project import dbt_project
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseResource,
)
from personalization_assets.settings import load_pipeline_settings

GROUP = "segments"
OWNERS = ["team:marketing-analytics"]
ASSET_KEY = dg.AssetKey(["segments", "customer_segments"])

# Validate the shipped config at load time: a bad rule breaks the code location with a message
# naming the segment, the rule and the field, before anyone can launch a run.
load_segment_files(paths.config_dir(), manifest_feature_schema(dbt_project.manifest_path))

CHECKS = [
    dg.AssetCheckSpec(
        "every_purchaser_has_one_rfm_segment",
        asset=ASSET_KEY,
        blocking=True,
        description="Each customer with a purchase in the lookback has exactly one RFM segment.",
    ),
    dg.AssetCheckSpec(
        "no_configured_segment_empty",
        asset=ASSET_KEY,
        description="Warns when a configured segment has fewer members than `min_size_warn`.",
    ),
    dg.AssetCheckSpec(
        "segment_sizes_stable",
        asset=ASSET_KEY,
        description="Warns when a segment's size changed by more than `size_change_warn_ratio` since the last run.",
    ),
]


@dg.asset(
    key=ASSET_KEY,
    deps=[
        dg.AssetKey(["features", "customer_features"]),
        dg.AssetKey(["warehouse", "fct_events"]),
        dg.AssetKey(["warehouse", "customer_keys"]),
        dg.AssetKey(["models", "customer_lifecycle"]),
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
    check_specs=CHECKS,
)
def customer_segments(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Segment membership per customer_key: one RFM segment per purchaser plus every matching rule segment.

    Rules live in `config/segments.yaml` and the RFM map in `config/rfm.yaml`; entries and exits
    since the previous run go to `segments.segment_history` so campaigns can target "entered At Risk".
    """
    settings = load_pipeline_settings(project_config.path).segments
    with warehouse.connect() as con:
        files = load_segment_files(project_config.path, membership.feature_schema(con))
        previous_sizes = _previous_sizes(context)
        summary = membership.build_membership(con, files.rfm, files.segments)
        distribution = membership.rfm_distribution(con)
        bad_rfm = membership.purchasers_without_one_rfm_segment(con)
    yield dg.MaterializeResult(metadata=_metadata(summary, distribution))
    yield dg.AssetCheckResult(
        check_name="every_purchaser_has_one_rfm_segment",
        passed=bad_rfm == 0,
        metadata={"purchasers_without_exactly_one": bad_rfm},
    )
    empty = [
        f"{kind}:{name}" for (kind, name), n in summary.sizes.items() if n < settings.min_size_warn
    ]
    yield dg.AssetCheckResult(
        check_name="no_configured_segment_empty",
        passed=not empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"empty_segments": ", ".join(empty) or "none"},
    )
    jumps = _size_jumps(previous_sizes, summary.sizes, settings.size_change_warn_ratio)
    yield dg.AssetCheckResult(
        check_name="segment_sizes_stable",
        passed=not jumps,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "changed_beyond_threshold": ", ".join(jumps) or "none",
            "threshold": settings.size_change_warn_ratio,
        },
    )


def _metadata(summary: membership.MembershipSummary, distribution) -> dict:
    sizes_md = ["| type | segment | customers | entered | exited |", "|---|---|---:|---:|---:|"]
    for (kind, name), n in summary.sizes.items():
        sizes_md.append(
            f"| {kind} | {name} | {n} | {summary.entered.get(name, 0)} | {summary.exited.get(name, 0)} |"
        )
    grid = {(r, f): n for r, f, n in distribution}
    heat = ["| R \\ F | 1 | 2 | 3 | 4 | 5 |", "|---|---:|---:|---:|---:|---:|"]
    heat += [
        f"| **{r}** | " + " | ".join(str(grid.get((r, f), 0)) for f in range(1, 6)) + " |"
        for r in range(5, 0, -1)
    ]
    metadata = {
        "as_of": str(summary.as_of),
        "previous_as_of": str(summary.previous_as_of) if summary.previous_as_of else "first run",
        "segment_sizes": dg.MetadataValue.md("\n".join(sizes_md)),
        "rfm_distribution": dg.MetadataValue.md(
            "Purchasers by recency (rows) × frequency (columns) score\n\n" + "\n".join(heat)
        ),
        "dagster/row_count": sum(summary.sizes.values()),
    }
    metadata.update({f"size/{name}": n for (_, name), n in summary.sizes.items()})
    return metadata


def _previous_sizes(context: dg.AssetExecutionContext) -> dict[str, int]:
    event = context.instance.get_latest_materialization_event(ASSET_KEY)
    if event is None or event.asset_materialization is None:
        return {}
    return {
        key.removeprefix("size/"): value.value
        for key, value in event.asset_materialization.metadata.items()
        if key.startswith("size/")
    }


def _size_jumps(
    previous: dict[str, int], current: dict[tuple[str, str], int], ratio: float
) -> list[str]:
    jumps = []
    for (_, name), n in current.items():
        before = previous.get(name)
        if before and abs(n - before) / before > ratio:
            jumps.append(f"{name}: {before} → {n}")
    return jumps
