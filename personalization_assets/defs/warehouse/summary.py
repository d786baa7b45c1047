"""Read-only questions about the warehouse: row counts, quarantine by reason. No Dagster imports."""

from __future__ import annotations

import duckdb

SUMMARY_TABLES = (
    ("raw", "event_lines"),
    ("raw", "customers"),
    ("raw", "products"),
    ("raw", "order_lines"),
    ("main", "fct_events"),
    ("main", "fct_orders"),
    ("main", "fct_order_lines"),
    ("main", "dim_customers"),
    ("main", "dim_customer_contacts"),
    ("main", "dim_products"),
    ("main", "quarantined_rows"),
    ("main", "event_duplicates"),
    ("main", "customer_features"),
    ("main", "customer_feature_snapshots"),
    ("segments", "customer_segments"),
)


def table_row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every base table, keyed by `schema.table`."""
    tables = con.execute(
        "select schema_name, table_name from duckdb_tables() where not internal and not temporary"
    ).fetchall()
    return {
        f"{schema}.{table}": con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
        for schema, table in tables
    }


def segment_sizes(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(segment_type, segment, customers), largest first within each type."""
    if not table_exists(con, "segments", "customer_segments"):
        return []
    return con.execute(
        "select segment_type, segment, count(*) from segments.customer_segments "
        "group by all order by 1, 3 desc, 2"
    ).fetchall()


def quarantine_by_reason(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(source, reason, rows) for every quarantine reason, most frequent first."""
    if not table_exists(con, "main", "quarantined_rows"):
        return []
    return con.execute(
        """
        select source, reason, count(*) as n
        from main.quarantined_rows
        group by source, reason
        order by n desc, source, reason
        """
    ).fetchall()


def reconciliation(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """The ingest_reconciliation mart: received, accepted, quarantined, duplicates per source."""
    if not table_exists(con, "main", "ingest_reconciliation"):
        return []
    return con.execute(
        """
        select source, rows_received, rows_accepted, rows_quarantined, rows_duplicate, unaccounted
        from main.ingest_reconciliation order by source
        """
    ).fetchall()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether `schema.table` exists (a base table)."""
    return bool(
        con.execute(
            "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
    )


def table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> set[str]:
    """The column names of `schema.table` (empty when it does not exist)."""
    return {
        row[0]
        for row in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()
    }
