"""A PySpark session on the engine's master, for the Python assets that run on Spark.

With `PERSONALIZATION_ENGINE=spark` the propensity models train and score with XGBoost's own
Spark estimator and the payloads render with `mapInPandas`; both open their session here:

    with spark_session("personalization-models") as spark:
        ...

The driver runs inside the Dagster step's process and submits to `engine.spark_master()` (the
standalone master of `make spark-up`, or any master URL). The session is stopped when the block
ends, so its executors give their cores back before the next dbt invocation asks for them (a
standalone master schedules applications first come, first served).

A master that does not answer fails at once with what to do, instead of Spark waiting for it:
the port is checked before any JVM starts. A session that gets no executor, or loses all of
them mid-step (the workers died), fails the same way after a grace period; Spark itself would
leave its jobs waiting for executors. Executors import this package from the project root
(`spark.executorEnv.PYTHONPATH`) with the driver's Python, so they run the same code; on a
managed cluster the package is installed on the workers (or shipped with `addPyFile`) instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from personalization_assets import engine, paths

if TYPE_CHECKING:  # pyspark starts nothing at import, but costs ~1 s; imported when used
    from pyspark.sql import SparkSession

CONNECT_TIMEOUT_S = 3.0
DEFAULT_EXECUTOR_MEMORY = "1g"
EXECUTOR_WAIT_S = 60.0


class SparkUnavailable(RuntimeError):
    """Spark cannot be used: no Java runtime, or the master is not reachable."""


def check_spark_available(master: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> str:
    """The master URL, after checking Java is installed and a `spark://` master accepts TCP.

    Raises :class:`SparkUnavailable` naming what is missing and how to start it, within
    `timeout` seconds (a connection attempt, never a Spark retry loop).
    """
    master = master or engine.spark_master()
    if shutil.which("java") is None:
        raise SparkUnavailable(
            "Java runtime not found (`java` is not on PATH): Spark needs Java 17; "
            "`make spark-up` installs openjdk-17-jre-headless and starts the local cluster"
        )
    if not master.startswith("spark://"):
        return master  # local[*], yarn, k8s://...: nothing to probe here
    hosts = []
    for address in master.removeprefix("spark://").split(","):  # a standby-master list
        parsed = urlparse(f"spark://{address}")
        hosts.append((parsed.hostname or "127.0.0.1", parsed.port or engine.DEFAULT_MASTER_PORT))
    errors = []
    for host, port in hosts:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return master
        except OSError as error:
            errors.append(f"{host}:{port}: {error.strerror or error}")
    raise SparkUnavailable(
        f"Spark master {master} not reachable ({'; '.join(errors)}): run `make spark-up` "
        f"(or point {engine.SPARK_MASTER_ENV} at a running master)"
    )


@contextmanager
def spark_session(
    app_name: str,
    *,
    master: str | None = None,
    executor_memory: str = DEFAULT_EXECUTOR_MEMORY,
    max_cores: int = 2,
    conf: dict[str, str] | None = None,
    executor_wait_s: float = EXECUTOR_WAIT_S,
    executors_lost_s: float = EXECUTOR_WAIT_S,
) -> Iterator[SparkSession]:
    """A SparkSession on `master` (default: the engine's), stopped when the block ends.

    Raises :class:`SparkUnavailable` when no executor starts within `executor_wait_s` (no worker
    alive, or all busy), and when every executor is gone for `executors_lost_s` during the block
    (the workers died): its Spark jobs are cancelled rather than left waiting for resources.
    """
    master = check_spark_available(master)
    for key, value in engine.spark_env().items():
        if key not in os.environ or key in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
            os.environ[key] = value
    from pyspark.sql import SparkSession

    python_path = os.pathsep.join(
        p for p in (str(paths.PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    settings = {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": "1g",
        "spark.executor.memory": executor_memory,
        "spark.executor.cores": "1",
        "spark.cores.max": str(max_cores),
        "spark.pyspark.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": python_path,
        "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # A barrier stage (xgboost.spark) that cannot get its slots fails after ~30 s instead
        # of Spark's default 40 retries x 15 s.
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "5s",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "6",
        **(conf or {}),
    }
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    watch = _ExecutorWatch(session.sparkContext, executors_lost_s)
    try:
        watch.wait_for_first(master, executor_wait_s)
        with watch:
            yield session
    except Exception as error:
        if watch.fired:
            raise SparkUnavailable(
                f"every Spark executor on {master} was gone for {executors_lost_s:.0f}s during "
                "the step (workers lost?): its jobs were cancelled and nothing was written; "
                "check `make spark-status`, `make spark-up` starts missing workers"
            ) from error
        raise
    finally:
        session.stop()


class _ExecutorWatch:
    """Cancels a session's jobs once it has had no executor for `grace` seconds.

    A standalone master keeps a job whose executors all died waiting for new ones forever;
    this turns that into a failed step with a message."""

    def __init__(self, context, grace: float) -> None:
        self.context = context
        self.grace = grace
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def executors(self) -> int:
        infos = self.context._jsc.sc().statusTracker().getExecutorInfos()
        return max(len(infos) - 1, 0)  # the driver is listed too

    def wait_for_first(self, master: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.executors() == 0:
            if time.monotonic() > deadline:
                raise SparkUnavailable(
                    f"no Spark executor started on {master} within {timeout:.0f}s: no worker "
                    "is alive or free; check `make spark-status`, `make spark-up` starts them"
                )
            time.sleep(0.5)

    def __enter__(self) -> _ExecutorWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        gone_since = None
        while not self._stop.wait(1.0):
            if self.executors() > 0:
                gone_since = None
                continue
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > self.grace:
                self.fired = True
                self.context.cancelAllJobs()
                return


@contextmanager
def engine_spark_session(app_name: str) -> Iterator[SparkSession | None]:
    """A session when the engine is `spark` (the asset's heavy work runs there), else None."""
    if engine.engine() != "spark":
        yield None
        return
    with spark_session(app_name) as session:
        yield session
