"""Scale benchmark: generate a shop, run the whole graph, then refresh 1% new events.

    .venv/bin/python bench/scale_bench.py --scale 10k|100k|1m [--engine duckdb|spark]
        [--skip-generate] [--days N]

Everything lives under bench/out/scale-<scale>/ (`scale-<scale>-spark/` for the Spark engine:
landing zone, warehouse, outputs, models, a persistent DAGSTER_HOME and the Spark tables),
never data/. `--engine spark` (`make bench ENGINE=spark`) runs the same jobs with
PERSONALIZATION_ENGINE=spark: dbt on Spark, propensity models on `xgboost.spark`, rendering
through mapInPandas. It starts its own standalone cluster for the run (a master and 2 workers
of 1 core each on 127.0.0.1, free ports, under the output folder) and stops it at the end, or
uses `--spark-master URL`. Peak RSS then includes the cluster's JVMs.

Each phase runs in a child process whose peak RSS is measured (the process tree sampled from /proc,
and wait4's max RSS): generation, the `full_pipeline` job over every landing day with full refresh
(what `personalization demo` and the nightly schedule run), then the `event_refresh` job over one
new landing day holding 1% new events (what the landing sensor requests). Step wall times come from
the run's event log, rows from `dagster/row_count` metadata. Prints a markdown table with the
issue's targets beside each figure and appends it to bench/results.md.

The generator writes about 0.29 events per customer per day (+0.7), so the event volume is set
with the number of days: 52 days is about the shortest history that still gives the purchase
model its three training snapshots (28 days of history first, 7-day horizon, 7-day spacing) and
writes about 16 events per customer; `--days 33` gives the issue's 10 events per customer but no
model can train on it (the 90-day churn model needs 132+ days at any scale).

The run uses a copy of config/ (PERSONALIZATION_CONFIG_DIR) whose only changes are delivery's
`rate_limit_per_second`, lifted so the dry-run sender measures the graph, not the ESP pacing
(at 20 messages/s, sending 100k payloads alone would take 83 minutes), and `expire_after_hours`,
lifted because the generated history ends weeks before the wall clock (at 48 hours the 1M run
expired 733k newsletter payloads instead of sending them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from personalization_assets import engine as engines  # noqa: E402

RESULTS = ROOT / "bench" / "results.md"
SCALES = {
    "10k": {"customers": 10_000, "products": 1_000},
    "100k": {"customers": 100_000, "products": 10_000},
    "1m": {"customers": 1_000_000, "products": 50_000},
}
DEFAULT_DAYS = 52
END_DATE = dt.date(2026, 10, 31)
NEW_EVENT_SHARE = 0.01
TARGET_FULL_S = 180.0
TARGET_RSS_GIB = 6.0
TARGET_INCREMENTAL_SHARE = 0.05
TARGET_RENDER_PER_CORE = 25_000
PAYLOAD_STEP = "campaigns__email_payloads"
GIB = 1024**3
UNPACED_RATE = 1_000_000_000
UNEXPIRED_HOURS = 24 * 365 * 10


@dataclass
class Phase:
    """One child process: wall time, peak RSS, load average around it, and its run's log."""

    name: str
    wall_s: float = 0.0
    peak_tree_rss: int = 0
    peak_wait4_rss: int = 0
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()
    run: dict = field(default_factory=dict)
    cut_off: bool = False
    cut_reason: str = ""
    rss_samples: list[tuple[float, int]] = field(default_factory=list)

    def step_peak_rss(self, step: str) -> int | None:
        """Peak process-tree RSS sampled while `step` ran (from the run's step intervals)."""
        span = self.run.get("intervals", {}).get(step)
        if not span:
            return None
        start, end = span
        inside = [rss for t, rss in self.rss_samples if start <= t <= end]
        return max(inside) if inside else None

    @property
    def peak_rss(self) -> int:
        return max(self.peak_tree_rss, self.peak_wait4_rss)


# ---------------------------------------------------------------------------------------------
# Process measurement


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found += [int(c) for c in text]
    except OSError:
        pass
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_rss(pid: int, *others: int) -> int:
    total, stack = 0, [pid, *others]
    while stack:
        current = stack.pop()
        total += _rss(current)
        stack += _children(current)
    return total


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def run_measured(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    time_limit: float | None = None,
    rss_limit: int | None = None,
    also_sample: tuple[int, ...] = (),
) -> Phase:
    """Run `cmd`, sampling the summed RSS of its process tree (and of the `also_sample` pids'
    trees: the Spark cluster) every 0.25 s.

    Past `time_limit` seconds, or above `rss_limit` bytes (the machine is shared), the child's
    process group (its own session) is terminated and the phase is marked cut off, not failed.
    """
    phase = Phase(name, load_before=os.getloadavg())
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stop = threading.Event()
        cut_at = 0.0

        def sample() -> None:
            nonlocal cut_at
            while not stop.is_set():
                rss = _tree_rss(proc.pid, *also_sample)
                phase.rss_samples.append((time.time(), rss))
                phase.peak_tree_rss = max(phase.peak_tree_rss, rss)
                elapsed = time.perf_counter() - started
                if not phase.cut_off:
                    if time_limit and elapsed > time_limit:
                        phase.cut_reason = f"time limit {time_limit:.0f} s"
                    elif rss_limit and rss > rss_limit:
                        phase.cut_reason = f"memory limit {rss_limit / GIB:.0f} GiB"
                    if phase.cut_reason:
                        phase.cut_off, cut_at = True, elapsed
                        _signal_group(proc.pid, signal.SIGTERM)
                elif elapsed > cut_at + 30:
                    _signal_group(proc.pid, signal.SIGKILL)
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
    phase.wall_s = time.perf_counter() - started
    phase.peak_wait4_rss = usage.ru_maxrss * 1024
    phase.load_after = os.getloadavg()
    if proc.returncode != 0 and not phase.cut_off:
        tail = "\n".join(log.read_text(errors="ignore").splitlines()[-30:])
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); see {log}\n{tail}")
    return phase


# ---------------------------------------------------------------------------------------------
# Child mode: run one job in-process on the persistent instance in DAGSTER_HOME


def child_run_job(args: argparse.Namespace) -> None:
    from personalization_assets.defs.warehouse.project import prepare_manifest

    # Before the definitions are imported: they read the manifest this may rebuild.
    prepare_manifest()
    import dagster as dg

    from personalization_assets.definitions import defs
    from personalization_assets.defs.automation.jobs import range_tags
    from personalization_assets.defs.automation.sensors import INCREMENTAL_RECOMMENDATIONS
    from personalization_assets.defs.warehouse.assets import FULL_REFRESH_TAG

    first, last = dt.date.fromisoformat(args.first), dt.date.fromisoformat(args.last)
    tags = range_tags(first, last)
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if args.job == "full_pipeline":
        tags[FULL_REFRESH_TAG] = "true"
    else:
        run_config.update(INCREMENTAL_RECOMMENDATIONS)
    job = defs().resolve_job_def(args.job)
    selection = None
    if args.exclude:
        excluded = {dg.AssetKey.from_user_string(key) for key in args.exclude}
        keys = job.asset_layer.executable_asset_keys
        selection = sorted(keys - excluded, key=lambda k: k.to_user_string())
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config=run_config,
        tags=tags,
        asset_selection=selection,
    )
    elapsed = time.perf_counter() - started
    failed = [
        f"{e.step_key}: {e.message}"
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    Path(args.result).write_text(
        json.dumps(
            {
                "run_id": result.run_id,
                "success": result.success,
                "execute_s": elapsed,
                "failed": failed,
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# Reading a run's event log


def read_run(home: Path, run_id: str | None) -> dict:
    """Per-step wall seconds and per-asset row counts from the run's event log.

    Without a run id: the newest run (a child cut off before it could report). Steps started
    but not finished are in `running`, with their seconds until the last event or now.
    """
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    if run_id is None:
        runs = instance.get_runs(limit=1)
        if not runs:
            return {
                "steps": {},
                "rows": {},
                "render_rates": {},
                "asset_step": {},
                "run_s": 0.0,
                "running": {},
                "intervals": {},
            }
        run_id = runs[0].run_id
    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    rows: dict[str, int] = {}
    render_rates: dict[str, int] = {}  # asset → payloads per CPU second inside the renderer
    asset_step: dict[str, str] = {}
    intervals: dict[str, tuple[float, float]] = {}
    failed: list[str] = []
    run_start = run_end = None
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind == "PIPELINE_START" or kind == "RUN_START":
            run_start = record.timestamp
        elif kind in ("PIPELINE_SUCCESS", "RUN_SUCCESS", "PIPELINE_FAILURE", "RUN_FAILURE"):
            run_end = record.timestamp
        elif kind == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            if kind == "STEP_FAILURE":
                failed.append(event.step_key)
            steps[event.step_key] = record.timestamp - starts[event.step_key]
            intervals[event.step_key] = (starts[event.step_key], record.timestamp)
        elif kind == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            key = materialization.asset_key.to_user_string()
            asset_step[key] = event.step_key
            count = materialization.metadata.get("dagster/row_count")
            if count is not None:
                rows[key] = int(count.value)
            rate = materialization.metadata.get("rendered_per_cpu_s")
            if rate is not None:
                render_rates[key] = int(rate.value)
    now = time.time()
    running = {step: now - t for step, t in starts.items() if step not in steps}
    intervals.update({step: (starts[step], now) for step in running})
    run_s = (run_end or now) - run_start if run_start else sum(steps.values())
    return {
        "steps": steps,
        "rows": rows,
        "render_rates": render_rates,
        "asset_step": asset_step,
        "run_s": run_s,
        "running": running,
        "intervals": intervals,
        "failed": failed,
    }


# ---------------------------------------------------------------------------------------------
# Data


def generate(scale: str, days: int, out: Path, env: dict[str, str]) -> Phase:
    sizes = SCALES[scale]
    cmd = [
        sys.executable,
        "-m",
        "personalization_assets.defs.ingest.sample_data",
        "--landing-dir",
        str(out / "landing"),
        "--customers",
        str(sizes["customers"]),
        "--products",
        str(sizes["products"]),
        "--days",
        str(days),
        "--end-date",
        END_DATE.isoformat(),
    ]
    return run_measured("generate", cmd, env, out / "generate.log")


def landing_day_range(landing: Path) -> tuple[dt.date, dt.date]:
    days = sorted(
        dt.date.fromisoformat(p.name.removeprefix("date="))
        for p in (landing / "events").glob("date=*")
        if p.is_dir()
    )
    return days[0], days[-1]


def append_new_events(landing: Path, share: float, seed: int = 7) -> tuple[dt.date, int]:
    """Write `share` of the event volume as a new landing day, write-then-rename.

    The lines are a random sample of the last day's events (existing customers, products,
    sessions and campaigns), moved one day later with fresh event, session and order ids.
    """
    manifest = json.loads((landing / "_generator_manifest.json").read_text())
    wanted = int(manifest["counts"]["event_lines"] * share)
    _, last = landing_day_range(landing)
    source: list[dict] = []
    for path in sorted((landing / "events" / f"date={last}").glob("*.ndjson")):
        for line in path.read_text().splitlines():
            try:
                event = json.loads(line)
                ts = dt.datetime.fromisoformat(event["timestamp"])
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(event, dict) and ts.date() == last:
                source.append(event)
    rng = random.Random(seed)
    picked = (
        [rng.choice(source) for _ in range(wanted)]
        if wanted > len(source)
        else rng.sample(source, wanted)
    )
    day = last + dt.timedelta(days=1)
    folder = landing / "events" / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, event in enumerate(picked):
        new = dict(event, event_id=f"bench-{day:%Y%m%d}-{i:08d}")
        ts = dt.datetime.fromisoformat(event["timestamp"]) + dt.timedelta(days=1)
        new["timestamp"] = ts.isoformat()
        if new.get("session_id"):
            new["session_id"] = f"{new['session_id']}-n"
        props = new.get("properties")
        if isinstance(props, dict) and props.get("order_id"):
            new["properties"] = dict(props, order_id=f"{props['order_id']}-n")
        lines.append(json.dumps(new, separators=(",", ":")))
    tmp = folder / ".bench_new_events.ndjson.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(folder / "bench_new_events.ndjson")
    return day, len(lines)


# ---------------------------------------------------------------------------------------------
# Report


def machine_details(engine: str = "duckdb") -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions = []
    for dist in ("dagster", "dagster-dbt", "dbt-core", "dbt-duckdb", "duckdb", "xgboost"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    extra = ("pyspark", "dbt-spark") if engine == "spark" else ()
    for dist in ("implicit", "jinja2", "pandas", "numpy", *extra):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kb / 1024**2:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": ", ".join(versions),
    }


def _load(phase: Phase) -> str:
    return f"{phase.load_before[0]:.2f} → {phase.load_after[0]:.2f}"


def _ok(passed: bool) -> str:
    return "met" if passed else "**missed**"


def render_report(
    scale: str,
    days: int,
    gen: Phase | None,
    full: Phase,
    incr: Phase | None,
    counts: dict,
    new_events: int,
    engine: str = "duckdb",
    spark_note: str = "",
) -> str:
    f_run, i_run = full.run, (incr.run if incr else {"steps": {}, "rows": {}})
    machine = machine_details(engine)
    lines = [
        f"## scale {scale}, engine {engine}: {counts.get('customers_rows', 0):,} customer rows, "
        f"{counts.get('products_rows', 0):,} product rows, {counts.get('event_lines', 0):,} "
        f"event lines over {days} days ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, "
        f"{machine['os']}, Python {machine['python']}; {machine['versions']}. "
        "Shared with other work: load average (1 min) before → after each phase below.",
        *([f"Engine: {spark_note}", ""] if spark_note else [""]),
        "| step | full s | incremental s | rows (full) | rows (incremental) "
        "| peak RSS GiB (full / incr.) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    f_cut = f_run.get("running", {})
    steps = list(f_run["steps"]) + list(f_cut)
    steps += [s for s in i_run["steps"] if s not in steps]
    steps.sort(key=lambda s: -max(f_run["steps"].get(s, f_cut.get(s, 0)), i_run["steps"].get(s, 0)))
    for step in steps:
        assets = [a for a, s in f_run["asset_step"].items() if s == step]
        assets += [a for a, s in i_run.get("asset_step", {}).items() if s == step]
        assets = sorted(set(assets))
        f_rows = [f_run["rows"][a] for a in assets if a in f_run["rows"]]
        i_rows = [i_run["rows"][a] for a in assets if a in i_run["rows"]]
        if step in f_cut:
            full_s = f"≥ {f_cut[step]:.1f} (cut off)"
        elif step in f_run.get("failed", []):
            full_s = f"≥ {f_run['steps'][step]:.1f} (stopped)"
        else:
            full_s = _num(f_run["steps"].get(step))
        lines.append(
            f"| {step} | {full_s} | {_num(i_run['steps'].get(step))} "
            f"| {_rows(f_rows, len(assets))} | {_rows(i_rows, len(assets))} "
            f"| {_gib(full.step_peak_rss(step))} / {_gib(incr.step_peak_rss(step) if incr else None)} |"
        )
    f_sum = sum(f_run["steps"].values()) + sum(f_cut.values())
    i_sum = sum(i_run["steps"].values())
    lines += [
        f"| *sum of steps* | {f_sum:.1f} | {i_sum:.1f} | | | |",
        f"| *run (first to last event)* | {f_run['run_s']:.1f} | {_num(i_run.get('run_s'))} | | | |",
        f"| *process wall (imports, definitions, run)* | {full.wall_s:.1f} | "
        f"{_num(incr.wall_s if incr else None)} | | | |",
        "",
    ]
    rendered = f_run["rows"].get("campaigns/email_payloads", 0)
    render_s = f_run["steps"].get(PAYLOAD_STEP, 0.0)
    per_core = rendered / render_s if render_s else 0.0
    incr_share = incr.wall_s / full.wall_s if incr else None
    lines += [
        "| figure | measured | target | |",
        "|---|---:|---:|---|",
        f"| full graph, process wall | {'≥ ' if full.cut_off else ''}{full.wall_s:.1f} s"
        f"{f' (cut off at the {full.cut_reason}: did not finish)' if full.cut_off else ''} | ≤ {TARGET_FULL_S:.0f} s | "
        f"{_ok(full.wall_s <= TARGET_FULL_S and not full.cut_off)} |",
        f"| peak RSS, full run (process tree) | {full.peak_rss / GIB:.2f} GiB | "
        f"≤ {TARGET_RSS_GIB:.0f} GiB | {_ok(full.peak_rss <= TARGET_RSS_GIB * GIB)} |",
    ]
    if incr:
        lines += [
            f"| incremental refresh ({new_events:,} new events = 1%), process wall | "
            f"{incr.wall_s:.1f} s = {incr_share:.1%} of full | ≤ {TARGET_INCREMENTAL_SHARE:.0%} | "
            f"{_ok(incr_share <= TARGET_INCREMENTAL_SHARE)} |",
            f"| peak RSS, incremental (process tree) | {incr.peak_rss / GIB:.2f} GiB | "
            f"≤ {TARGET_RSS_GIB:.0f} GiB | {_ok(incr.peak_rss <= TARGET_RSS_GIB * GIB)} |",
        ]
    lines += [
        f"| rendering: {rendered:,} payloads in the `email_payloads` step ("
        f"{'mapInPandas on 2 executors' if engine == 'spark' else 'one process'}, whole "
        f"step incl. SQL and writes) | {per_core:,.0f} /s/core | ≥ {TARGET_RENDER_PER_CORE:,} "
        f"/s/core | {_ok(per_core >= TARGET_RENDER_PER_CORE)} |",
    ]
    render_rate = f_run.get("render_rates", {}).get("campaigns/email_payloads")
    if render_rate:
        lines.append(
            f"| rendering itself, same step: payloads per CPU second inside the renderer "
            f"(`rendered_per_cpu_s`: contexts in, subject + HTML + text out) | "
            f"{render_rate:,} /s/core | ≥ {TARGET_RENDER_PER_CORE:,} /s/core | "
            f"{_ok(render_rate >= TARGET_RENDER_PER_CORE)} |"
        )
    lines += [
        "",
        "| phase | wall s | peak RSS tree / wait4 (GiB) | load avg |",
        "|---|---:|---:|---|",
    ]
    for phase in (gen, full, incr):
        if phase:
            lines.append(
                f"| {phase.name} | {phase.wall_s:.1f} | {phase.peak_tree_rss / GIB:.2f} / "
                f"{phase.peak_wait4_rss / GIB:.2f} | {_load(phase)} |"
            )
    lines.append("")
    return "\n".join(lines)


def _gib(value: int | None) -> str:
    return "–" if value is None else f"{value / GIB:.2f}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _rows(values: list[int], n_assets: int) -> str:
    if not values:
        return ""
    if n_assets == 1:
        return f"{values[0]:,}"
    return f"{n_assets} assets, max {max(values):,}"


# ---------------------------------------------------------------------------------------------


def _env(out: Path, engine: str = "duckdb") -> dict[str, str]:
    return {
        engines.ENGINE_ENV: engine,
        engines.SPARK_DIR_ENV: str(out / "spark"),
        **os.environ,
        "DAGSTER_HOME": str(out / "dagster_home"),
        "PERSONALIZATION_LANDING_DIR": str(out / "landing"),
        "PERSONALIZATION_DUCKDB_PATH": str(out / "warehouse.duckdb"),
        "PERSONALIZATION_OUTPUT_DIR": str(out / "output"),
        "PERSONALIZATION_MODELS_DIR": str(out / "models"),
        "PERSONALIZATION_CONFIG_DIR": str(out / "config"),
        "OPENBLAS_NUM_THREADS": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def bench_config(target: Path) -> None:
    """config/ as shipped, except delivery's send pacing (the dry-run sender has no ESP) and
    expiry: the generated shop's last send date lies weeks before the wall clock, so at the
    shipped 48 hours most payloads would be `expired` instead of sent."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ROOT / "config", target)
    delivery = target / "delivery.yaml"
    text = delivery.read_text()
    for key, value in (
        ("rate_limit_per_second", UNPACED_RATE),
        ("expire_after_hours", UNEXPIRED_HOURS),
    ):
        text, n = re.subn(rf"^{key}:\s*[0-9.]+", f"{key}: {value}", text, flags=re.MULTILINE)
        if n != 1:
            raise RuntimeError(f"{key} not found in {delivery}")
    delivery.write_text(text)


def _run_job(
    job: str,
    first: dt.date,
    last: dt.date,
    out: Path,
    env: dict[str, str],
    exclude: list[str],
    time_limit: float | None,
    rss_limit: int | None,
    also_sample: tuple[int, ...] = (),
) -> Phase:
    result = out / f"{job}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-job",
        job,
        "--first",
        first.isoformat(),
        "--last",
        last.isoformat(),
        "--result",
        str(result),
        *[f"--exclude={key}" for key in exclude],
    ]
    phase = run_measured(job, cmd, env, out / f"{job}.log", time_limit, rss_limit, also_sample)
    if phase.cut_off:
        phase.run = read_run(out / "dagster_home", None)
        return phase
    outcome = json.loads(result.read_text())
    if not outcome["success"]:
        raise RuntimeError(f"{job} run {outcome['run_id']} failed: {outcome['failed']}")
    phase.run = read_run(out / "dagster_home", outcome["run_id"])
    return phase


@contextlib.contextmanager
def spark_cluster(engine: str, master: str | None, root: Path):
    """(master URL, pids whose RSS counts, a note for the report) for the engine's run; for
    `spark` without a `master`, a standalone master + 2 workers (1 core, 2 GiB each) started here and stopped
    (SIGTERM, then SIGKILL) when the block ends."""
    if engine != "spark":
        yield "", (), ""
        return
    if master:
        yield master, (), f"{master} (a running cluster; its memory is not counted)"
        return
    from socket import socket

    def free_port() -> int:
        with socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    cluster = engines.SparkCluster(
        root=root, master_port=free_port(), master_ui_port=free_port(), workers=2
    )
    try:
        cluster.up()
        pids = tuple(pid for pid in cluster.status().values() if pid)
        yield (
            cluster.master_url,
            pids,
            (
                f"{cluster.master_url} standalone, master + 2 workers (1 core, 2 GiB each) on this "
                "machine, started for the run; dbt-spark session method (a JVM driver per dbt "
                "invocation), xgboost.spark with 2 workers, rendering through mapInPandas"
            ),
        )
    finally:
        cluster.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="10k")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days of history")
    parser.add_argument(
        "--engine",
        choices=engines.ENGINES,
        default=engines.engine(),
        help="duckdb (default: PERSONALIZATION_ENGINE) or spark (a cluster is started for it)",
    )
    parser.add_argument("--spark-master", help="use this running master instead of starting one")
    parser.add_argument("--skip-generate", action="store_true", help="reuse the landing zone")
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ASSET",
        help="leave this asset out of both runs (repeatable), e.g. delivery/email_deliveries",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        help="seconds per job run; past it the run is stopped and reported as cut off",
    )
    parser.add_argument(
        "--rss-limit-gib",
        type=float,
        default=14.0,
        help="stop a run whose process tree exceeds this (the machine is shared; default 14)",
    )
    parser.add_argument("--child-job", help=argparse.SUPPRESS)
    parser.add_argument("--first", help=argparse.SUPPRESS)
    parser.add_argument("--last", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_job:
        args.job = args.child_job
        child_run_job(args)
        return 0

    suffix = "" if args.engine == "duckdb" else f"-{args.engine}"
    out = ROOT / "bench" / "out" / f"scale-{args.scale}{suffix}"
    env = _env(out, args.engine)
    landing = out / "landing"
    gen = None
    if not args.skip_generate:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        print(f"generating {args.scale} ({args.days} days) into {landing} ...", flush=True)
        gen = generate(args.scale, args.days, out, env)
        print(f"  {gen.wall_s:.1f} s, peak RSS {gen.peak_rss / GIB:.2f} GiB", flush=True)
    else:
        # Drop a previous run's appended day and the warehouse: the full run rebuilds it.
        for folder in (landing / "events").glob("date=*"):
            if (folder / "bench_new_events.ndjson").exists():
                shutil.rmtree(folder)
        for name in ("warehouse.duckdb", "warehouse.duckdb.wal", "output", "models"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    shutil.rmtree(out / "dagster_home", ignore_errors=True)
    (out / "dagster_home").mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", out / "dagster_home" / "dagster.yaml")
    bench_config(out / "config")
    counts = json.loads((landing / "_generator_manifest.json").read_text())["counts"]

    limits = (args.time_limit, int(args.rss_limit_gib * GIB))
    first, last = landing_day_range(landing)
    with spark_cluster(args.engine, args.spark_master, out / "spark") as (
        master,
        cluster_pids,
        note,
    ):
        if master:
            env[engines.SPARK_MASTER_ENV] = master
        print(f"full_pipeline over {first}..{last} on {args.engine} ...", flush=True)
        full = _run_job("full_pipeline", first, last, out, env, args.exclude, *limits, cluster_pids)
        print(f"  {full.wall_s:.1f} s, peak RSS {full.peak_rss / GIB:.2f} GiB", flush=True)
        incr, new_events = None, 0
        if not args.skip_incremental and not full.cut_off:
            day, new_events = append_new_events(landing, NEW_EVENT_SHARE)
            print(f"event_refresh over {day} ({new_events:,} new events) ...", flush=True)
            incr = _run_job(
                "event_refresh", day, day, out, env, args.exclude, *limits, cluster_pids
            )
            print(f"  {incr.wall_s:.1f} s, peak RSS {incr.peak_rss / GIB:.2f} GiB", flush=True)

    report = render_report(
        args.scale, args.days, gen, full, incr, counts, new_events, args.engine, note
    )
    if args.exclude:
        report += f"\nLeft out of both runs: {', '.join(args.exclude)}.\n"
    print(report)
    (out / "report.md").write_text(report)
    phases = {p.name: asdict(p) for p in (gen, full, incr) if p}
    (out / "phases.json").write_text(json.dumps(phases, default=str))
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Scale benchmark results\n\n"
            "Appended by `bench/scale_bench.py` (`make bench SCALE=10k|100k|1m`); newest last.\n\n"
        )
    with RESULTS.open("a") as results:
        results.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
