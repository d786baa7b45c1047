"""Shared fixtures: a generated sample shop built once per session into a real DuckDB warehouse
by a real Dagster run (real dbt, real DuckDB), plus helpers for small hand-built landing zones."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from personalization_assets import paths
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.warehouse.project import prepare_manifest

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_RETAIL = (
    paths.PROJECT_ROOT.parent
    / "shared"
    / "data"
    / "online_retail_sample"
    / "online_retail_sample.csv"
)

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")


@dataclass
class BuiltWarehouse:
    """A landing zone, the warehouse built from it, and the Dagster run that built it."""

    root: Path
    landing: Path
    database: Path
    output: Path
    result: dg.ExecuteInProcessResult
    manifest: dict | None = None

    def query(self, sql: str, params: list | dict | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.database), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def df(self, sql: str):
        con = duckdb.connect(str(self.database), read_only=True)
        try:
            return con.execute(sql).df()
        finally:
            con.close()


@pytest.fixture(scope="session", autouse=True)
def dbt_manifest() -> Path:
    """The dbt manifest, prepared like `make` does (tests never depend on a manual `dbt parse`)."""
    return prepare_manifest()


def by_id(relation: str) -> str:
    """A pseudonymized analytics relation (keyed by customer_key) with `customer_id` added back
    through the restricted `customer_keys`, so tests can look customers up by id."""
    return pseudonym.reidentified_sql(relation)


def project_env(root: Path) -> dict[str, str]:
    """Environment that points every path of the project into `root`."""
    return {
        paths.LANDING_DIR_ENV: str(root / "landing"),
        paths.DUCKDB_PATH_ENV: str(root / "warehouse.duckdb"),
        paths.OUTPUT_DIR_ENV: str(root / "output"),
        paths.MODELS_DIR_ENV: str(root / "models"),
    }


def run_job(root: Path, job_name: str = "full_pipeline", **kwargs) -> dg.ExecuteInProcessResult:
    """Run a job of the real definitions in-process against the landing zone under `root`."""
    from personalization_assets.definitions import defs

    with pytest.MonkeyPatch.context() as mp:
        for key, value in project_env(root).items():
            mp.setenv(key, value)
        from personalization_assets.defs.automation.jobs import range_tags
        from personalization_assets.defs.ingest.landing import landing_days

        days = landing_days(root / "landing")
        kwargs.setdefault("tags", range_tags(days[0], days[-1]))
        kwargs.setdefault("instance", dg.DagsterInstance.ephemeral())
        job = defs().resolve_job_def(job_name)
        return job.execute_in_process(raise_on_error=False, **kwargs)


def upstream_of_decisions() -> list[dg.AssetKey]:
    """Everything campaign decisions read, without the model training (not needed there)."""
    from personalization_assets.definitions import defs

    selection = (
        dg.AssetSelection.assets(["segments", "customer_segments"]).upstream()
        | dg.AssetSelection.groups("ingest", "warehouse")
    ) - dg.AssetSelection.groups("models")
    return list(selection.resolve(defs().resolve_asset_graph()))


def failed_checks(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """check key → severity for every asset check that did not pass."""
    failed = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                failed[evaluation.asset_check_key.to_user_string()] = evaluation.severity.value
    return failed


@pytest.fixture(scope="session")
def sample_shop(tmp_path_factory) -> Iterator[BuiltWarehouse]:
    """A small generated shop (with injected bad input and an Online Retail II export) built once."""
    from personalization_assets.defs.ingest.sample_data import generate_sample_data

    root = tmp_path_factory.mktemp("sample_shop")
    landing = root / "landing"
    manifest = generate_sample_data(
        landing, customers=600, products=120, days=60, seed=7, bad_fraction=0.02
    )
    (landing / "orders").mkdir(parents=True, exist_ok=True)
    shutil.copy(
        FIXTURES / "online_retail_ii_small.csv", landing / "orders" / "online_retail_ii.csv"
    )
    result = run_job(root)
    yield BuiltWarehouse(
        root=root,
        landing=landing,
        database=root / "warehouse.duckdb",
        output=root / "output",
        result=result,
        manifest=manifest.to_dict(),
    )


def write_landing(
    root: Path, *, events: dict[str, list], customers: list[dict], products: list[dict]
) -> Path:
    """Write a hand-built landing zone: events keyed by `date=YYYY-MM-DD` folder (dicts or raw lines)."""
    import csv

    landing = root / "landing"
    for day, lines in events.items():
        folder = landing / "events" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
        (folder / f"events_{day.replace('-', '')}_0001.ndjson").write_text(text + "\n")
    for folder, name, rows in (
        ("crm", "customers.csv", customers),
        ("catalog", "products.csv", products),
    ):
        (landing / folder).mkdir(parents=True, exist_ok=True)
        with (landing / folder / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return landing
