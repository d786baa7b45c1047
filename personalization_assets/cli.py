"""`personalization` command line: sample data, manifest preparation, the demo run, summaries.

personalization demo        generate sample data if absent, run the full graph, print a summary
personalization generate    write the sample landing zone (see --help for scale options)
personalization prepare     build the dbt manifest if any dbt file changed
personalization summary     print the warehouse summary of the last run
personalization erase       erase customers everywhere (--customer-id c1 --customer-id c2)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from personalization_assets import paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="personalization", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate sample data if absent, run everything, summarize")
    demo.add_argument(
        "--scale", default="demo", help="sample scale when generating (demo|10k|100k|1m)"
    )
    demo.add_argument("--job", default="full_pipeline", help="job to run (default: full_pipeline)")
    sub.add_parser("generate", help="write the sample landing zone", add_help=False)
    sub.add_parser("prepare", help="prepare the dbt manifest")
    sub.add_parser("summary", help="print the warehouse summary")
    erase = sub.add_parser("erase", help="erase customers (GDPR/CCPA) from every layer")
    erase.add_argument(
        "--customer-id", action="append", required=True, dest="customer_ids", help="repeatable"
    )
    erase.add_argument("--requested-by", default="", help="who asked (default: the OS user)")
    args, rest = parser.parse_known_args(argv)

    if args.command == "generate":
        from personalization_assets.defs.ingest import sample_data

        sample_data.main(["--landing-dir", str(paths.landing_dir()), *rest])
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "prepare":
        from personalization_assets.defs.warehouse.project import prepare_manifest

        print(f"dbt manifest ready: {prepare_manifest()}")
        return 0
    if args.command == "summary":
        print(render_summary())
        return 0
    if args.command == "erase":
        return run_erase(args.customer_ids, args.requested_by)
    return run_demo(scale=args.scale, job_name=args.job)


def run_demo(*, scale: str, job_name: str) -> int:
    """Generate sample data when the landing zone is empty, run the job, print the summary."""
    landing = paths.landing_dir()
    if not (landing / "events").is_dir():
        from personalization_assets.defs.ingest import sample_data

        print(f"No landing zone at {landing}: generating the '{scale}' sample shop…")
        sample_data.main(["--landing-dir", str(landing), "--scale", scale])
    from personalization_assets.defs.warehouse.project import prepare_manifest

    prepare_manifest()
    import dagster as dg

    from personalization_assets.definitions import defs

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    instance = instance or dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    print(f"Running job {job_name} (in-process; `make dev` shows the run in the UI)...", flush=True)
    from personalization_assets.defs.automation.jobs import range_tags
    from personalization_assets.defs.ingest.landing import landing_days
    from personalization_assets.defs.warehouse.assets import FULL_REFRESH_TAG

    days = landing_days(landing)
    if not days:
        print(
            f"No event files under {landing}/events/date=YYYY-MM-DD/: nothing to run.",
            file=sys.stderr,
        )
        return 1
    result = (
        defs()
        .resolve_job_def(job_name)
        .execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config=quiet,
            # The demo rebuilds every landing day from scratch, like the nightly schedule.
            tags={**range_tags(days[0], days[-1]), FULL_REFRESH_TAG: "true"},
        )
    )
    elapsed = time.perf_counter() - started
    print(render_summary())
    failed_checks = _failed_checks(result)
    print(
        f"\nRun {result.run_id} ({job_name}): {'succeeded' if result.success else 'FAILED'} "
        f"in {elapsed:.1f} s; failed checks: {', '.join(failed_checks) or 'none'}"
    )
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                print(f"  step failed: {event.step_key}: {event.message}", file=sys.stderr)
        return 1
    return 0


def run_erase(customer_ids: list[str], requested_by: str) -> int:
    """Run the `erase_customers` job in-process on an ephemeral instance.

    Ephemeral on purpose: a run in Dagster's persistent storage would keep the clear ids in its
    run config. The erasure log in the warehouse (hashes only) is the durable record.
    """
    import getpass

    import dagster as dg

    from personalization_assets.definitions import defs

    config = {
        "customer_ids": customer_ids,
        "requested_by": requested_by or f"cli:{getpass.getuser()}",
    }
    result = (
        defs()
        .resolve_job_def("erase_customers")
        .execute_in_process(
            run_config={
                "ops": {"erase_customers_op": {"config": config}},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    )
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                print(f"erasure failed: {event.message}", file=sys.stderr)
        return 1
    output = result.output_for_node("erase_customers_op")
    print(f"Erasure {output['request_id']}: {len(set(customer_ids))} customer(s)")
    for location, removed in output["removed"].items():
        print(f"  {location:<64} {removed:>8,}")
    if not output["removed"]:
        print("  nothing found (tombstone recorded: later loads will still drop them)")
    return 0


def _failed_checks(result) -> list[str]:
    failed = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                failed.append(evaluation.asset_check_key.to_user_string())
    return failed


def render_summary() -> str:
    """A plain-text summary of the warehouse: rows per table, quarantine by reason, outputs."""
    import duckdb

    from personalization_assets.defs.warehouse import summary

    database = paths.duckdb_path()
    if not database.exists():
        return f"No warehouse at {database} yet: run `make demo`."
    con = duckdb.connect(str(database), read_only=True)
    try:
        counts = summary.table_row_counts(con)
        reasons = summary.quarantine_by_reason(con)
        reconciliation = summary.reconciliation(con)
        segments = summary.segment_sizes(con)
    finally:
        con.close()
    lines = ["", "Rows per table", "--------------"]
    for schema, table in summary.SUMMARY_TABLES:
        if f"{schema}.{table}" in counts:
            lines.append(f"  {schema + '.' + table:<36} {counts[f'{schema}.{table}']:>12,}")
    lines += [
        "",
        "Ingest reconciliation (received = accepted + quarantined + duplicates)",
        "-----------------------------------------------------------------------",
        f"  {'source':<10} {'received':>10} {'accepted':>10} {'quarantined':>12} "
        f"{'duplicates':>11} {'unaccounted':>12}",
    ]
    for source, received, accepted, quarantined, duplicates, unaccounted in reconciliation:
        lines.append(
            f"  {source:<10} {received:>10,} {accepted:>10,} {quarantined:>12,} "
            f"{duplicates:>11,} {unaccounted:>12,}"
        )
    lines += ["", "Quarantined rows by reason", "--------------------------"]
    lines += [f"  {source:<10} {reason:<24} {n:>8,}" for source, reason, n in reasons] or ["  none"]
    lines += ["", "Segment sizes", "-------------"]
    lines += [f"  {kind:<5} {name:<32} {n:>8,}" for kind, name, n in segments] or ["  none yet"]
    lines += [
        "",
        "Where things are",
        "----------------",
        f"  landing zone  {paths.landing_dir()}",
        f"  warehouse     {database}",
        f"  outputs       {paths.output_dir()}",
        "  UI            make dev  →  http://127.0.0.1:3000",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
