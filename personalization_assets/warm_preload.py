"""Imported once by the warm run-worker server (`run_launcher.WarmRunLauncher`): loads the code
location so that every forked run worker starts with Dagster, dbt, pandas, DuckDB and all asset
modules already imported. Importing it has no other effect (nothing is written or started)."""

from personalization_assets.definitions import defs

defs()
