"""The warm run launcher: runs are forked from one preloaded server, restarted on code change."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
from dagster._core.workspace.load_target import ModuleTarget

from personalization_assets import run_launcher

HERE = Path(__file__).parent


@pytest.fixture
def launched(tmp_path):
    """(instance, submit(sleep) -> run id, marker folder, watched folder) with WarmRunLauncher."""
    markers = tmp_path / "markers"
    markers.mkdir()
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "code.py").write_text("x = 1\n")
    overrides = {
        # submit = launch now (dagster dev queues runs and its daemon launches them the same way)
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "DefaultRunCoordinator",
        },
        "run_launcher": {
            "module": "personalization_assets.run_launcher",
            "class": "WarmRunLauncher",
            "config": {"preload": ["warm_launcher_jobs"], "watch": [str(watched)]},
        },
    }
    target = ModuleTarget(
        module_name="warm_launcher_jobs",
        attribute="defs",
        working_directory=str(HERE),
        location_name="warm_test",
    )
    with (
        instance_for_test(overrides=overrides) as instance,
        create_test_daemon_workspace_context(target, instance) as context,
    ):
        workspace = context.create_request_context()
        location = workspace.get_code_location("warm_test")
        repo = location.get_repository(next(iter(location.get_repositories())))
        remote_job = repo.get_full_job("marker_job")
        job_def = __import__("warm_launcher_jobs").defs.resolve_job_def("marker_job")

        def submit(sleep: float = 0.0) -> str:
            run = instance.create_run_for_job(
                job_def=job_def,
                run_config={
                    "ops": {
                        "process_marker": {
                            "config": {"folder": str(markers), "sleep_seconds": sleep}
                        }
                    }
                },
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            instance.submit_run(run.run_id, workspace)
            return run.run_id

        yield instance, submit, markers, watched
        instance.run_launcher.join(timeout=60)


def _finished(instance, run_id: str, timeout: float = 60) -> dg.DagsterRun:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {instance.get_run_by_id(run_id).status}")


def _engine_messages(instance, run_id: str) -> list[str]:
    return [
        e.message or "" for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    ]


def _parent(markers: Path, run_id: str) -> int:
    pid, ppid = (int(x) for x in (markers / f"{run_id}.txt").read_text().split())
    assert pid != os.getpid()
    return ppid


def test_runs_are_forked_from_one_warm_server_until_the_code_changes(launched):
    instance, submit, markers, watched = launched
    first, second = submit(), submit()
    for run_id in (first, second):
        run = _finished(instance, run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, _engine_messages(instance, run_id)
        assert run.tags[run_launcher.PID_TAG]
        assert any(
            "forked from the warm run-worker server" in m
            for m in _engine_messages(instance, run_id)
        )
    server = _parent(markers, first)
    assert _parent(markers, second) == server != os.getpid()

    time.sleep(0.01)
    (watched / "code.py").write_text("x = 2  # edited\n")
    third = submit()
    assert _finished(instance, third).status == dg.DagsterRunStatus.SUCCESS
    assert _parent(markers, third) != server
    assert any("restarted it with the new code" in m for m in _engine_messages(instance, third))


def test_terminating_a_forked_run_cancels_it(launched):
    instance, submit, markers, _ = launched
    run_id = submit(sleep=60)
    deadline = time.time() + 60
    while run_launcher.PID_TAG not in instance.get_run_by_id(run_id).tags:
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(1)
    assert instance.run_launcher.terminate(run_id)
    run = _finished(instance, run_id, timeout=60)
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert not (markers / f"{run_id}.txt").exists()
