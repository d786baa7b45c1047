"""The erasure tombstone: keyed hashes of erased customers, honoured by the raw loaders.

`privacy.erased_customers` keeps, per erased customer, the HMAC of the customer id and of each
email address it had (never the clear values). The raw loaders call `drop_erased_rows` /
`drop_erased_event_lines` right after copying a landing file in: rows of a tombstoned customer
are deleted there and counted, not quarantined (the quarantine keeps the row's content, which is
exactly what erasure must not do). So a CRM export or event file re-delivered with an erased
customer in it never reaches staging. No Dagster imports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import duckdb

from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.warehouse.summary import table_columns

SCHEMA = "privacy"
TOMBSTONE = f"{SCHEMA}.erased_customers"
USER_ID_PATTERN = r'"user_id"\s*:\s*"([^"]*)"'


def ensure_tombstone(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"create schema if not exists {SCHEMA}")
    con.execute(
        f"""create table if not exists {TOMBSTONE} (
            customer_hash varchar not null, email_hash varchar,
            request_id varchar, erased_at timestamp)"""
    )


def add_to_tombstone(
    con: duckdb.DuckDBPyConnection,
    customers: dict[str, Iterable[str]],
    request_id: str,
    now: dt.datetime,
) -> None:
    """Record `customer id -> emails` as hashes (idempotent per customer and email)."""
    ensure_tombstone(con)
    key = pseudonym.pseudonym_key()
    rows = []
    for customer_id, emails in customers.items():
        id_hash = pseudonym.customer_hash(customer_id, key)
        email_hashes = [pseudonym.email_hash(e, key) for e in sorted(set(emails))] or [None]
        rows += [(id_hash, h, request_id, now) for h in email_hashes]
    con.executemany(
        f"""insert into {TOMBSTONE}
            select $1, $2, $3, $4 where not exists (
                select 1 from {TOMBSTONE}
                where customer_hash = $1 and email_hash is not distinct from $2)""",
        rows,
    )


def tombstoned(con: duckdb.DuckDBPyConnection) -> tuple[set[str], set[str]]:
    """(customer hashes, email hashes) of every erased customer; empty without a tombstone."""
    exists = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [SCHEMA, "erased_customers"],
    ).fetchall()[0][0]
    if not exists:
        return set(), set()
    rows = con.execute(f"select customer_hash, email_hash from {TOMBSTONE}").fetchall()
    return {r[0] for r in rows}, {r[1] for r in rows if r[1]}


def erased_values(values: Iterable[object], kind: str, hashes: set[str]) -> list[str]:
    """The values (ids or emails, as given) whose keyed hash is tombstoned."""
    if not hashes:
        return []
    key = pseudonym.pseudonym_key()
    fn = pseudonym.customer_hash if kind == "customer" else pseudonym.email_hash
    return sorted({str(v) for v in values if v is not None and fn(v, key) in hashes})


def drop_erased_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Delete rows of tombstoned customers (by `customer_id`, and `email` if present); count."""
    id_hashes, email_hashes = tombstoned(con)
    if not id_hashes:
        return 0
    columns = table_columns(con, *table.split("."))
    removed = 0
    for column, kind, hashes, expr in (
        ("customer_id", "customer", id_hashes, "trim(customer_id)"),
        ("email", "email", email_hashes, "lower(trim(email))"),
    ):
        if column not in columns:
            continue
        values = [r[0] for r in con.execute(f"select distinct {expr} from {table}").fetchall()]
        erased = erased_values(values, kind, hashes)
        if erased:
            removed += con.execute(
                f"delete from {table} where {expr} in (select unnest(?))", [erased]
            ).fetchall()[0][0]
    return removed


def drop_erased_event_lines(con: duckdb.DuckDBPyConnection, table: str = "raw.event_lines") -> int:
    """Delete raw event lines whose `user_id` is tombstoned; count them."""
    id_hashes, _ = tombstoned(con)
    if not id_hashes:
        return 0
    expr = f"regexp_extract(raw_line, '{USER_ID_PATTERN}', 1)"
    values = [r[0] for r in con.execute(f"select distinct {expr} from {table}").fetchall()]
    erased = erased_values(values, "customer", id_hashes)
    if not erased:
        return 0
    return con.execute(
        f"delete from {table} where {expr} in (select unnest(?))", [erased]
    ).fetchall()[0][0]
