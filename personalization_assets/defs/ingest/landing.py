"""Copy landing-zone files verbatim into the warehouse's `raw` schema.

The landing zone is a folder of files written by exporters and collectors:

    events/date=YYYY-MM-DD/<name>.ndjson   one JSON event per line, folder = UTC landing day
    crm/<name>.csv                         customer exports
    catalog/<name>.csv                     product exports
    orders/<name>.csv                      historic order exports (layouts in order_imports.yaml)

Writers must use write-then-rename: write `<name>.ndjson.tmp` (or a dot-file) and rename it to
its final name when complete. Only final names are read, so a half-written file is never loaded.

Loading parses nothing and drops nothing: every non-blank line (events) or CSV record becomes a
text row with its file and line/record number; malformed CSV records are kept with the parser's
error. The one exception: rows of customers in the erasure tombstone
(`privacy.erased_customers`) are deleted right after loading and counted in `erased_rows`, so an
erased customer re-delivered by a source never reaches staging. Cleaning and quarantine
happen in dbt. Each load replaces its raw table from the files present, so re-running is
idempotent. No Dagster imports here.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from personalization_assets.defs.ingest.order_imports import (
    CANONICAL_ORDER_COLUMNS,
    OrderImportsConfig,
)
from personalization_assets.defs.privacy import tombstone

RAW_SCHEMA = "raw"
DEFAULT_BATCH_BYTES = 256 * 1024 * 1024  # config/pipeline.yaml ingest.load_batch_mb
EVENT_FOLDER_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")

REQUIRED_CUSTOMER_COLUMNS = ("customer_id", "email", "email_consent")
REQUIRED_PRODUCT_COLUMNS = ("product_id", "price")


class LandingContractError(ValueError):
    """The landing zone does not follow the documented contract (missing folder or columns)."""


@dataclass
class LoadResult:
    """What one load did, for asset metadata and the demo summary."""

    table: str
    rows: int = 0
    files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    malformed_records: int = 0
    message: str = ""
    # Rows of customers in the erasure tombstone, deleted on load (not quarantined).
    erased_rows: int = 0


def event_files(landing_dir: Path) -> tuple[list[Path], list[Path]]:
    """Final-named event files under `events/date=YYYY-MM-DD/`, and files outside the convention."""
    root = landing_dir / "events"
    accepted: list[Path] = []
    skipped: list[Path] = []
    if not root.is_dir():
        return accepted, skipped
    for path in sorted(root.rglob("*")):
        if not path.is_file() or _is_in_progress(path):
            continue
        match = EVENT_FOLDER_RE.match(path.parent.name)
        if path.suffix == ".ndjson" and path.parent.parent == root and match and _valid_day(match):
            accepted.append(path)
        else:
            skipped.append(path)
    return accepted, skipped


def _is_in_progress(path: Path) -> bool:
    return path.name.startswith(".") or path.suffix in {".tmp", ".part", ".partial"}


def _valid_day(match: re.Match[str]) -> bool:
    try:
        dt.date.fromisoformat(match.group(1))
    except ValueError:
        return False
    return True


def csv_files(landing_dir: Path, folder: str) -> list[Path]:
    """Final-named `*.csv` files in one landing sub-folder, sorted by name."""
    root = landing_dir / folder
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*.csv") if p.is_file() and not _is_in_progress(p))


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw schema and the landing-file register if they do not exist."""
    con.execute(f"create schema if not exists {RAW_SCHEMA}")
    con.execute(
        f"""
        create table if not exists {RAW_SCHEMA}.landing_files (
            source_file varchar primary key,
            source varchar,
            size_bytes bigint,
            content_md5 varchar,
            first_loaded_at timestamp,
            last_loaded_at timestamp
        )
        """
    )
    con.execute(
        f"""create table if not exists {RAW_SCHEMA}.event_day_loads (
            landing_date date primary key, reloaded_at timestamp)"""
    )


def _register_files(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    source: str,
    files: Sequence[Path],
    now: dt.datetime,
) -> None:
    """Upsert the files into `raw.landing_files`, keeping each file's first load time."""
    rows = [(_relative(landing_dir, p), source, p.stat().st_size) for p in files]
    con.execute(
        "create or replace temp table _incoming (source_file varchar, source varchar, size_bytes bigint)"
    )
    if rows:
        con.executemany("insert into _incoming values (?, ?, ?)", rows)
    con.execute(
        f"""
        insert into {RAW_SCHEMA}.landing_files
        select source_file, source, size_bytes, null, ?, ?
        from _incoming
        on conflict (source_file) do update set
            size_bytes = excluded.size_bytes,
            last_loaded_at = excluded.last_loaded_at
        """,
        [now, now],
    )


def _relative(landing_dir: Path, path: Path) -> str:
    # absolute(), not resolve(): a symlinked export stays addressed by its landing-zone name.
    return path.absolute().relative_to(landing_dir.absolute()).as_posix()


def load_event_lines(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    now: dt.datetime | None = None,
    days: tuple[dt.date, dt.date] | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> LoadResult:
    """Load every non-blank line of the landing event files into `raw.event_lines`.

    With `days=(first, last)` only those landing days are replaced (a partition or a range of
    them); without, the whole table is. Either way re-running gives the same rows. Files go in
    batches of about `batch_bytes` (one INSERT each, in file order), so memory follows the
    batch, not the landing zone: one statement over 15M lines held every line at once.
    """
    now = now or _utcnow()
    ensure_raw_schema(con)
    files, skipped = event_files(landing_dir)
    if days is not None:
        files = [p for p in files if days[0] <= _landing_day(p) <= days[1]]
    result = LoadResult(
        table=f"{RAW_SCHEMA}.event_lines",
        files=[_relative(landing_dir, p) for p in files],
        skipped_files=[_relative(landing_dir, p) for p in skipped],
    )
    _register_files(con, landing_dir, "events", files, now)
    con.execute(
        f"""create table if not exists {RAW_SCHEMA}.event_lines (
            source_file varchar, landing_date date, line_no bigint,
            raw_line varchar, loaded_at timestamp)"""
    )
    if days is None:
        reloaded = {_landing_day(p) for p in files} | _days_with_lines(con)
        con.execute(f"delete from {RAW_SCHEMA}.event_lines")
    else:
        reloaded = _days_between(*days)
        con.execute(
            f"delete from {RAW_SCHEMA}.event_lines where landing_date between ? and ?", list(days)
        )
    _mark_days_reloaded(con, reloaded, now)
    if not files:
        result.message = _empty_message(landing_dir, "events", "events/date=YYYY-MM-DD/*.ndjson")
        return result
    prefix_len = len(str(landing_dir.absolute())) + 2
    for batch in _batches(files, batch_bytes):
        con.execute(
            f"""
            insert into {RAW_SCHEMA}.event_lines
            with texts as (
                select substr(filename, {prefix_len}) as source_file, content from read_text(?)
            ),
            files as (
                select
                    source_file,
                    cast(regexp_extract(
                        source_file, 'date=([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})', 1
                    ) as date) as landing_date,
                    string_split(content, chr(10)) as lines
                from texts
            ),
            lines as (
                select
                    source_file,
                    landing_date,
                    unnest(lines) as raw_line,
                    unnest(range(1, len(lines) + 1)) as line_no
                from files
            )
            select
                lines.source_file,
                lines.landing_date,
                lines.line_no,
                rtrim(lines.raw_line, chr(13)) as raw_line,
                register.first_loaded_at as loaded_at
            from lines
            join {RAW_SCHEMA}.landing_files as register using (source_file)
            where trim(lines.raw_line) <> ''
            order by lines.source_file, lines.line_no
            """,
            [[str(p.absolute()) for p in batch]],
        )
    result.erased_rows = tombstone.drop_erased_event_lines(con)
    result.rows = con.execute(
        f"select count(*) from {RAW_SCHEMA}.event_lines where source_file in (select unnest(?))",
        [result.files],
    ).fetchall()[0][0]
    return result


def _batches(files: Sequence[Path], batch_bytes: int) -> Iterator[list[Path]]:
    """Consecutive groups of files of about `batch_bytes` together (at least one file each)."""
    batch: list[Path] = []
    size = 0
    for path in files:
        file_size = path.stat().st_size
        if batch and size + file_size > batch_bytes:
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += file_size
    if batch:
        yield batch


def _days_with_lines(con: duckdb.DuckDBPyConnection) -> set[dt.date]:
    rows = con.execute(f"select distinct landing_date from {RAW_SCHEMA}.event_lines").fetchall()
    return {row[0] for row in rows if row[0] is not None}


def _days_between(first: dt.date, last: dt.date) -> set[dt.date]:
    return {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}


def _mark_days_reloaded(
    con: duckdb.DuckDBPyConnection, days: set[dt.date], now: dt.datetime
) -> None:
    """Record that these landing days were replaced at `now`.

    The incremental dbt models re-process exactly the days reloaded since they last ran (a day
    whose files all disappeared is reloaded as empty, so its rows are removed downstream too).
    """
    if days:
        con.executemany(
            f"""insert into {RAW_SCHEMA}.event_day_loads values (?, ?)
                on conflict (landing_date) do update set reloaded_at = excluded.reloaded_at""",
            [(day, now) for day in sorted(days)],
        )


def _landing_day(path: Path) -> dt.date:
    return dt.date.fromisoformat(EVENT_FOLDER_RE.match(path.parent.name).group(1))


def landing_days(landing_dir: Path) -> list[dt.date]:
    """Every landing day that has at least one final-named event file, sorted."""
    return sorted({_landing_day(p) for p in event_files(landing_dir)[0]})


def load_csv_export(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    *,
    folder: str,
    table: str,
    columns: Sequence[str],
    required: Sequence[str],
    now: dt.datetime | None = None,
) -> LoadResult:
    """Replace `raw.<table>` with every record of every CSV in `folder`, all values as text."""
    now = now or _utcnow()
    ensure_raw_schema(con)
    files = csv_files(landing_dir, folder)
    result = LoadResult(
        table=f"{RAW_SCHEMA}.{table}", files=[_relative(landing_dir, p) for p in files]
    )
    _register_files(con, landing_dir, folder, files, now)
    _create_raw_csv_table(con, table, columns)
    if not files:
        result.message = _empty_message(landing_dir, folder, f"{folder}/*.csv")
        return result
    for path in files:
        header = _csv_header(path)
        missing = [c for c in required if c not in header]
        if missing:
            raise LandingContractError(
                f"{_relative(landing_dir, path)}: missing required column(s) {missing}; "
                f"found {header}. Expected columns: {list(columns)}"
            )
        mapping = {c: c for c in columns if c in header}
        result.malformed_records += _insert_csv(
            con, landing_dir, path, table, columns, mapping, extra={}
        )
    result.erased_rows = tombstone.drop_erased_rows(con, result.table)
    result.rows = _count(con, result.table)
    return result


def load_order_exports(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    config: OrderImportsConfig,
    now: dt.datetime | None = None,
) -> LoadResult:
    """Replace `raw.order_lines` with every order-export record, renamed by its layout."""
    now = now or _utcnow()
    ensure_raw_schema(con)
    files = csv_files(landing_dir, "orders")
    result = LoadResult(
        table=f"{RAW_SCHEMA}.order_lines", files=[_relative(landing_dir, p) for p in files]
    )
    _register_files(con, landing_dir, "orders", files, now)
    extra_columns = ("currency", "source_timezone", "layout", "ordered_at_local")
    _create_raw_csv_table(con, "order_lines", (*CANONICAL_ORDER_COLUMNS, *extra_columns))
    for path in files:
        layout = config.layout_for(_csv_header(path), _relative(landing_dir, path))
        extra = {
            "currency": layout.currency,
            "source_timezone": layout.timezone,
            "layout": layout.name,
        }
        # Formats must be constants in DuckDB, so the layout's format is applied here, once per
        # file; the raw text stays in `ordered_at` for the quarantine.
        ordered_at = _sql_ident(layout.columns["ordered_at"])
        parsed = (
            f'strftime(try_strptime(trim("{ordered_at}"), {_sql_literal(layout.timestamp_format)}),'
            " '%Y-%m-%d %H:%M:%S')"
        )
        result.malformed_records += _insert_csv(
            con,
            landing_dir,
            path,
            "order_lines",
            CANONICAL_ORDER_COLUMNS,
            layout.columns,
            extra,
            computed={"ordered_at_local": parsed},
        )
    result.erased_rows = tombstone.drop_erased_rows(con, result.table)
    result.rows = _count(con, result.table)
    if not files:
        result.message = "no order exports in orders/ (optional source): nothing imported"
    return result


def _create_raw_csv_table(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str]
) -> None:
    column_sql = ", ".join(f'"{c}" varchar' for c in columns)
    con.execute(
        f"""create or replace table {RAW_SCHEMA}.{table} (
            source_file varchar, row_no bigint, loaded_at timestamp, {column_sql},
            malformed_error varchar, malformed_record varchar)"""
    )


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = handle.readline().rstrip("\r\n")
    return [h.strip() for h in next(csv.reader([first]), [])]


def _insert_csv(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    path: Path,
    table: str,
    columns: Sequence[str],
    mapping: dict[str, str],
    extra: dict[str, str],
    computed: dict[str, str] | None = None,
) -> int:
    """Insert one CSV's records (and its malformed records) into `raw.<table>`; return #malformed."""
    source_file = _relative(landing_dir, path)
    select_cols = []
    for column in columns:
        source = mapping.get(column)
        select_cols.append(f'"{_sql_ident(source)}"' if source else "null")
    computed = computed or {}
    extra_sql = ", ?" * len(extra) + "".join(f", {expr}" for expr in computed.values())
    target_cols = ", ".join(f'"{c}"' for c in (*columns, *extra, *computed))
    con.execute("drop table if exists _csv_rejects")
    con.execute("drop table if exists _csv_reject_scans")
    con.execute(
        """
        create or replace temp table _csv_rows as
        select * from read_csv(?, all_varchar = true, header = true, delim = ',', quote = '"',
                               escape = '"', auto_detect = false, columns = ?,
                               store_rejects = true, rejects_table = '_csv_rejects',
                               rejects_scan = '_csv_reject_scans') with ordinality
        """,
        [str(path), _csv_columns(path)],
    )
    # `ordinality` counts parsed records only; rejected records report their record number
    # (header = 1). Number every record by its place in the file: the o-th parsed record is
    # record o + (rejected records that have fewer than o parsed records before them).
    first_loaded = _first_loaded(con, source_file)
    con.execute(
        f"""
        insert into {RAW_SCHEMA}.{table} (source_file, row_no, loaded_at, {target_cols})
        with rejected as (
            select line - 1 - row_number() over (order by line) as parsed_before
            from _csv_rejects
        )
        select ?, ordinality + (select count(*) from rejected where parsed_before < ordinality),
               ?, {", ".join(select_cols)}{extra_sql}
        from _csv_rows
        """,
        [source_file, first_loaded, *extra.values()],
    )
    malformed = con.execute(
        f"""
        insert into {RAW_SCHEMA}.{table}
            (source_file, row_no, loaded_at, malformed_error, malformed_record)
        select ?, line - 1, ?, error_type || ': ' || error_message, csv_line
        from _csv_rejects
        returning 1
        """,
        [source_file, first_loaded],
    ).fetchall()
    return len(malformed)


def _csv_columns(path: Path) -> dict[str, str]:
    return {name: "VARCHAR" for name in _csv_header(path)}


def _first_loaded(con: duckdb.DuckDBPyConnection, source_file: str) -> dt.datetime:
    row = con.execute(
        f"select first_loaded_at from {RAW_SCHEMA}.landing_files where source_file = ?",
        [source_file],
    ).fetchone()
    return row[0]


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_ident(name: str) -> str:
    return name.replace('"', '""')


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"select count(*) from {table}").fetchone()[0]


def _empty_message(landing_dir: Path, folder: str, pattern: str) -> str:
    if not (landing_dir / folder).is_dir():
        return (
            f"landing folder {landing_dir / folder} does not exist: nothing loaded. "
            f"Expected files like {landing_dir / pattern} (run `make demo` to generate sample data, "
            f"or set PERSONALIZATION_LANDING_DIR)."
        )
    return f"no files matching {pattern} in {landing_dir}: nothing loaded"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
