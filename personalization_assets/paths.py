"""Where the project keeps its files, and the environment variables that move them.

Every path a user may want to change is read from an environment variable with a default
inside the project folder, so `make demo` works on a fresh clone and a deployment points the
same code at its own landing zone and warehouse.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
CONFIG_DIR_ENV = "PERSONALIZATION_CONFIG_DIR"
LANDING_DIR_ENV = "PERSONALIZATION_LANDING_DIR"
DUCKDB_PATH_ENV = "PERSONALIZATION_DUCKDB_PATH"
DUCKDB_MEMORY_LIMIT_ENV = "PERSONALIZATION_DUCKDB_MEMORY_LIMIT"
OUTPUT_DIR_ENV = "PERSONALIZATION_OUTPUT_DIR"
MODELS_DIR_ENV = "PERSONALIZATION_MODELS_DIR"


def _from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def config_dir() -> Path:
    """YAML that users edit: segments, campaigns, order-import mappings, model parameters."""
    return _from_env(CONFIG_DIR_ENV, PROJECT_ROOT / "config")


def landing_dir() -> Path:
    """The landing zone: `events/date=YYYY-MM-DD/*.ndjson`, `crm/*.csv`, `catalog/*.csv`, `orders/*.csv`."""
    return _from_env(LANDING_DIR_ENV, PROJECT_ROOT / "data" / "landing")


def duckdb_path() -> Path:
    """The DuckDB warehouse file."""
    return _from_env(DUCKDB_PATH_ENV, PROJECT_ROOT / "data" / "warehouse.duckdb")


def duckdb_memory_limit() -> str:
    """DuckDB's memory limit for dbt and the Python assets (it spills to disk beyond it)."""
    value = os.environ.get(DUCKDB_MEMORY_LIMIT_ENV, "").strip() or "4GB"
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value, flags=re.IGNORECASE):
        raise ValueError(f"{DUCKDB_MEMORY_LIMIT_ENV}={value!r}: expected a size such as 4GB")
    return value


def output_dir() -> Path:
    """Files the graph writes for people and other systems (payload JSONL, previews)."""
    return _from_env(OUTPUT_DIR_ENV, PROJECT_ROOT / "data" / "output")


TEMPLATE_CACHE_DIR_ENV = "PERSONALIZATION_TEMPLATE_CACHE_DIR"


def template_cache_dir() -> Path:
    """Compiled email templates shared by run workers (safe to delete)."""
    return _from_env(TEMPLATE_CACHE_DIR_ENV, PROJECT_ROOT / "data" / "cache" / "templates")


def models_dir() -> Path:
    """Model artifacts (XGBoost JSON, ALS factors), one folder per model."""
    return _from_env(MODELS_DIR_ENV, PROJECT_ROOT / "data" / "models")
