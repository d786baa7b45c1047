"""The session-scoped Spark cluster shared by the Spark tests (dbt parity, models, rendering)."""

from __future__ import annotations

import socket

import pytest

from personalization_assets import engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A standalone master + 2 workers on 127.0.0.1, stopped (and checked stopped) at the end."""
    cluster = engine.SparkCluster(
        root=tmp_path_factory.mktemp("spark"),
        master_port=free_port(),
        master_ui_port=free_port(),
        workers=2,
        worker_memory="1g",
    )
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
    assert all(pid is None for pid in cluster.status().values())
