"""Helper process for test_concurrency: one full-pipeline run over the given landing days."""

import datetime as dt
import sys

import dagster as dg

from personalization_assets.definitions import defs
from personalization_assets.defs.automation.jobs import range_tags

if __name__ == "__main__":
    first, last = (dt.date.fromisoformat(d) for d in sys.argv[1:3])
    result = (
        defs()
        .resolve_job_def("full_pipeline")
        .execute_in_process(
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
            tags=range_tags(first, last),
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
    )
    sys.exit(0 if result.success else 1)
