"""Imported once by the warm run-worker server (`run_launcher.WarmRunLauncher`): loads the code
location so that every forked run worker starts with Dagster, dbt, pandas, DuckDB and all asset
modules already imported. Importing it has no other effect (nothing is written or started).

XGBoost and scikit-learn are imported lazily by the model modules (a code location load does not
need them), so they are imported here: otherwise every sensor run that rescores would pay for
the import (~1.5 s). Importing starts no OpenMP threads, so forking afterwards is safe.
"""

import sklearn.metrics  # noqa: F401
import xgboost  # noqa: F401

from personalization_assets.definitions import defs

defs()
