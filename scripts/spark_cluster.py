"""Start, stop and inspect the local Spark standalone cluster (`make spark-up` / `spark-down`).

    python scripts/spark_cluster.py up [--workers 2] [--master-port 7077]
    python scripts/spark_cluster.py status
    python scripts/spark_cluster.py down
    python scripts/spark_cluster.py export-raw [--duckdb data/warehouse.duckdb]

Pids and logs live under data/spark/ (PERSONALIZATION_SPARK_DIR); the logic is in
personalization_assets/engine.py.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from personalization_assets import engine, paths  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "export-raw"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--master-port", type=int, default=engine.DEFAULT_MASTER_PORT)
    parser.add_argument("--master-ui-port", type=int, default=engine.DEFAULT_MASTER_UI_PORT)
    parser.add_argument("--worker-cores", type=int, default=1)
    parser.add_argument("--worker-memory", default="2g")
    parser.add_argument("--duckdb", type=Path, default=None, help="warehouse to export raw.* from")
    args = parser.parse_args(argv)
    cluster = engine.SparkCluster(
        master_port=args.master_port,
        master_ui_port=args.master_ui_port,
        workers=args.workers,
        worker_cores=args.worker_cores,
        worker_memory=args.worker_memory,
    )
    if args.command == "up":
        url = cluster.up()
        print(
            f"spark master {url} (UI http://127.0.0.1:{args.master_ui_port}), "
            f"{args.workers} workers; logs in {cluster.root / 'logs'}"
        )
    elif args.command == "down":
        stopped = cluster.down()
        print(f"stopped {', '.join(stopped)}" if stopped else "no spark daemons running")
    elif args.command == "status":
        running = 0
        for name, pid in cluster.status().items():
            print(f"{name:10} {'running, pid ' + str(pid) if pid else 'stopped'}")
            running += pid is not None
        return 0 if running else 3
    else:
        counts = engine.export_raw_tables(args.duckdb or paths.duckdb_path())
        for table, rows in counts.items():
            print(f"raw.{table:16} {rows:>10} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
