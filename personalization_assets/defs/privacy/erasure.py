"""Erase customers from every place the engine keeps them. No Dagster imports.

`erase_customers` takes customer ids and removes, per customer:

- **warehouse**: every row, in every base table of every schema (found in DuckDB's
  `information_schema`, so new tables are covered without a list here), whose customer-id
  column (`customer_id`, `user_id`) equals the id, whose `customer_key` column (the pseudonymized
  analytics layers: features, segments, models) equals the customer's keyed hash, or whose other
  text columns contain the id as a whole token (`raw_line`, `raw_content`, `malformed_record`,
  HTML, headers, ...), the keyed hash, or one of the customer's email addresses (also
  URL-encoded). Excluded: views (derived from the tables); the `privacy` schema (tombstone and
  log hold keyed hashes only); columns named `*_id` other than the customer-id ones and
  `idempotency_key` are not token-scanned (a numeric customer id could equal an invoice or
  product number there).
- **files** under the landing zone, the output folder and the models folder (searched for the
  id, the emails and the keyed hash): NDJSON/JSONL lines and CSV records mentioning the
  customer are dropped (rewritten to a dot-file, then renamed over the original); JSON/text/YAML
  files get the mentions replaced by `[erased]`; other DuckDB files (e.g. the serving snapshot)
  are erased like the warehouse; the ALS state (users keyed by customer_key) loses the
  customer's user-factor and matrix rows; any other file mentioning them (HTML previews, .eml,
  binaries) is deleted. A file that cannot be cleaned (e.g. a DuckDB file locked by a server) is
  reported in `errors`; re-run the request once it is free.
- a **tombstone** (`privacy.erased_customers`: keyed hashes of id and emails, written first so
  an interrupted erasure is safe to re-run) that the raw loaders honour, and an **erasure log**
  (`privacy.erasure_log`: request id, customer hash, who, when, location, rows/lines removed).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import pickle
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import duckdb
import numpy as np

from personalization_assets.defs.privacy import pseudonym, tombstone

ERASURE_LOG = f"{tombstone.SCHEMA}.erasure_log"
ID_COLUMNS = ("customer_id", "user_id")
# Pseudonymized analytics tables: the key is `pseudonym.customer_hash(id)` (see pseudonym.py).
KEY_COLUMNS = ("customer_key",)
ID_SQL = "regexp_replace(lower(trim(cast(\"{column}\" as varchar))), '\\.0+$', '')"
EMAIL_COLUMNS = ("email", "to_address")
NOT_SCANNED = ("idempotency_key",)
EXCLUDED_SCHEMAS = (tombstone.SCHEMA, "information_schema", "pg_catalog")
ALS_STATE = "als_state.pkl"
REDACTED = "[erased]"
# Structured text where replacing the id/email keeps the file valid; any other file that
# mentions an erased customer (HTML previews, .eml, ...) may hold their name too: deleted.
REDACTED_SUFFIXES = {".json", ".txt", ".log", ".md", ".yaml", ".yml"}
TEXT_TYPES = ("VARCHAR", "JSON")


class ErasureError(ValueError):
    """An erasure request that cannot be honoured as given (e.g. no customer ids)."""


@dataclass
class Customer:
    customer_id: str
    emails: set[str] = field(default_factory=set)

    @property
    def hash(self) -> str:
        return pseudonym.customer_hash(self.customer_id)

    def patterns(self) -> list[str]:
        """Text that identifies the customer besides the id token: emails and the keyed hash."""
        emails = sorted(self.emails)
        return [*emails, *(quote(e, safe="") for e in emails), self.hash]


@dataclass
class ErasureReport:
    request_id: str
    requested_at: dt.datetime
    requested_by: str
    customers: list[Customer]
    removed: Counter = field(default_factory=Counter)  # (customer hash, location) -> count
    errors: list[str] = field(default_factory=list)

    def by_location(self) -> dict[str, int]:
        totals: Counter = Counter()
        for (_, location), n in self.removed.items():
            totals[location] += n
        return dict(sorted(totals.items()))


@dataclass
class Places:
    landing_dir: Path
    output_dir: Path
    models_dir: Path
    warehouse_path: Path | None = None


def erase_customers(
    con: duckdb.DuckDBPyConnection,
    customer_ids: Sequence[str],
    places: Places,
    *,
    requested_by: str = "unknown",
    now: dt.datetime | None = None,
    request_id: str | None = None,
) -> ErasureReport:
    """Erase the customers everywhere and log it; safe to re-run with the same ids."""
    ids = sorted({pseudonym.normalize_id(c) for c in customer_ids if str(c).strip()})
    if not ids:
        raise ErasureError("no customer ids given: nothing to erase")
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    customers = _with_emails(con, ids, places.landing_dir)
    report = ErasureReport(
        request_id=request_id or uuid.uuid4().hex,
        requested_at=now,
        requested_by=requested_by,
        customers=customers,
    )
    tombstone.add_to_tombstone(
        con, {c.customer_id: c.emails for c in customers}, report.request_id, now
    )
    _erase_warehouse(con, customers, report, location_prefix="warehouse")
    _erase_files(customers, places, report)
    _write_log(con, report, dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0))
    con.execute("checkpoint")
    return report


# --------------------------------------------------------------------------- who they are


def _with_emails(
    con: duckdb.DuckDBPyConnection, ids: list[str], landing_dir: Path
) -> list[Customer]:
    """Each customer with every email address the warehouse or the CRM files hold for it."""
    customers = {i: Customer(i) for i in ids}
    for schema, table, columns in _tables(con):
        id_cols = [c for c, _ in columns if c in ID_COLUMNS]
        email_cols = [c for c, _ in columns if c in EMAIL_COLUMNS]
        for id_col in id_cols:
            for email_col in email_cols:
                rows = con.execute(
                    f'select distinct cast("{id_col}" as varchar), lower(trim("{email_col}")) '
                    f'from "{schema}"."{table}" where {ID_SQL.format(column=id_col)} '
                    "in (select unnest(?))",
                    [ids],
                ).fetchall()
                for customer_id, email in rows:
                    if email:
                        customers[pseudonym.normalize_id(customer_id)].emails.add(email)
    for path in (
        sorted((landing_dir / "crm").glob("*.csv")) if (landing_dir / "crm").is_dir() else []
    ):
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                customer_id = pseudonym.normalize_id(row.get("customer_id") or "")
                email = (row.get("email") or "").strip().lower()
                if customer_id in customers and email:
                    customers[customer_id].emails.add(email)
    return list(customers.values())


# --------------------------------------------------------------------------- warehouse


def _tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(schema, table, [(column, type)]) of every base table outside the excluded schemas."""
    rows = con.execute(
        """
        select c.table_schema, c.table_name, c.column_name, c.data_type
        from information_schema.columns c
        join information_schema.tables t
          on t.table_catalog = c.table_catalog and t.table_schema = c.table_schema
         and t.table_name = c.table_name
        where t.table_type = 'BASE TABLE' and t.table_catalog = current_database()
          and c.table_schema not in (select unnest(?))
        order by c.table_schema, c.table_name, c.ordinal_position
        """,
        [list(EXCLUDED_SCHEMAS)],
    ).fetchall()
    tables: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, data_type in rows:
        tables.setdefault((schema, table), []).append((column, data_type))
    return [(s, t, cols) for (s, t), cols in tables.items()]


def _token_regex(customer: Customer) -> str:
    """RE2 pattern: the id as a whole token, or any of the emails (case-insensitive).

    A token is delimited by anything but a letter, digit, `_` or `@`: `c1` matches in
    `"user_id":"c1"` and `13085.0`, not in `c10` or in the address `c1@example.net`.
    """
    token = re.escape(customer.customer_id)
    parts = [rf"(?i:(^|[^A-Za-z0-9_@]){token}([^A-Za-z0-9_@]|$))"]
    parts += [f"(?i:{re.escape(p)})" for p in customer.patterns()]
    return "|".join(parts)


def _is_scanned_text(column: str, data_type: str) -> bool:
    if column in NOT_SCANNED or column in KEY_COLUMNS:
        return False
    if column.endswith("_id") and column not in ID_COLUMNS:
        return False
    return any(t in data_type.upper() for t in TEXT_TYPES)


def _erase_warehouse(
    con: duckdb.DuckDBPyConnection,
    customers: list[Customer],
    report: ErasureReport,
    location_prefix: str,
) -> None:
    """Delete the customers' rows from every base table, in one transaction."""
    con.execute("begin transaction")
    try:
        for schema, table, columns in _tables(con):
            for customer in customers:
                where, params = _row_filter(columns, customer)
                if not where:
                    continue
                removed = con.execute(
                    f'delete from "{schema}"."{table}" where {where}', params
                ).fetchall()[0][0]
                if removed:
                    report.removed[(customer.hash, f"{location_prefix}:{schema}.{table}")] += (
                        removed
                    )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


def _row_filter(columns: list[tuple[str, str]], customer: Customer) -> tuple[str, list]:
    conditions: list[str] = []
    params: list = []
    for column, data_type in columns:
        if column in ID_COLUMNS:
            conditions.append(f"{ID_SQL.format(column=column)} = ?")
            params.append(customer.customer_id)
        elif column in KEY_COLUMNS:
            conditions.append(f'lower(trim(cast("{column}" as varchar))) = ?')
            params.append(customer.hash)
        elif column in EMAIL_COLUMNS and customer.emails:
            conditions.append(f'lower(trim("{column}")) in (select unnest(?))')
            params.append(sorted(customer.emails))
        if _is_scanned_text(column, data_type):
            conditions.append(f'regexp_matches(cast("{column}" as varchar), ?)')
            params.append(_token_regex(customer))
    return " or ".join(conditions), params


# --------------------------------------------------------------------------- files


class _Matcher:
    """Finds the customers' id tokens and emails in text; a substring test runs first (fast)."""

    def __init__(self, customers: list[Customer]):
        self.owner: dict[str, Customer] = {}
        alternatives = []
        for customer in customers:
            self.owner[customer.customer_id.lower()] = customer
            token = re.escape(customer.customer_id)
            alternatives.append(rf"(?<![A-Za-z0-9_@]){token}(?![A-Za-z0-9_@])")
            for pattern in customer.patterns():
                self.owner[pattern.lower()] = customer
                alternatives.append(re.escape(pattern))
        self.needles = sorted(self.owner)
        self.ids = {c.customer_id: c for c in customers}
        self.email_needles = sorted(n for n in self.owner if n not in self.ids)
        self.regex = re.compile("|".join(alternatives), re.IGNORECASE)

    def search(self, text: str) -> Customer | None:
        lowered = text.lower()
        if not any(n in lowered for n in self.needles):
            return None
        match = self.regex.search(text)
        return self.owner[match.group(0).lower()] if match else None

    def search_record(self, text: str, fields: list[str], id_columns: list[int]) -> Customer | None:
        """A CSV record: ids only in the id columns (when there are any), emails anywhere."""
        if not id_columns:
            return self.search(text)
        for index in id_columns:
            value = fields[index] if index < len(fields) else ""
            customer = self.ids.get(pseudonym.normalize_id(value))
            if customer:
                return customer
        lowered = text.lower()
        return next((self.owner[n] for n in self.email_needles if n in lowered), None)

    def all(self, text: str) -> list[Customer]:
        return [self.owner[m.group(0).lower()] for m in self.regex.finditer(text)]

    def redact(self, text: str) -> str:
        return self.regex.sub(REDACTED, text)


def _erase_files(customers: list[Customer], places: Places, report: ErasureReport) -> None:
    matcher = _Matcher(customers)
    skip = set()
    if places.warehouse_path is not None:
        skip = {places.warehouse_path.resolve(), Path(f"{places.warehouse_path}.wal").resolve()}
    for label, root in (
        ("landing", places.landing_dir),
        ("output", places.output_dir),
        ("models", places.models_dir),
    ):
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.resolve() in skip or path.suffix == ".wal":
                continue
            if label == "landing" and (path.name.startswith(".") or path.suffix == ".tmp"):
                continue  # still being written: the tombstone catches it once renamed
            location = f"{label}:{path.relative_to(root).as_posix()}"
            try:
                _erase_file(path, location, customers, matcher, report)
            except (OSError, duckdb.Error, pickle.UnpicklingError) as error:
                report.errors.append(f"{location}: {type(error).__name__}: {error}")


def _erase_file(path, location, customers, matcher, report) -> None:
    suffix = path.suffix.lower()
    if suffix == ".duckdb":
        con = duckdb.connect(str(path))
        try:
            _erase_warehouse(con, customers, report, location_prefix=location)
            con.execute("checkpoint")
        finally:
            con.close()
        return
    if path.name == ALS_STATE:
        _erase_als_state(path, customers, location, report)
        return
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if any(_bytes_mention(data, c) for c in customers):
            path.unlink()
            report.removed[
                (_first_owner(data, customers), location + " (binary file deleted)")
            ] += 1
        return
    first = matcher.search(text)
    if first is None:
        return
    if suffix in {".ndjson", ".jsonl"}:
        kept, removed = _filter_lines(text.splitlines(keepends=True), matcher, header=False)
        _replace(path, "".join(kept))
    elif suffix == ".csv":
        kept, removed = _filter_csv(text, matcher)
        _replace(path, kept)
    elif suffix in REDACTED_SUFFIXES:
        removed = Counter(c.hash for c in matcher.all(text))
        _replace(path, matcher.redact(text))
        location += " (redacted)"
    else:
        path.unlink()
        removed = Counter({first.hash: 1})
        location += " (deleted)"
    for customer_hash, n in removed.items():
        report.removed[(customer_hash, location)] += n


def _filter_lines(lines: list[str], matcher: _Matcher, header: bool) -> tuple[list[str], Counter]:
    kept: list[str] = []
    removed: Counter = Counter()
    for number, line in enumerate(lines):
        customer = None if (header and number == 0) else matcher.search(line)
        if customer:
            removed[customer.hash] += 1
        else:
            kept.append(line)
    return kept, removed


CSV_ID_HEADERS = {"customer_id", "customerid", "customer id", "user_id", "userid"}


def _filter_csv(text: str, matcher: _Matcher) -> tuple[str, Counter]:
    """Drop matching records; byte-preserving unless a quoted field spans lines.

    With a customer-id column in the header (`customer_id`, `Customer ID`, ...) an id matches
    only there (a numeric id could equal a StockCode or invoice number elsewhere); emails match
    in any field. Without one, an id token anywhere in the record matches.
    """
    lines = text.splitlines(keepends=True)
    header = next(csv.reader(lines[:1]), [])
    id_columns = [i for i, h in enumerate(header) if h.strip().lower() in CSV_ID_HEADERS]
    if all(line.count('"') % 2 == 0 for line in lines):
        kept, removed = [], Counter()
        for number, line in enumerate(lines):
            record = next(csv.reader([line]), []) if number else []
            customer = matcher.search_record(line, record, id_columns) if number else None
            if customer:
                removed[customer.hash] += 1
            else:
                kept.append(line)
        return "".join(kept), removed
    records = list(csv.reader(io.StringIO(text, newline="")))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if "\r\n" in text else "\n")
    removed = Counter()
    for number, record in enumerate(records):
        customer = matcher.search_record(",".join(record), record, id_columns) if number else None
        if customer:
            removed[customer.hash] += 1
        else:
            writer.writerow(record)
    return out.getvalue(), removed


def _replace(path: Path, text: str) -> None:
    """Write-then-rename through a dot-file, which the loaders never read."""
    tmp = path.with_name(f".{path.name}.erasing")
    tmp.write_text(text, encoding="utf-8", newline="")
    stat = path.stat()
    os.chmod(tmp, stat.st_mode & 0o777)
    tmp.replace(path)


def _bytes_mention(data: bytes, customer: Customer) -> bool:
    needles = [customer.customer_id, *customer.patterns()]
    return any(n.encode("utf-8") in data for n in needles)


def _first_owner(data: bytes, customers: list[Customer]) -> str:
    return next(c.hash for c in customers if _bytes_mention(data, c))


def _erase_als_state(path: Path, customers: list[Customer], location: str, report) -> None:
    """Drop the customers' rows from the ALS user factors and the interaction matrices.

    Users are customer keys (pseudonymized); a state written before that holds ids: both match."""
    model, matrix = pickle.loads(path.read_bytes())
    ids = np.asarray(matrix.user_ids)
    as_text = np.array([pseudonym.normalize_id(i) for i in ids], dtype=object)
    wanted = {c.customer_id: c for c in customers} | {c.hash: c for c in customers}
    drop = np.array([t in wanted for t in as_text], dtype=bool)
    if not drop.any():
        return
    keep = np.flatnonzero(~drop)
    matrix.user_items = matrix.user_items[keep]
    matrix.purchased = matrix.purchased[keep]
    matrix.user_ids = ids[keep]
    factors = np.asarray(model.user_factors)
    model.user_factors = factors[keep[keep < factors.shape[0]]]
    if hasattr(model, "_user_norms"):
        model._user_norms = None
    tmp = path.with_name(f".{path.name}.erasing")
    tmp.write_bytes(pickle.dumps((model, matrix)))
    tmp.replace(path)
    for text in as_text[drop]:
        report.removed[(wanted[text].hash, location + " (user factors)")] += 1


# --------------------------------------------------------------------------- log


def ensure_log(con: duckdb.DuckDBPyConnection) -> None:
    tombstone.ensure_tombstone(con)
    con.execute(
        f"""create table if not exists {ERASURE_LOG} (
            request_id varchar, customer_hash varchar, requested_by varchar,
            requested_at timestamp, completed_at timestamp, location varchar, removed bigint)"""
    )


def _write_log(con: duckdb.DuckDBPyConnection, report: ErasureReport, done: dt.datetime) -> None:
    """One row per customer and touched location; a `none` row for a customer found nowhere."""
    ensure_log(con)
    rows = [
        (report.request_id, h, report.requested_by, report.requested_at, done, loc, n)
        for (h, loc), n in sorted(report.removed.items())
    ]
    touched = {h for h, _ in report.removed}
    rows += [
        (report.request_id, c.hash, report.requested_by, report.requested_at, done, "none", 0)
        for c in report.customers
        if c.hash not in touched
    ]
    con.executemany(f"insert into {ERASURE_LOG} values (?, ?, ?, ?, ?, ?, ?)", rows)


def summary_rows(report: ErasureReport) -> Iterable[tuple[str, int]]:
    return report.by_location().items()
