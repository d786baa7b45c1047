"""Compare a table of the DuckDB warehouse with the same table built by Spark.

Spark's tables are Parquet folders under `<spark dir>/warehouse/<schema>.db/<table>/`; DuckDB
reads them directly, so both sides are compared in one DuckDB session. Rows are matched on the
table's key (order-independent); every other column must be equal after normalising types
(Spark writes decimals and ints where DuckDB has doubles and bigints; timestamps come back as
UTC-adjusted): text, booleans, dates and timestamps exactly, numbers within `rel_tol` of
each other (1e-9: the last bits of a double computed in another order, never a rounding step),
or within `abs_tol[column]` where a column is known to differ by more (stated by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DOUBLE", "FLOAT", "DECIMAL")


@dataclass
class TableDiff:
    table: str
    duckdb_rows: int
    spark_rows: int
    keys_only_in_duckdb: int = 0
    keys_only_in_spark: int = 0
    duplicate_keys: int = 0
    columns_missing_in_spark: list[str] = field(default_factory=list)
    mismatches: dict[str, list[tuple]] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not (
            self.keys_only_in_duckdb
            or self.keys_only_in_spark
            or self.duplicate_keys
            or self.columns_missing_in_spark
            or self.mismatches
            or self.duckdb_rows != self.spark_rows
        )


def spark_table_glob(spark_dir: Path, schema: str, table: str) -> str:
    return str(spark_dir / "warehouse" / f"{schema}.db" / table / "*.parquet")


def compare_table(
    duckdb_path: Path,
    spark_dir: Path,
    table: str,
    keys: tuple[str, ...],
    schema: str = "main",
    rel_tol: float = 1e-9,
    abs_tol: dict[str, float] | None = None,
    sample: int = 3,
) -> TableDiff:
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"attach '{duckdb_path}' as duck (read_only)")
        columns = con.execute(
            "select column_name, data_type from duckdb_columns() "
            "where database_name = 'duck' and schema_name = ? and table_name = ? "
            "order by column_index",
            [schema, table],
        ).fetchall()
        kinds = dict(columns)
        select = ", ".join(_normalised(name, kind) for name, kind in columns)
        con.execute(f"create view d as select {select} from duck.{schema}.{table}")
        spark_columns = {
            row[0]
            for row in con.execute(
                f"describe select * from read_parquet('{spark_table_glob(spark_dir, schema, table)}')"
            ).fetchall()
        }
        diff = TableDiff(
            table=table,
            duckdb_rows=con.execute("select count(*) from d").fetchall()[0][0],
            spark_rows=con.execute(
                f"select count(*) from read_parquet('{spark_table_glob(spark_dir, schema, table)}')"
            ).fetchall()[0][0],
            columns_missing_in_spark=[name for name in kinds if name not in spark_columns],
        )
        if diff.columns_missing_in_spark:
            return diff
        con.execute(
            f"create view s as select {select} "
            f"from read_parquet('{spark_table_glob(spark_dir, schema, table)}')"
        )
        key_list = ", ".join(f'"{k}"' for k in keys)
        diff.duplicate_keys = con.execute(
            f"select count(*) from (select {key_list} from d group by all having count(*) > 1)"
        ).fetchall()[0][0]
        key_select = ", ".join(f'd."{k}"' for k in keys)
        on = " and ".join(f'd."{k}" is not distinct from s."{k}"' for k in keys)
        diff.keys_only_in_duckdb = con.execute(
            f"select count(*) from d anti join s on {on}"
        ).fetchall()[0][0]
        diff.keys_only_in_spark = con.execute(
            f"select count(*) from s anti join d on {on}"
        ).fetchall()[0][0]
        for name, kind in columns:
            if name in keys:
                continue
            a, b = f'd."{name}"', f's."{name}"'
            if kind.startswith(NUMERIC):
                allowed = f"{rel_tol} * greatest(1, abs({a}), abs({b}))"
                if abs_tol and name in abs_tol:
                    allowed = f"greatest({allowed}, {abs_tol[name]} + 1e-9)"
                same = f"({a} is null and {b} is null) or abs({a} - {b}) <= {allowed}"
            else:
                same = f"{a} is not distinct from {b}"
            rows = con.execute(
                f"select {key_select}, "
                f"{a}, {b} from d join s on {on} where not coalesce({same}, false) limit {sample}"
            ).fetchall()
            if rows:
                diff.mismatches[name] = rows
        return diff
    finally:
        con.close()


def _normalised(name: str, kind: str) -> str:
    column = f'"{name}"'
    if kind.startswith(NUMERIC):
        return f"cast({column} as double) as {column}"
    if kind.startswith("TIMESTAMP"):
        return f"cast({column} as timestamp) as {column}"
    if kind in ("DATE", "BOOLEAN"):
        return f"cast({column} as {kind}) as {column}"
    return f"cast({column} as varchar) as {column}"
