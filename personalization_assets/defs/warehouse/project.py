"""The dbt project behind the warehouse, and how its manifest is prepared.

We use `@dbt_assets` + `DbtProject` (the Pythonic integration) rather than the
`DbtProjectComponent`: we need a custom translator (raw sources mapped to the ingest assets),
post-build metadata read from DuckDB after dbt releases the file lock, and, later, partition
vars per run. The manifest is prepared by `make` (`dbt parse`), by the test session and by
`prepare_manifest()`; under `dagster dev` `prepare_if_dev()` refreshes it on reload.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from personalization_assets import paths


def _put_environment_on_path() -> None:
    """dagster-dbt's own preparation (under `dagster dev` / `dg`) runs plain `dbt`: make sure the
    `dbt` installed beside this interpreter is found even when the venv is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    if (Path(bin_dir) / "dbt").exists() and bin_dir not in os.environ.get("PATH", "").split(
        os.pathsep
    ):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


_put_environment_on_path()
dbt_project = DbtProject(project_dir=paths.DBT_PROJECT_DIR, profiles_dir=paths.DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()


def dbt_executable() -> str:
    """`dbt` from this interpreter's environment (works without an activated venv)."""
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if not found:
        raise FileNotFoundError("dbt is not installed in this environment: run `make setup`")
    return found


def dbt_vars(config_dir: Path | None = None) -> dict:
    """The `--vars` every build passes (from config/models.yaml)."""
    from personalization_assets.defs.models.settings import load_model_settings

    settings = load_model_settings(config_dir or paths.config_dir())
    return {"label_horizons_days": settings.label_horizons()}


def prepare_manifest(force: bool = False) -> Path:
    """Run `dbt parse` when the manifest is missing or older than any dbt source file.

    It parses with the vars and warehouse path the builds use, so every build can reuse the
    partial parse (`partial_parse.msgpack`) instead of re-parsing the project (seconds per run).
    """
    manifest = dbt_project.manifest_path
    if force or _stale(manifest):
        subprocess.run(
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--project-dir",
                str(paths.DBT_PROJECT_DIR),
                "--profiles-dir",
                str(paths.DBT_PROJECT_DIR),
                "--vars",
                json.dumps(dbt_vars()),
            ],
            check=True,
            cwd=paths.DBT_PROJECT_DIR,
            env={
                **os.environ,
                "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
                paths.DUCKDB_PATH_ENV: str(paths.duckdb_path()),
            },
        )
    return manifest


def _stale(manifest: Path) -> bool:
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [
        p
        for folder in ("models", "macros", "seeds", "tests")
        for p in (paths.DBT_PROJECT_DIR / folder).rglob("*")
        if p.is_file()
    ]
    sources += [paths.DBT_PROJECT_DIR / "dbt_project.yml", paths.DBT_PROJECT_DIR / "profiles.yml"]
    sources += [paths.config_dir() / "models.yaml"]
    return any(p.stat().st_mtime > built for p in sources)
