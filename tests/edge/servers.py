"""Helpers for edge tests: real uvicorn servers on free loopback ports, minimal snapshots."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import uvicorn

from personalization_assets import paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run `app` with uvicorn in a thread on a free loopback port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextlib.contextmanager
def serve_process(service: str, env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m personalization_assets.edge <service>` as a child process on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "personalization_assets.edge", service, "--port", str(port)],
        env={**os.environ, **env},
        cwd=paths.PROJECT_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{service} did not start (exit {process.poll()})")
        time.sleep(0.1)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def write_edge_config(config_dir: Path, **collector) -> Path:
    """An edge.yaml with collector overrides (the rest defaults)."""
    import yaml

    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "edge.yaml").write_text(
        yaml.safe_dump({"collector": collector, "api": {"reload_check_ms": 0}})
    )
    return config_dir


def tiny_snapshot(path: Path, consent: dict[str, bool]) -> Path:
    """A minimal serving snapshot holding only customers and their consent flags."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("create table meta as select 'snapshot_at' as key, '2026-01-01' as value")
    con.execute(
        "create table customers (customer_id varchar, email_consent boolean, "
        "tracking_consent boolean, unsubscribed boolean, suppressed boolean)"
    )
    con.executemany(
        "insert into customers values (?, true, ?, false, false)", list(consent.items())
    )
    con.execute("create table products (product_id varchar, in_stock boolean)")
    con.execute("create table campaigns (campaign_id varchar, name varchar)")
    con.execute("create table landing_files (source_file varchar)")
    con.close()
    return path
