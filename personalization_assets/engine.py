"""The execution engine switch (`duckdb`, the default, or `spark`) and the local Spark cluster.

`PERSONALIZATION_ENGINE=spark` makes the Dagster dbt resource build the same dbt project with
the `spark` target of `dbt_project/profiles.yml` (dbt-spark, `session` method) against a Spark
standalone master. `make spark-up` starts that master and two workers on 127.0.0.1 from the
Spark distribution the `pyspark` package ships; everything they write (pids, logs, the table
files, the Hive metastore) lives under `data/spark/` (`PERSONALIZATION_SPARK_DIR`).

Why the `session` method and not the Thrift server: the driver runs inside each `dbt` process
and talks to the master directly, so there is no third long-running JVM to start, secure and
keep in sync with the workers; the cost is a JVM start per dbt invocation (~10-20 s). The Hive
metastore is an embedded Derby database, which allows one driver at a time; our dbt runs are
serialized by the warehouse pool already. A managed cluster swaps the master URL (and usually
the metastore) and nothing else.

Raw sources: the ingest assets load the landing zone into DuckDB's `raw` schema. For Spark those
tables are exported as Parquet under `data/spark/raw/<table>/` (`export_raw_tables`) and
registered as external tables `raw.<table>` by the dbt project's `on-run-start` hook, so the
dbt sources are the same on both engines.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from personalization_assets import paths

ENGINE_ENV = "PERSONALIZATION_ENGINE"
ENGINES = ("duckdb", "spark")
SPARK_DIR_ENV = "PERSONALIZATION_SPARK_DIR"
SPARK_MASTER_ENV = "PERSONALIZATION_SPARK_MASTER"
DEFAULT_MASTER_PORT = 7077
DEFAULT_MASTER_UI_PORT = 8090
RAW_TABLES = (
    "landing_files",
    "event_lines",
    "event_day_loads",
    "customers",
    "products",
    "order_lines",
    "assignments",
)


def engine(configured: str | None = None) -> str:
    """`configured` (a resource's config) when given, else PERSONALIZATION_ENGINE, else `duckdb`."""
    source = "engine" if configured else ENGINE_ENV
    value = (configured or os.environ.get(ENGINE_ENV, "")).strip().lower() or "duckdb"
    if value not in ENGINES:
        raise ValueError(f"{source}={value!r}: expected one of {', '.join(ENGINES)}")
    return value


def dbt_target(name: str | None = None) -> str:
    """The dbt target (profiles.yml output) of an engine: the engine's own name."""
    return name or engine()


def spark_dir() -> Path:
    """Pids, logs, table files and the metastore of the local Spark setup."""
    value = os.environ.get(SPARK_DIR_ENV)
    return Path(value).expanduser().resolve() if value else paths.PROJECT_ROOT / "data" / "spark"


def spark_master() -> str:
    return os.environ.get(SPARK_MASTER_ENV, f"spark://127.0.0.1:{DEFAULT_MASTER_PORT}")


def spark_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for any process that starts a Spark driver or daemon (dbt, the cluster)."""
    env = dict(os.environ if base is None else base)
    env.setdefault(SPARK_DIR_ENV, str(spark_dir()))
    env.setdefault(SPARK_MASTER_ENV, spark_master())
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env["SPARK_HOME"] = str(spark_home())
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.setdefault("SPARK_LOG_DIR", str(Path(env[SPARK_DIR_ENV]) / "logs"))
    return env


def prepare_spark_invocation(duckdb_path: Path) -> dict[str, int]:
    """Before a dbt invocation on Spark (in this process): Spark's environment variables for the
    dbt subprocess, and the raw tables exported from DuckDB; table → rows."""
    for key, value in spark_env().items():
        if key not in os.environ or key in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
            os.environ[key] = value
    # The pseudonym key's HMAC pads for the spark target's session conf (`customer_key()`).
    from personalization_assets.defs.privacy import pseudonym

    ipad, opad = pseudonym.hmac_pads()
    os.environ["DBT_ENV_SECRET_PSEUDONYM_IPAD"] = ipad.hex()
    os.environ["DBT_ENV_SECRET_PSEUDONYM_OPAD"] = opad.hex()
    return export_raw_tables(duckdb_path)


def spark_home() -> Path:
    """The Spark distribution inside the installed `pyspark` package (bin/, jars/)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed in this environment: run `make setup`")
    return Path(spec.origin).parent


def ensure_java() -> str:
    """The `java` on PATH; installs Debian's openjdk-17-jre-headless when there is none."""
    found = shutil.which("java")
    if found:
        return found
    apt = shutil.which("apt-get")
    if not apt:
        raise RuntimeError("`java` not found and apt-get unavailable: install a Java 17 runtime")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, apt, "update", "-q"], check=True, env=env)
    subprocess.run(
        [*sudo, apt, "install", "-y", "-q", "--no-install-recommends", "openjdk-17-jre-headless"],
        check=True,
        env=env,
    )
    found = shutil.which("java")
    if not found:
        raise RuntimeError("openjdk-17-jre-headless installed but `java` is still not on PATH")
    return found


@dataclass(frozen=True)
class Daemon:
    """One JVM of the cluster: its name, pid file and log file."""

    name: str
    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid when that process is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None


class SparkCluster:
    """A standalone Spark master and `workers` workers bound to 127.0.0.1, tracked by pid."""

    def __init__(
        self,
        root: Path | None = None,
        master_port: int = DEFAULT_MASTER_PORT,
        master_ui_port: int = DEFAULT_MASTER_UI_PORT,
        workers: int = 2,
        worker_cores: int = 1,
        worker_memory: str = "2g",
    ) -> None:
        self.root = (root or spark_dir()).resolve()
        self.master_port = master_port
        self.master_ui_port = master_ui_port
        self.workers = workers
        self.worker_cores = worker_cores
        self.worker_memory = worker_memory

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def daemons(self) -> list[Daemon]:
        names = ["master"] + [f"worker-{i}" for i in range(1, self.workers + 1)]
        return [Daemon(name, self.root) for name in names]

    def _env(self) -> dict[str, str]:
        env = spark_env({**os.environ, SPARK_DIR_ENV: str(self.root)})
        env[SPARK_MASTER_ENV] = self.master_url
        env["SPARK_WORKER_DIR"] = str(self.root / "work")
        env.setdefault("SPARK_DAEMON_MEMORY", "512m")
        return env

    def _command(self, daemon: Daemon) -> list[str]:
        spark_class = str(spark_home() / "bin" / "spark-class")
        if daemon.name == "master":
            return [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.master_port),
                "--webui-port",
                str(self.master_ui_port),
            ]
        index = int(daemon.name.split("-")[1])
        return [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--cores",
            str(self.worker_cores),
            "--memory",
            self.worker_memory,
            "--webui-port",
            str(self.master_ui_port + index),
            "--work-dir",
            str(self.root / "work" / daemon.name),
            self.master_url,
        ]

    def up(self, timeout: float = 90.0) -> str:
        """Start whatever is not running, wait until every worker has registered; the master URL."""
        ensure_java()
        for folder in ("pids", "logs", "work", "warehouse", "raw"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        master_log = self.daemons[0].log_file
        log_offset = master_log.stat().st_size if master_log.exists() else 0
        master_running = self.daemons[0].pid() is not None
        env = self._env()
        started = []
        for daemon in self.daemons:
            if daemon.pid() is not None:
                continue
            with daemon.log_file.open("ab") as log:
                process = subprocess.Popen(
                    self._command(daemon),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.root,
                    start_new_session=True,
                )
            daemon.pid_file.write_text(f"{process.pid}\n")
            started.append(daemon.name)
            if daemon.name == "master":
                _wait_for_port("127.0.0.1", self.master_port, timeout, daemon)
        # A new master needs every worker to register; a running one only the restarted ones.
        expected = self.workers if not master_running else len(started)
        self._wait_for_workers(expected, log_offset, timeout)
        (self.root / "master_url").write_text(self.master_url + "\n")
        return self.master_url

    def _wait_for_workers(self, expected: int, log_offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        master_log = self.daemons[0].log_file
        while time.monotonic() < deadline:
            with master_log.open("rb") as log:
                log.seek(log_offset)
                registered = log.read().count(b"Registering worker")
            if registered >= expected:
                return
            for daemon in self.daemons:
                if daemon.pid() is None:
                    raise RuntimeError(f"spark {daemon.name} exited; see {daemon.log_file}")
            time.sleep(0.5)
        raise TimeoutError(f"workers did not register within {timeout:.0f}s; see {master_log}")

    def down(self, timeout: float = 30.0) -> list[str]:
        """Stop the workers, then the master (SIGTERM, then SIGKILL after `timeout`); names stopped."""
        stopped = []
        for daemon in reversed(self.daemons):
            pid = daemon.pid()
            if pid is not None:
                _terminate(pid, timeout)
                stopped.append(daemon.name)
            daemon.pid_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, int | None]:
        """daemon name → live pid (None when not running)."""
        return {daemon.name: daemon.pid() for daemon in self.daemons}


def _alive(pid: int) -> bool:
    """Whether `pid` runs; reaps it first when it is our own exited child (a zombie)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_port(host: str, port: int, timeout: float, daemon: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        if daemon.pid() is None:
            raise RuntimeError(f"spark {daemon.name} exited; see {daemon.log_file}")
        time.sleep(0.3)
    raise TimeoutError(f"spark {daemon.name} not listening on {port}; see {daemon.log_file}")


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM the daemon's process group (spark-class execs java in it), escalate to SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def export_raw_tables(duckdb_path: Path, root: Path | None = None) -> dict[str, int]:
    """Copy DuckDB's `raw.*` tables to `<spark dir>/raw/<table>/part-0.parquet`; table → rows.

    Timestamps are written UTC-adjusted so Spark reads them as TIMESTAMP (not TIMESTAMP_NTZ).
    Absent tables (e.g. no experiment export yet) are written empty with no file, and the dbt
    hook skips them.
    """
    import duckdb

    target = (root or spark_dir()) / "raw"
    counts: dict[str, int] = {}
    con = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        present = {
            row[0]
            for row in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'raw'"
            ).fetchall()
        }
        for table in RAW_TABLES:
            folder = target / table
            shutil.rmtree(folder, ignore_errors=True)
            if table not in present:
                continue
            folder.mkdir(parents=True)
            columns = con.execute(
                "select column_name, data_type from duckdb_columns() "
                "where schema_name = 'raw' and table_name = ? order by column_index",
                [table],
            ).fetchall()
            select = ", ".join(
                f'cast("{name}" as timestamptz) as "{name}"' if kind == "TIMESTAMP" else f'"{name}"'
                for name, kind in columns
            )
            out = folder / "part-0.parquet"
            con.execute(f"copy (select {select} from raw.\"{table}\") to '{out}' (format parquet)")
            counts[table] = con.execute(f'select count(*) from raw."{table}"').fetchall()[0][0]
    finally:
        con.close()
    return counts


def spark_tables(root: Path | None = None, schemas: tuple[str, ...] = ("main", "reference")):
    """(schema, table, parquet glob) of every table the Spark build wrote (views have no files)."""
    warehouse = (root or spark_dir()) / "warehouse"
    for schema in schemas:
        folder = warehouse / f"{schema}.db"
        if not folder.is_dir():
            continue
        for table in sorted(p for p in folder.iterdir() if p.is_dir()):
            if any(table.glob("*.parquet")):
                yield schema, table.name, str(table / "*.parquet")


def import_spark_tables(
    con, root: Path | None = None, column_types: dict[str, dict[str, str]] | None = None
) -> dict[str, int]:
    """Read the Spark build's tables back into DuckDB (`schema.table`, replaced); table → rows.

    The Python assets, the serving snapshot and the send-time API read DuckDB whatever engine
    ran the SQL, so this is the one hand-over point. Types follow `column_types`
    (table → column → DuckDB type, e.g. a dbt contract) where given; otherwise Spark's UTC
    timestamps become DuckDB's naive UTC TIMESTAMP and Spark's INT becomes BIGINT, as DuckDB
    would have typed them.
    """
    column_types = column_types or {}
    con.execute("set TimeZone = 'UTC'")
    counts = {}
    for schema, table, files in spark_tables(root):
        described = con.execute(f"describe select * from read_parquet('{files}')").fetchall()
        declared = column_types.get(table, {})
        select = ", ".join(
            _read_back_column(name, kind, declared.get(name)) for name, kind, *_ in described
        )
        con.execute(f"create schema if not exists {schema}")
        con.execute(
            f'create or replace table {schema}."{table}" as '
            f"select {select} from read_parquet('{files}')"
        )
        counts[f"{schema}.{table}"] = con.execute(
            f'select count(*) from {schema}."{table}"'
        ).fetchall()[0][0]
    return counts


def _read_back_column(name: str, kind: str, declared: str | None) -> str:
    column = f'"{name}"'
    if declared:
        return f"cast({column} as {declared}) as {column}"
    if kind.startswith("TIMESTAMP"):
        return f"cast({column} as timestamp) as {column}"
    if kind == "INTEGER":
        return f"cast({column} as bigint) as {column}"
    return column


def contract_column_types(manifest_path: Path) -> dict[str, dict[str, str]]:
    """model → column → declared data_type, for models with an enforced dbt contract."""
    import json

    manifest = json.loads(manifest_path.read_text())
    types = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model" and node["config"].get("contract", {}).get("enforced"):
            types[node["name"]] = {
                name: column["data_type"]
                for name, column in node["columns"].items()
                if column.get("data_type")
            }
    return types
