"""The dbt project behind the warehouse, and how its manifest is prepared.

We use `@dbt_assets` + `DbtProject` (the Pythonic integration) rather than the
`DbtProjectComponent`: we need a custom translator (raw sources mapped to the ingest assets),
post-build metadata read from DuckDB after dbt releases the file lock, and, later, partition
vars per run. The manifest is prepared by `make` (`dbt parse`), by the test session and by
`prepare_manifest()`; under `dagster dev` it is refreshed on reload when stale, with the
settings the builds use (so they reuse dbt's partial parse).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject
from dagster_dbt.dbt_project import using_dagster_dev

from personalization_assets import engine as engines
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


def parse_settings() -> dict[str, str]:
    """What a build's partial parse must have been made with: vars, target, warehouse path.

    dbt reuses `partial_parse.msgpack` only when the `--vars`, the `--target` and the profile's
    connection settings (the DuckDB path and memory limit) equal those of the parse that wrote it.
    """
    return {
        "vars": json.dumps(dbt_vars()),
        "target": engines.dbt_target(),
        "duckdb_path": str(paths.duckdb_path()),
        "duckdb_memory_limit": paths.duckdb_memory_limit(),
    }


def prepare_manifest(force: bool = False) -> Path:
    """Run `dbt parse` when the manifest is missing, older than any dbt source file, or was
    parsed with other settings than the builds use (`parse_settings`).

    Parsing with the builds' settings lets every build reuse the partial parse instead of
    re-parsing the project (about 4 s per run here).
    """
    manifest = dbt_project.manifest_path
    settings = parse_settings()
    stamp = manifest.parent / "prepared_with.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    # `dagster dev` loads the definitions in several processes at once: one parses, the
    # others wait and then find the manifest fresh.
    with open(manifest.parent / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or _stale(manifest) or _read_json(stamp) != settings:
            _parse(settings)
            stamp.write_text(json.dumps(settings))
    return manifest


def _parse(settings: dict[str, str]) -> None:
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
            settings["vars"],
            "--target",
            settings["target"],
        ],
        check=True,
        cwd=paths.DBT_PROJECT_DIR,
        env={
            **os.environ,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            paths.DUCKDB_PATH_ENV: settings["duckdb_path"],
            paths.DUCKDB_MEMORY_LIMIT_ENV: settings["duckdb_memory_limit"],
        },
    )


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


# Instead of `dbt_project.prepare_if_dev()`: under `dagster dev` that runs a bare `dbt parse` on
# every code location load, without our `--vars` and `--target` and with the profile's default
# warehouse path, so its partial parse never matched a build ("Unable to do partial parsing
# because config vars, config profile, or config target have changed") and every run re-parsed.
if using_dagster_dev():
    prepare_manifest()
