"""The serving snapshot: what the send-time API and the collector read, in a file of its own.

The warehouse has one writer at a time (DuckDB's lock); a service that must answer in
milliseconds cannot wait for a dbt run. So after every materialization of the campaign
payloads this module copies what the edge needs into a separate DuckDB file, written under a
temporary name and atomically renamed over the previous snapshot. The API opens it read-only
and reloads when the file changes; nobody at the edge ever opens the warehouse.

Tables (all keyed by the warehouse's customer id: the edge API is called with customer ids, so
the analytics tables, keyed by the pseudonymous customer_key, are mapped back here through the
restricted `main.customer_keys`; the snapshot holds no customer_key):

    meta              key/value: snapshot_at, feature as_of, ALS as_of and parameters
    customers         consent flags (email, tracking, unsubscribed, suppressed), contact and
                      personalization tokens (name, city, top category, RFM, propensities)
    segments          customer_id, segment, segment_type
    decisions         the latest decision per (campaign, customer)
    recommendations   top-N per customer with product name, price, category
    products          the catalog (name, price, currency, category, in_stock)
    similar_products  top 4 similar products per product (cart emails)
    recent_purchase   the latest purchased product per customer
    landing_files     event files already in the warehouse (later files = fresher than this)
    als_items         item column, product id, BM25 idf and ALS item factors
    als_cells         each customer's decayed interaction weights before confidence scaling,
                      and whether they bought the item: with `als_items` enough to redo
                      implicit's exact per-user solve at the edge after new events

No Dagster imports.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from personalization_assets import paths

SNAPSHOT_ENV = "PERSONALIZATION_SERVING_SNAPSHOT"
KEYS = "wh.main.customer_keys"  # the restricted key → id mapping, in the attached warehouse
SNAPSHOT_VERSION = "1"
TOKEN_COLUMNS = (
    "city",
    "country",
    "timezone",
    "age_band",
    "top_category",
    "preferred_device",
    "preferred_hour",
    "engagement_score",
    "recency_days",
    "frequency",
    "monetary_total",
    "last_purchase_at",
    "r_score",
    "f_score",
    "m_score",
)


def snapshot_path() -> Path:
    """`PERSONALIZATION_SERVING_SNAPSHOT`, else `<output>/serving/snapshot.duckdb`."""
    value = os.environ.get(SNAPSHOT_ENV)
    if value:
        return Path(value).expanduser().resolve()
    return paths.output_dir() / "serving" / "snapshot.duckdb"


@dataclass
class ExportSummary:
    path: Path
    snapshot_at: dt.datetime
    rows: dict[str, int] = field(default_factory=dict)
    als: str = "absent"


def _attach_waiting(con: duckdb.DuckDBPyConnection, warehouse: Path, timeout_s: float) -> None:
    """Attach the warehouse read-only, waiting out a writer in another process."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            con.execute(f"attach '{warehouse.as_posix()}' as wh (read_only)")
            return
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from duckdb_tables() "
            "where database_name = 'wh' and schema_name = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
    )


def export_snapshot(
    warehouse: Path,
    target: Path,
    *,
    als_state: tuple[Any, Any] | None = None,
    als_settings: Any = None,
    campaign_names: dict[str, str] | None = None,
    now: dt.datetime | None = None,
    lock_timeout_s: float = 120.0,
) -> ExportSummary:
    """Write the snapshot to `<target>.tmp` and rename it over `target` (atomic on POSIX)."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    summary = ExportSummary(path=target, snapshot_at=now)
    con = duckdb.connect(str(tmp))
    try:
        con.execute("set TimeZone = 'UTC'")
        _attach_waiting(con, warehouse, lock_timeout_s)
        meta = {"version": SNAPSHOT_VERSION, "snapshot_at": now.isoformat()}
        meta["as_of"] = str(con.execute("select as_of from wh.main.feature_as_of").fetchall()[0][0])
        _copy_tables(con)
        con.register(
            "_campaigns",
            pd.DataFrame(
                {
                    "campaign_id": list((campaign_names or {}).keys()),
                    "name": list((campaign_names or {}).values()),
                },
                dtype=object,
            ),
        )
        con.execute("create table campaigns as select * from _campaigns")
        if als_state is not None and als_settings is not None:
            summary.als = _export_als(con, als_state, als_settings, meta)
        else:
            _empty_als(con)
        con.execute("detach wh")
        con.register(
            "_meta", pd.DataFrame({"key": list(meta), "value": list(meta.values())}, dtype=object)
        )
        con.execute("create table meta as select * from _meta")
        for table in (
            "customers",
            "segments",
            "decisions",
            "recommendations",
            "products",
            "als_cells",
        ):
            summary.rows[table] = con.execute(f"select count(*) from {table}").fetchall()[0][0]
        con.execute("checkpoint")
    finally:
        con.close()
    os.replace(tmp, target)
    return summary


def _copy_tables(con: duckdb.DuckDBPyConnection) -> None:
    suppressed = (
        "exists (select 1 from wh.campaigns.suppressions s where s.customer_id = c.customer_id)"
        if _exists(con, "campaigns", "suppressions")
        else "false"
    )
    churn, purchase = "null", "null"
    propensity_join = ""
    if _exists(con, "models", "propensity_scores"):
        propensity_join = """
            left join (
                select customer_key,
                       max(score) filter (where model_name = 'churn') as churn_score,
                       max(score) filter (where model_name = 'purchase') as purchase_score
                from wh.models.propensity_scores group by customer_key
            ) p on p.customer_key = keys.customer_key"""
        churn, purchase = "p.churn_score", "p.purchase_score"
    tokens = ", ".join(f"f.{c}" for c in TOKEN_COLUMNS if c not in {"city", "country", "timezone"})
    con.execute(
        f"""
        create table customers as
        select c.customer_id, k.email, k.first_name, k.last_name,
               coalesce(c.email_consent, false) as email_consent,
               coalesce(c.tracking_consent, false) as tracking_consent,
               coalesce(c.unsubscribed, false) or coalesce(f.is_unsubscribed, false)
                   as unsubscribed,
               {suppressed} as suppressed,
               c.city, c.country, c.timezone, {tokens},
               {churn} as churn_score, {purchase} as purchase_score
        from wh.main.dim_customers c
        left join wh.main.dim_customer_contacts k using (customer_id)
        left join {KEYS} keys on keys.customer_id = c.customer_id
        left join wh.main.customer_features f on f.customer_key = keys.customer_key
        {propensity_join}
        order by c.customer_id
        """
    )
    con.execute(
        """create table products as
        select product_id, product_name as name, price, currency, category, in_stock
        from wh.main.dim_products order by product_id"""
    )
    optional = {
        ("segments", "customer_segments"): f"""
            create table segments as select keys.customer_id, s.segment, s.segment_type
            from wh.segments.customer_segments s join {KEYS} keys using (customer_key)
            order by keys.customer_id, s.segment_type, s.segment""",
        ("campaigns", "campaign_decisions"): """
            create table decisions as
            select send_date, campaign_id, customer_id, status, reason, rule, template, variant,
                   trigger_product_id, idempotency_key, clock
            from wh.campaigns.campaign_decisions
            qualify row_number() over (
                partition by campaign_id, customer_id order by send_date desc, decided_at desc
            ) = 1
            order by customer_id, campaign_id""",
        ("models", "product_recommendations"): f"""
            create table recommendations as
            select keys.customer_id, r.rank, r.product_id, r.score,
                   cast(r.source as varchar) as source
            from wh.models.product_recommendations r join {KEYS} keys using (customer_key)
            order by keys.customer_id, r.rank""",
        ("models", "similar_products"): """
            create table similar_products as
            select product_id, rank, similar_product_id from wh.models.similar_products
            where rank <= 4 order by product_id, rank""",
        ("main", "fct_order_lines"): """
            create table recent_purchase as
            select l.customer_id, l.product_id, p.product_name as name
            from wh.main.fct_order_lines l join wh.main.dim_products p using (product_id)
            where not l.is_cancellation and l.customer_id is not null
            qualify row_number() over (partition by l.customer_id order by l.ordered_at desc) = 1""",
        ("main", "dim_consent"): """
            create table group_consent as
            select customer_id, substr(purpose, 13) as group_id, granted
            from wh.main.dim_consent where starts_with(purpose, 'email_group:')
            order by customer_id, group_id""",
        ("raw", "landing_files"): """
            create table landing_files as
            select source_file from wh.raw.landing_files where source = 'events'""",
    }
    empty = {
        "segments": "customer_id varchar, segment varchar, segment_type varchar",
        "decisions": "send_date date, campaign_id varchar, customer_id varchar, status varchar, "
        "reason varchar, rule varchar, template varchar, variant varchar, "
        "trigger_product_id varchar, idempotency_key varchar, clock timestamp",
        "recommendations": "customer_id varchar, rank bigint, product_id varchar, score double, "
        "source varchar",
        "similar_products": "product_id varchar, rank bigint, similar_product_id varchar",
        "recent_purchase": "customer_id varchar, product_id varchar, name varchar",
        "landing_files": "source_file varchar",
        "group_consent": "customer_id varchar, group_id varchar, granted boolean",
    }
    for (schema, table), sql in optional.items():
        if _exists(con, schema, table):
            con.execute(sql)
        else:
            name = sql.split("create table ", 1)[1].split()[0]
            con.execute(f"create table {name} ({empty[name]})")


def _empty_als(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "create table als_items (col integer, product_id varchar, idf double, factors float[])"
    )
    con.execute(
        "create table als_cells (customer_id varchar, col integer, raw double, purchased boolean)"
    )


def _export_als(con: duckdb.DuckDBPyConnection, state, settings, meta: dict[str, str]) -> str:
    """Item factors, BM25 statistics and each customer's unscaled row, from the last ALS state."""
    from personalization_assets.defs.models import recommendations as als

    model, matrix = state
    weights = settings.weights
    event_types = sorted(t for t, w in weights.event_weights.items() if w > 0)
    # The ALS state is keyed by customer_key (as the model was trained); the cells go out by id.
    interactions = con.execute(
        f"select keys.customer_key, e.product_id, e.event_type, e.event_ts "
        f"from wh.main.fct_events e join {KEYS} keys using (customer_id) "
        "where e.product_id is not null and e.event_type in (select unnest(?))",
        [event_types],
    ).df()
    if interactions.empty or model.item_factors.shape[0] != matrix.shape[1]:
        _empty_als(con)
        return "absent: no interactions or inconsistent state"
    raw_weights = weights.model_copy(update={"confidence": "none"})
    raw = als.build_matrix(interactions, raw_weights, matrix.as_of, base=matrix)
    counts = np.bincount(raw.user_items.tocoo().col, minlength=raw.shape[1])
    idf = np.log(float(raw.shape[0])) - np.log1p(counts)
    row_sums = np.asarray(raw.user_items.sum(axis=1), dtype=np.float64).ravel()
    coo = raw.user_items.tocoo()
    bought = raw.purchased.tocsr()
    purchased = np.asarray(bought[coo.row, coo.col]).ravel() > 0
    factors = np.asarray(model.item_factors, dtype=np.float32)
    con.register(
        "_items",
        pa.table(
            {
                "col": pa.array(np.arange(raw.shape[1], dtype=np.int32)),
                "product_id": pa.array([str(p) for p in raw.item_ids]),
                "idf": pa.array(idf),
                "factors": pa.FixedSizeListArray.from_arrays(
                    pa.array(factors.ravel()), factors.shape[1]
                ).cast(pa.list_(pa.float32())),
            }
        ),
    )
    con.execute("create table als_items as select * from _items order by col")
    con.register(
        "_cells",
        pa.table(
            {
                "customer_key": pa.array([str(u) for u in raw.user_ids[coo.row]]),
                "col": pa.array(coo.col.astype(np.int32)),
                "raw": pa.array(coo.data.astype(np.float64)),
                "purchased": pa.array(purchased),
            }
        ),
    )
    con.execute(
        "create table als_cells as select keys.customer_id, c.col, c.raw, c.purchased "
        f"from _cells c join {KEYS} keys using (customer_key) order by keys.customer_id, c.col"
    )
    meta.update(
        {
            "als_as_of": pd.Timestamp(matrix.as_of).isoformat(),
            "als_users": str(raw.shape[0]),
            "als_avg_row_sum": repr(float(row_sums.mean())),
            "als_params": json.dumps(
                {
                    "factors": int(model.factors),
                    "regularization": float(model.regularization),
                    "alpha": float(model.alpha),
                }
            ),
            "als_weights": weights.model_dump_json(),
            "top_n": str(settings.top_n),
            "exclude_purchased": json.dumps(bool(settings.exclude_purchased)),
        }
    )
    return f"{raw.shape[0]} customers × {raw.shape[1]} products, {coo.nnz} cells"
