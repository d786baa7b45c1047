"""Load test of the real-time edge on loopback: the collector and the send-time API.

Starts both services as child processes on free 127.0.0.1 ports (a temporary landing zone, the
serving snapshot given or exported from the warehouse), drives them with httpx from this process
and prints sustained requests/s and p50/p99 latency. Bounded: at most `--events` collector events,
`--api-requests` API requests and `--max-seconds` per phase.

    .venv/bin/python bench/edge_load.py                        # snapshot exported from data/
    .venv/bin/python bench/edge_load.py --snapshot path/to/snapshot.duckdb --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from personalization_assets import paths  # noqa: E402
from personalization_assets.defs.models import recommendation_runs  # noqa: E402
from personalization_assets.defs.models.settings import load_model_settings  # noqa: E402
from personalization_assets.defs.serving.export import export_snapshot, snapshot_path  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def service(name: str, env: dict[str, str]):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "personalization_assets.edge", name, "--port", str(port)],
        env={**os.environ, **env},
        cwd=ROOT,
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
            raise SystemExit(f"{name} did not start")
        time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


async def drive(make_request, total: int, concurrency: int, max_seconds: float):
    """Run `total` requests with `concurrency` workers; latencies (s), wall time, errors."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker():
            nonlocal issued, errors
            while issued < total and time.perf_counter() < deadline:
                issued += 1
                request = make_request()
                start = time.perf_counter()
                response = await client.request(**request)
                latencies.append(time.perf_counter() - start)
                if response.status_code >= 400:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return np.asarray(latencies), wall, errors


def row(name: str, latencies: np.ndarray, wall: float, errors: int, per_request: int = 1) -> str:
    n = len(latencies)
    p50, p99 = (np.percentile(latencies, [50, 99]) * 1000) if n else (float("nan"),) * 2
    items = f"{n * per_request / wall:,.0f}" if per_request > 1 else "–"
    return f"| {name} | {n:,} | {n / wall:,.0f} | {items} | {p50:.2f} | {p99:.2f} | {errors} |"


def prepare_snapshot(args, workdir: Path) -> Path:
    if args.snapshot:
        return Path(args.snapshot)
    existing = snapshot_path()
    if existing.exists():
        return existing
    target = workdir / "snapshot.duckdb"
    state = recommendation_runs.load_state(paths.models_dir() / "recommendations")
    settings = load_model_settings(paths.config_dir()).recommendations
    export_snapshot(paths.duckdb_path(), target, als_state=state, als_settings=settings)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot", help="serving snapshot (default: the asset's, else export)")
    parser.add_argument("--events", type=int, default=200_000, help="collector events in batches")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--track-requests", type=int, default=5_000, help="single-event POSTs")
    parser.add_argument("--api-requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per phase")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edge_load_") as tmp:
        workdir = Path(tmp)
        snapshot = prepare_snapshot(args, workdir)
        con = duckdb.connect(str(snapshot), read_only=True)
        customers = [r[0] for r in con.execute("select customer_id from customers").fetchall()]
        products = [r[0] for r in con.execute("select product_id from products").fetchall()]
        cached = con.execute(
            "select customer_id from customers where email_consent and not unsubscribed "
            "and not suppressed order by customer_id limit 1"
        ).fetchall()[0][0]
        campaign = con.execute(
            "select campaign_id from decisions where customer_id = ? limit 1", [cached]
        ).fetchall()
        con.close()
        env = {
            paths.LANDING_DIR_ENV: str(workdir / "landing"),
            "PERSONALIZATION_SERVING_SNAPSHOT": str(snapshot),
        }

        def event():
            return {
                "event_id": uuid.uuid4().hex,
                "user_id": random.choice(customers),
                "event_type": "product_view",
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "product_id": random.choice(products),
                "session_id": "bench",
                "device": "desktop",
            }

        lines = [
            "| endpoint | requests | requests/s | events/s | p50 ms | p99 ms | 4xx/5xx |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        with service("collector", env) as url:
            batches = args.events // args.batch_size
            result = asyncio.run(
                drive(
                    lambda: {
                        "method": "POST",
                        "url": f"{url}/v1/batch",
                        "json": [event() for _ in range(args.batch_size)],
                    },
                    batches,
                    args.concurrency,
                    args.max_seconds,
                )
            )
            lines.append(
                row(f"POST /v1/batch ({args.batch_size} events)", *result, args.batch_size)
            )
            result = asyncio.run(
                drive(
                    lambda: {"method": "POST", "url": f"{url}/v1/track", "json": event()},
                    args.track_requests,
                    args.concurrency,
                    args.max_seconds,
                )
            )
            lines.append(row("POST /v1/track (1 event)", *result))
            health = httpx.get(f"{url}/healthz").json()
        landed = sum(
            len(p.read_text().splitlines())
            for p in (workdir / "landing" / "events").glob("date=*/*.ndjson")
        )

        params = {"campaign": campaign[0][0]} if campaign else {}
        with service("api", env) as url:
            target = f"{url}/v1/customers/{cached}/content"
            httpx.get(target, params=params).raise_for_status()  # warm the cache
            result = asyncio.run(
                drive(
                    lambda: {"method": "GET", "url": target, "params": params},
                    args.api_requests,
                    args.concurrency,
                    args.max_seconds,
                )
            )
            lines.append(row("GET content, cached customer", *result))
            sample = iter(random.sample(customers, min(len(customers), 2_000)))
            result = asyncio.run(
                drive(
                    lambda: {"method": "GET", "url": f"{url}/v1/customers/{next(sample)}/content"},
                    min(len(customers), 2_000),
                    args.concurrency,
                    args.max_seconds,
                )
            )
            lines.append(row("GET content, first request per customer", *result))
            rendered = asyncio.run(
                drive(
                    lambda: {"method": "GET", "url": target, "params": {**params, "render": "1"}},
                    min(args.api_requests, 2_000),
                    args.concurrency,
                    args.max_seconds,
                )
            )
            lines.append(row("GET content&render=true, cached customer", *rendered))

    print(f"snapshot: {snapshot} ({len(customers):,} customers), concurrency {args.concurrency}")
    print(
        f"collector: accepted {health['accepted']:,}, dropped (no tracking consent) "
        f"{health['dropped']:,}, lines in final landing files {landed:,}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
