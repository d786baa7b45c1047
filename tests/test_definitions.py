"""The code location loads, and the UI gets descriptions, groups, owners and dbt checks."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from personalization_assets import paths
from personalization_assets.definitions import defs


def test_definitions_load_with_every_asset_described_grouped_and_owned():
    graph = defs().resolve_asset_graph()
    materializable = [node for node in graph.asset_nodes if node.is_materializable]
    assert materializable
    for node in materializable:
        assert node.description, f"{node.key.to_user_string()} has no description"
        assert node.group_name and node.group_name != "default", node.key.to_user_string()
        assert node.owners, f"{node.key.to_user_string()} has no owner"
    groups = {node.group_name for node in materializable}
    assert {"ingest", "warehouse", "features", "segments"} <= groups


def test_dbt_tests_become_asset_checks_including_reconciliation():
    checks = {key.name for key in defs().resolve_asset_graph().asset_check_keys}
    assert "assert_ingest_reconciles" in checks
    assert any(name.startswith("unique_fct_events_event_id") for name in checks)


def test_jobs_are_selections_over_the_graph_and_run_in_process():
    job = defs().resolve_job_def("full_pipeline")
    assert job.executor_def is dg.in_process_executor


def test_dagster_definitions_validate_passes_on_the_workspace():
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=paths.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
