"""The DuckDB warehouse as a Dagster resource.

DuckDB allows one writer process per file. Every step that writes the warehouse (the raw
loaders, dbt, the Python feature assets) runs in the `duckdb_writer` pool with a limit of one
(`dagster.yaml`), and jobs use the in-process executor, so two steps never hold the file at
once. Connections are opened per step and closed at its end.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource
from packaging import version

from personalization_assets import engine as engines
from personalization_assets import paths
from personalization_assets.defs.privacy import pseudonym

WAREHOUSE_POOL = "duckdb_writer"


class WarehouseResource(dg.ConfigurableResource):
    """Opens the project's DuckDB file (path from config, else PERSONALIZATION_DUCKDB_PATH)."""

    database: str = ""
    lock_timeout_seconds: float = 120.0

    @property
    def path(self) -> Path:
        return Path(self.database).resolve() if self.database else paths.duckdb_path()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection in UTC, closed on exit (releasing the file lock).

        The pseudonym key's HMAC pads are set as connection variables, so SQL can compute
        `customer_key` with `pseudonym.customer_key_sql` (the same value dbt's macro gives).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect_waiting_for_lock(read_only)
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"set memory_limit = '{paths.duckdb_memory_limit()}'")
        pseudonym.configure_duckdb(con)
        try:
            yield con
        finally:
            con.close()

    def _connect_waiting_for_lock(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Pools serialize our own writers; this waits out anything else holding the file."""
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.1
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


class LandingZoneResource(dg.ConfigurableResource):
    """The landing folder (config, else PERSONALIZATION_LANDING_DIR, else data/landing)."""

    root: str = ""

    @property
    def path(self) -> Path:
        return Path(self.root).resolve() if self.root else paths.landing_dir()


class ProjectConfigResource(dg.ConfigurableResource):
    """The folder of user-edited YAML (config, else PERSONALIZATION_CONFIG_DIR, else config/)."""

    directory: str = ""

    @property
    def path(self) -> Path:
        return Path(self.directory).resolve() if self.directory else paths.config_dir()


class WarehouseDbtResource(DbtCliResource):
    """dagster-dbt's `DbtCliResource` without two per-invocation costs we do not use.

    Before every `dbt` command the stock resource runs `dbt --version` in a subprocess and builds
    an in-process dbt adapter (used only by `fetch_row_counts` / `fetch_column_metadata`): about
    10 s per run here, more than the incremental build itself. We read row counts from DuckDB
    after dbt has released the lock instead, and take the version from the installed dbt-core
    (the same environment runs `dbt`). Pinned to dagster-dbt 0.29.x; tests run real builds
    through it.
    """

    @property
    def _cli_version(self) -> version.Version:
        from importlib.metadata import version as installed_version

        return version.parse(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        return None

    # The engine switch: "duckdb" or "spark"; empty means PERSONALIZATION_ENGINE, else duckdb.
    # It selects the profiles.yml target of the same name. On Spark every invocation first
    # exports DuckDB's raw.* tables as the Parquet the Spark sources read (engine.py).
    engine: str = ""

    @property
    def engine_name(self) -> str:
        return engines.engine(self.engine or None)

    def cli(self, args, **kwargs):
        name = self.engine_name
        if name == "spark":
            engines.prepare_spark_invocation(paths.duckdb_path())
        if not self.target:
            args = [*args, "--target", engines.dbt_target(name)]
        return super().cli(args, **kwargs)
