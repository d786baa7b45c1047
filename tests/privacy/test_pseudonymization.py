"""Pseudonymized analytics layers, scanned on the sample shop's real warehouse.

Features, segments and models are keyed by `customer_key` = HMAC-SHA256(key, "customer:" + id):
no analytics table may hold a customer id (column or value), the keys must equal
`pseudonym.customer_hash` whether DuckDB (dbt macro, `customer_key_sql`) or Python computes
them, another key must give other keys, and the campaign layer must still reach the right
address through the restricted `customer_keys` mapping.
"""

import datetime as dt
import os
import shutil
import subprocess

import duckdb
import pytest

from personalization_assets import paths
from personalization_assets.defs.campaigns.payloads import load_send_rows
from personalization_assets.defs.privacy import erasure, pseudonym
from personalization_assets.defs.warehouse.project import dbt_executable
from personalization_assets.defs.warehouse.resources import WarehouseResource

ANALYTICS_SCHEMAS = ("segments", "models")
FEATURE_RELATIONS = (
    ("main", "customer_features"),
    ("main", "customer_feature_snapshots"),
    ("main", "training_labels"),
    ("main", "customer_profile"),
)


def _analytics_columns(con) -> dict[tuple[str, str], list[tuple[str, str]]]:
    rows = con.execute(
        """select table_schema, table_name, column_name, data_type
           from information_schema.columns
           where table_schema in (select unnest(?))
              or table_schema || '.' || table_name in (select unnest(?))
           order by all""",
        [list(ANALYTICS_SCHEMAS), [f"{s}.{t}" for s, t in FEATURE_RELATIONS]],
    ).fetchall()
    tables: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, data_type in rows:
        tables.setdefault((schema, table), []).append((column, data_type))
    return tables


@pytest.fixture(scope="module")
def warehouse(sample_shop):
    assert sample_shop.result.success
    con = duckdb.connect(str(sample_shop.database), read_only=True)
    yield con
    con.close()


def test_no_analytics_table_has_a_customer_id_column_or_value(warehouse):
    tables = _analytics_columns(warehouse)
    assert {("segments", "customer_segments"), ("models", "propensity_scores")} <= set(tables)
    assert {("models", "product_recommendations"), ("models", "customer_lifecycle")} <= set(tables)
    assert {("models", "send_time_preferences"), ("main", "customer_profile")} <= set(tables)
    assert set(FEATURE_RELATIONS) <= set(tables)
    with_id_column = [t for t, cols in tables.items() if any(c == "customer_id" for c, _ in cols)]
    assert with_id_column == []
    keyed = [t for t, cols in tables.items() if any(c == "customer_key" for c, _ in cols)]
    assert len(keyed) >= 10

    ids = [r[0] for r in warehouse.execute("select customer_id from main.customer_keys").fetchall()]
    assert len(ids) > 500
    hits = []
    for (schema, table), columns in sorted(tables.items()):
        for column, data_type in columns:
            if data_type != "VARCHAR":
                continue
            found = warehouse.execute(
                f'select count(*) from "{schema}"."{table}" '
                f'where lower("{column}") in (select unnest(?))',
                [ids],
            ).fetchall()[0][0]
            if found:
                hits.append(f"{schema}.{table}.{column}: {found}")
    assert hits == []


def test_every_analytics_key_maps_to_a_known_customer(warehouse):
    for schema, table in (
        ("main", "customer_features"),
        ("segments", "customer_segments"),
        ("models", "propensity_scores"),
        ("models", "product_recommendations"),
        ("models", "send_time_preferences"),
        ("models", "customer_lifecycle"),
    ):
        total, unmapped = warehouse.execute(
            f"""select count(*), count(*) filter (where k.customer_id is null)
                from {schema}.{table} t left join main.customer_keys k using (customer_key)"""
        ).fetchall()[0]
        assert total > 0 and unmapped == 0, f"{schema}.{table}"


def test_keys_equal_the_python_hash_whether_dbt_sql_or_python_computes_them(sample_shop):
    pairs = sample_shop.query(
        "select customer_id, customer_key from main.customer_keys order by customer_id"
    )
    sample = pairs[:: max(1, len(pairs) // 40)]
    imported = [p for p in pairs if not p[0].startswith("c")][:5]  # Online Retail II numbers
    assert imported
    for customer_id, key in [*sample, *imported]:
        assert key == pseudonym.customer_hash(customer_id)
        assert len(key) == 64 and key == key.lower()
    # The same expression in Python-issued SQL (a warehouse-resource connection) agrees too.
    with WarehouseResource(database=str(sample_shop.database)).connect(read_only=True) as con:
        mismatches = con.execute(
            f"""select count(*) from main.customer_keys
                where {pseudonym.customer_key_sql("customer_id")} <> customer_key"""
        ).fetchall()[0][0]
        spelled = con.execute(
            f"select {pseudonym.customer_key_sql('?')}", [" 13085.0 "]
        ).fetchall()[0][0]
    assert mismatches == 0
    assert spelled == pseudonym.customer_hash("13085")


def test_sql_without_the_key_variables_raises_instead_of_null_keys():
    con = duckdb.connect()
    with pytest.raises(duckdb.InvalidInputException, match="pseudonym key not configured"):
        con.execute(f"select {pseudonym.customer_key_sql('?')}", ["c1"]).fetchall()
    pseudonym.configure_duckdb(con, b"k" * 100)  # longer than a block: hashed first (RFC 2104)
    [(key,)] = con.execute(f"select {pseudonym.customer_key_sql('?')}", ["C7"]).fetchall()
    con.close()
    assert key == pseudonym.customer_hash("c7", b"k" * 100)


def test_another_key_rekeys_the_analytics_layer_and_never_appears_in_sql(sample_shop, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    shutil.copy(sample_shop.database, database)
    secret = "test-only-other-pseudonym-key-4b1d"
    target = tmp_path / "target"
    subprocess.run(
        [
            dbt_executable(),
            "run",
            "--quiet",
            "--select",
            "customer_keys",
            "customer_features",
            "--project-dir",
            str(paths.DBT_PROJECT_DIR),
            "--profiles-dir",
            str(paths.DBT_PROJECT_DIR),
            "--target-path",
            str(target),
        ],
        check=True,
        cwd=paths.DBT_PROJECT_DIR,
        env={
            **os.environ,
            paths.DUCKDB_PATH_ENV: str(database),
            pseudonym.KEY_ENV: secret,
        },
    )
    before = dict(sample_shop.query("select customer_id, customer_key from main.customer_keys"))
    con = duckdb.connect(str(database), read_only=True)
    after = dict(con.execute("select customer_id, customer_key from main.customer_keys").fetchall())
    features = {r[0] for r in con.execute("select customer_key from customer_features").fetchall()}
    con.close()
    assert set(after) == set(before)
    assert all(after[i] != before[i] for i in after)
    assert all(after[i] == pseudonym.customer_hash(i, secret.encode()) for i in after)
    assert features and features <= set(after.values())
    assert not features & set(before.values())
    compiled = "".join(p.read_text() for p in target.rglob("*.sql"))
    assert "getvariable('pseudonym_ipad')" in compiled
    assert secret not in compiled
    ipad, _ = pseudonym.hmac_pads(secret.encode())
    assert ipad.hex() not in compiled.lower()


def test_payloads_reach_the_right_addresses_through_the_mapping(warehouse):
    rendered, wrong_address, without_features = warehouse.execute(
        """select count(*),
                  count(*) filter (where p.to_address is distinct from c.email),
                  count(*) filter (where f.customer_key is null)
           from campaigns.email_payloads p
           left join main.dim_customer_contacts c using (customer_id)
           left join main.customer_keys k using (customer_id)
           left join main.customer_features f using (customer_key)
           where p.status = 'rendered'"""
    ).fetchall()[0]
    assert rendered > 0
    assert wrong_address == 0 and without_features == 0
    # The products a payload recommends are the recipient's own (joined by key, sent by id).
    [(send_date,)] = warehouse.execute(
        "select max(send_date) from campaigns.campaign_decisions where status = 'send'"
    ).fetchall()
    top5 = {}
    for customer_id, products in warehouse.execute(
        """select k.customer_id, list(r.product_id order by r.rank)
           from models.product_recommendations r join main.customer_keys k using (customer_key)
           where r.rank <= 5 group by 1"""
    ).fetchall():
        top5[customer_id] = products
    rows = [
        r
        for r in load_send_rows(warehouse, send_date)
        if r["cart_product"] is None and r["recommendations"]
    ]
    assert rows
    for row in rows:
        shown = [p["product_id"] for p in row["recommendations"]]
        assert shown == top5[row["customer_id"]], row["customer_id"]


def test_erasure_deletes_keyed_rows_and_keyed_als_users(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    pseudonym.configure_duckdb(con)
    con.execute("create schema segments")
    con.execute(
        f"""create table segments.customer_segments as
            select {pseudonym.customer_key_sql("id")} as customer_key, 'Champions' as segment
            from (values ('c1'), ('c2')) v(id)"""
    )
    places = erasure.Places(tmp_path / "landing", tmp_path / "output", tmp_path / "models")
    report = erasure.erase_customers(
        con, ["C1"], places, now=dt.datetime(2026, 11, 1), requested_by="test"
    )
    left = con.execute("select customer_key from segments.customer_segments").fetchall()
    con.close()
    assert left == [(pseudonym.customer_hash("c2"),)]
    assert report.by_location() == {"warehouse:segments.customer_segments": 1}
