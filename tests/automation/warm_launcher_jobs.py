"""A tiny code location for test_warm_run_launcher: each run records which process ran it."""

import os
import time
from pathlib import Path

import dagster as dg


class Marker(dg.Config):
    folder: str
    sleep_seconds: float = 0.0


@dg.asset
def process_marker(config: Marker) -> None:
    """Write `<run id>.txt` = "pid ppid" of the run worker (after an optional sleep)."""
    time.sleep(config.sleep_seconds)
    run_id = dg.OpExecutionContext.get().run_id
    Path(config.folder, f"{run_id}.txt").write_text(f"{os.getpid()} {os.getppid()}")


defs = dg.Definitions(
    assets=[process_marker],
    jobs=[
        dg.define_asset_job(
            "marker_job", selection=[process_marker], executor_def=dg.in_process_executor
        )
    ],
)
