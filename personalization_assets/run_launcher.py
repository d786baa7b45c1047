"""Run workers forked from a warm process: a run starts in about a second, not in 10-15 s.

Dagster's default launcher asks the code server to start every run in a fresh interpreter
(`spawn`), which imports Dagster, dbt, pandas, DuckDB and the whole code location again: about
6 s of CPU per run here, 13 s of wall time while `dagster dev` and a dbt build share the two
cores. That start-up was the largest single part of the sensor's drop-to-payload latency.

`WarmRunLauncher` keeps a `multiprocessing` fork server (a clean, single-threaded process,
started once) that has imported the code location (`preload`); each run is a fork of it, so
its worker starts with everything loaded. The run itself executes exactly as under the default
launcher (`core_execute_run`, same events, same in-process executor).

Correctness over speed where they meet:
- **Code changes**: the preloaded modules would be stale after an edit, so every launch first
  fingerprints the `watch` paths (Python sources, config YAML, the dbt project's sources; all
  read at load time). When they changed, the fork server is restarted before the run is forked.
- **Anything unexpected** (no job origin, a fork server that cannot start): the run goes to the
  default launcher (fresh process via the code server), with an engine event saying why.
- **Termination**: the worker's pid is recorded as a run tag; `terminate` marks the run
  canceling and interrupts that process (Dagster turns the interrupt into a canceled run, as
  it does for `dagster api execute_run`). Loopback deployment only: webserver, daemon and
  workers share one machine.

Configured in `dagster.yaml` (`run_launcher:`; see the README's operating model). Not imported
by the code location itself.
"""

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster._check as check
from dagster._config.config_schema import UserConfigSchema
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from personalization_assets import paths

PID_TAG = "personalization/run_worker_pid"
SERVER_TAG = "personalization/run_worker_fork_server"
DEFAULT_PRELOAD = ("personalization_assets.warm_preload",)
# What the code location reads when it loads. Not the dbt manifest itself: every dbt run rewrites
# it (the partial-parse reuse), while its inputs only change when the project does.
DEFAULT_WATCH = (
    "personalization_assets",
    "config",
    "dbt_project/dbt_project.yml",
    "dbt_project/models",
    "dbt_project/macros",
    "dbt_project/seeds",
    "dbt_project/tests",
)
WATCHED_SUFFIXES = {".py", ".json", ".yaml", ".yml", ".sql", ".csv"}


def code_fingerprint(roots: Sequence[Path]) -> tuple:
    """(path, mtime, size) of every watched file: changes when any source is edited, added or
    removed. A few hundred stat() calls, well under 10 ms."""
    entries = []
    for root in roots:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = [
                p
                for p in root.rglob("*")
                if p.suffix in WATCHED_SUFFIXES and "__pycache__" not in p.parts
            ]
        else:
            files = []
        for path in sorted(files):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


def _run_worker(run_id: str, instance_ref: Any, recon_job: Any) -> None:
    """The forked run worker: execute the run as the code server's run subprocess does."""
    from dagster._core.events import EngineEventData
    from dagster._core.instance import DagsterInstance
    from dagster._grpc.impl import core_execute_run
    from dagster._utils.interrupts import capture_interrupts

    # A fork server child inherits the server's signal dispositions; Dagster's own handlers
    # turn SIGINT/SIGTERM into an interrupt at a safe point (a canceled run).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with capture_interrupts(), DagsterInstance.from_ref(instance_ref) as instance:
        run = check.not_none(instance.get_run_by_id(run_id), f"run {run_id} not found")
        pid = os.getpid()
        instance.add_run_tags(run_id, {PID_TAG: str(pid)})
        instance.report_engine_event(
            f"Started process for run (pid: {pid}), forked from the warm run-worker server "
            f"(pid: {os.getppid()}).",
            run,
            EngineEventData.in_process(pid),
        )
        try:
            for _ in core_execute_run(recon_job, run, instance, inject_env_vars=True):
                pass
        except BaseException:  # noqa: BLE001 - core_execute_run has written it to the event log
            pass
        finally:
            instance.report_engine_event(f"Process for run exited (pid: {pid}).", run)


class WarmRunLauncher(DefaultRunLauncher, ConfigurableClass):
    """Fork run workers from a process that has already imported the code location."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        watch: Sequence[str] = DEFAULT_WATCH,
    ):
        super().__init__(inst_data=inst_data)
        self._warm_inst_data = inst_data
        self.preload = list(preload)
        self.watch = [
            p if Path(p).is_absolute() else paths.PROJECT_ROOT / p for p in map(Path, watch)
        ]
        self._lock = threading.Lock()
        self._fingerprint: tuple | None = None
        self._workers: dict[str, multiprocessing.process.BaseProcess] = {}
        self.restarts = 0

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._warm_inst_data

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        from dagster import Field

        return {
            "preload": Field(
                [str], is_required=False, description="Modules the fork server imports first."
            ),
            "watch": Field(
                [str],
                is_required=False,
                description="Files/folders (relative to the project) whose change restarts it.",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> "WarmRunLauncher":
        return cls(
            inst_data=inst_data,
            preload=config_value.get("preload") or DEFAULT_PRELOAD,
            watch=config_value.get("watch") or DEFAULT_WATCH,
        )

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        try:
            from dagster._utils.hosted_user_process import recon_job_from_origin

            origin = check.not_none(run.job_code_origin, "run has no code origin")
            recon_job = recon_job_from_origin(origin)
            restarts = self.restarts
            process = self._start(run.run_id, recon_job)
        except Exception as error:  # noqa: BLE001 - any failure falls back to the default path
            self._instance.report_engine_event(
                f"Warm run-worker server unavailable ({type(error).__name__}: {error}); "
                "starting the run in a fresh process instead.",
                run,
                cls=self.__class__,
            )
            super().launch_run(context)
            return
        self._instance.add_run_tags(run.run_id, {SERVER_TAG: str(process.pid)})
        if self.restarts != restarts:
            self._instance.report_engine_event(
                "Code, config or dbt project changed since the warm run-worker server started: "
                "restarted it with the new code.",
                run,
                cls=self.__class__,
            )

    def _start(self, run_id: str, recon_job: Any) -> multiprocessing.process.BaseProcess:
        with self._lock:
            self._reap()
            fingerprint = code_fingerprint(self.watch)
            server = multiprocessing.forkserver._forkserver
            restarted = self._fingerprint is not None and fingerprint != self._fingerprint
            if restarted:
                server._stop()  # code changed: the next start preloads it afresh
            self._fingerprint = fingerprint
            self.restarts += int(restarted)
            multiprocessing.forkserver.set_forkserver_preload(self.preload)
            ctx = multiprocessing.get_context("forkserver")
            process = ctx.Process(
                target=_run_worker,
                args=(run_id, self._instance.get_ref(), recon_job),
                name=f"dagster-run-{run_id[:8]}",
                daemon=False,
            )
            process.start()
            self._workers[run_id] = process
            return process

    def _reap(self) -> None:
        for run_id, process in list(self._workers.items()):
            if not process.is_alive():
                process.join(0)
                del self._workers[run_id]

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        pid = run.tags.get(PID_TAG)
        if SERVER_TAG not in run.tags and pid is None:
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        if pid is None:  # not started yet: the worker sees CANCELING when it starts
            return True
        try:
            os.kill(int(pid), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def join(self, timeout: int = 30) -> None:
        for process in list(self._workers.values()):
            process.join(timeout)
        super().join(timeout)
