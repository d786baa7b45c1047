"""Rendered, ESP-ready email payloads from campaign decisions. No Dagster imports.

One payload per `send` decision, keyed by the decision's idempotency key (campaign, customer,
send date): re-rendering a send date replaces its payloads, never adds a second one. Names and
addresses are read from the restricted `dim_customer_contacts` only here, at render time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from personalization_assets.defs.campaigns import timing
from personalization_assets.defs.campaigns.links import email_links
from personalization_assets.defs.campaigns.rendering import EmailRenderer, TemplateRenderError
from personalization_assets.defs.campaigns.timing import ScheduleSpec
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.warehouse.summary import table_exists

SCHEMA = "campaigns"
# html/text are stored with zstd: DuckDB's default string compression analysis made the
# commit of 100k payloads (~1 GB of HTML) take a minute; zstd takes about a second.
PAYLOADS_DDL = f"""
create table if not exists {SCHEMA}.email_payloads (
    idempotency_key varchar primary key, send_date date, campaign_id varchar, customer_id varchar,
    variant varchar, rule varchar, template varchar, to_address varchar, subject varchar,
    preheader varchar, html varchar using compression zstd,
    text varchar using compression zstd, headers varchar, model_versions varchar,
    status varchar, error varchar, rendered_at timestamp, content_key varchar, send_at timestamp)
"""
RECOMMENDATIONS = "models.product_recommendations"
JSONL_BATCH_ROWS = 5_000


@dataclass
class PayloadSummary:
    rendered: int = 0
    failed: int = 0
    reused: int = 0  # unchanged inputs: the stored payload is kept, not rendered again
    errors: dict[str, str] = field(default_factory=dict)  # template → first error
    jsonl_files: list[Path] = field(default_factory=list)
    per_campaign: dict[tuple[str, str], int] = field(default_factory=dict)
    # Thread CPU seconds inside the renderer (contexts in, subject/HTML/text out): the rendering
    # throughput itself, apart from the step's SQL, hashing and writes.
    render_cpu_s: float = 0.0


def product_lists_sql(con: duckdb.DuckDBPyConnection, *, customer_key: str, product: str):
    """SQL expressions for a recipient's top-5 recommendations and, for emails about one product
    (an abandoned cart), the 4 products most similar to it; `null` where a model has not run.

    `customer_key` is the recipient's pseudonymous key (recommendations are keyed by it)."""
    recs = (
        f"""(select list(struct_pack(product_id := r.product_id, name := p.product_name,
                        price := p.price, currency := p.currency, category := p.category)
                        order by r.rank)
             from {RECOMMENDATIONS} r join main.dim_products p using (product_id)
             where r.customer_key = {customer_key} and r.rank <= 5)"""
        if table_exists(con, "models", "product_recommendations")
        else "null"
    )
    similar = (
        f"""(select list(struct_pack(product_id := p.product_id, name := p.product_name,
                        price := p.price, currency := p.currency, category := p.category)
                        order by s.rank)
             from models.similar_products s join main.dim_products p
                 on p.product_id = s.similar_product_id
             where s.product_id = {product} and s.rank <= 4)"""
        if table_exists(con, "models", "similar_products")
        else "null"
    )
    return recs, similar


def load_send_rows(con: duckdb.DuckDBPyConnection, send_date: dt.date) -> list[dict[str, Any]]:
    """Every `send` decision of the date with what its template needs, as plain dicts."""
    return con.sql(send_rows_sql(con), params=[send_date]).to_arrow_table().to_pylist()


def send_rows_sql(con: duckdb.DuckDBPyConnection) -> str:
    """The query behind `load_send_rows` (one parameter: the send date), ordered by campaign
    and customer.

    Re-identification happens here: analytics rows (features, recommendations, lifecycle, send
    time) are joined by customer_key through the restricted `customer_keys`; contacts by id."""
    recs, similar = product_lists_sql(
        con, customer_key="keys.customer_key", product="d.trigger_product_id"
    )
    lifecycle = (
        """(select struct_pack(p_alive := l.p_alive, predicted_clv := l.predicted_clv,
                        historic_clv := l.historic_clv, total_clv := l.total_clv,
                        expected_next_order_date := l.expected_next_order_date,
                        expected_days_to_next_order := l.expected_days_to_next_order,
                        average_days_between_orders := l.average_days_between_orders,
                        churn_probability := l.churn_probability,
                        churn_risk_band := l.churn_risk_band)
             from models.customer_lifecycle l where l.customer_key = keys.customer_key)"""
        if table_exists(con, "models", "customer_lifecycle")
        else "null"
    )
    best_hour = (
        """(select s.best_local_hour from models.send_time_preferences s
             where s.customer_key = keys.customer_key)"""
        if table_exists(con, "models", "send_time_preferences")
        else "null"
    )
    return f"""
        select
            d.idempotency_key, d.campaign_id, d.customer_id, d.variant, d.rule, d.template,
            contacts.email, contacts.first_name,
            customers.timezone, customers.country, {best_hour} as best_local_hour,
            {lifecycle} as lifecycle,
            f.tracking_consent as behavioral_allowed,
            case when d.trigger_product_id is not null then {similar} else {recs} end
                as recommendations,
            (select struct_pack(product_id := p.product_id, name := p.product_name,
                                price := p.price, currency := p.currency, category := p.category)
             from main.dim_products p where p.product_id = d.trigger_product_id) as cart_product,
            (select struct_pack(product_id := p.product_id, name := p.product_name)
             from main.fct_order_lines l join main.dim_products p using (product_id)
             where l.customer_id = d.customer_id and not l.is_cancellation
             order by l.ordered_at desc limit 1) as recent_purchase
        from {SCHEMA}.campaign_decisions d
        join main.dim_customer_contacts contacts on contacts.customer_id = d.customer_id
        join {pseudonym.KEYS_TABLE} keys on keys.customer_id = d.customer_id
        join main.customer_features f on f.customer_key = keys.customer_key
        left join main.dim_customers customers on customers.customer_id = d.customer_id
        where d.send_date = ? and d.status = 'send'
        order by d.campaign_id, d.customer_id
        """


def build_context(
    row: dict[str, Any], *, base_url: str, campaign_names: dict[str, str]
) -> dict[str, Any]:
    """The template context for one recipient (see rendering.py for the contract)."""
    products = [
        {
            **product,
            "url": f"{base_url}/p/{product['product_id']}",
            "image_url": f"{base_url}/img/{product['product_id']}.jpg",
        }
        for product in row["recommendations"] or []
    ]
    cart = row["cart_product"]
    if cart:
        cart = {
            **cart,
            "url": f"{base_url}/p/{cart['product_id']}",
            "image_url": f"{base_url}/img/{cart['product_id']}.jpg",
        }
        products = [cart] + [p for p in products if p["product_id"] != cart["product_id"]][:4]
    return {
        "recipient": {
            "customer_id": row["customer_id"],
            "first_name": row["first_name"] or "",
            "email": row["email"],
        },
        "campaign": {
            "campaign_id": row["campaign_id"],
            "name": campaign_names.get(row["campaign_id"], ""),
            "variant": row["variant"],
            "rule": row["rule"],
        },
        "recommendations": products,
        "recent_purchase": row["recent_purchase"],
        "lifecycle": row.get("lifecycle"),
        "cart_product": cart,
        "offer": None,
        "behavioral_allowed": bool(row["behavioral_allowed"]),
        "links": email_links(
            base_url, row["customer_id"], row["campaign_id"], row["idempotency_key"]
        ),
    }


def render_payloads(
    con: duckdb.DuckDBPyConnection,
    renderer: EmailRenderer,
    *,
    send_date: dt.date,
    base_url: str,
    campaign_names: dict[str, str],
    output_dir: Path,
    model_versions: dict[str, str] | None = None,
    template_version: str = "",
    clock: dt.datetime | None = None,
    schedules: dict[str, ScheduleSpec | None] | None = None,
    batch_size: int = 2000,
    checkpoint_threshold: str = "4GB",
) -> PayloadSummary:
    """Render every `send` decision of the date; write the table and one JSONL per campaign.

    Each payload stores a `content_key`: a hash of everything its rendering depends on (the
    decision, recipient tokens, products, model versions, template sources). A payload whose key
    is unchanged since the last run is kept as it is instead of being rendered again, so a
    sensor run after a few new events re-renders only the affected recipients. The result is the
    same as rendering everything. `send_at` (UTC) comes from each campaign's `schedule`
    (recipient-local time, quiet hours, best hour) at `clock`; null = due now.

    Payloads are rendered and stored `batch_size` at a time, each batch in its own transaction
    (old versions replaced by new ones together): memory stays bounded by the batch, not by
    the audience (DuckDB holds a transaction's uncommitted rows in memory). A run that fails
    part-way leaves every payload whole — some re-rendered, the rest as before — and the next
    run re-renders what is left (their content keys differ); the JSONL files are written last.
    Call it outside a transaction.
    """
    con.execute(f"create schema if not exists {SCHEMA}")
    con.execute(PAYLOADS_DDL)
    # Tables created before payloads were keyed by content.
    for column in ("content_key varchar", "send_at timestamp"):
        con.execute(f"alter table {SCHEMA}.email_payloads add column if not exists {column}")
    # The send rows are staged in DuckDB and read back a batch at a time: Python holds one
    # batch of rows, contexts and rendered emails, never the whole audience.
    con.execute(
        f"""create or replace temp table _send_rows as
            select row_number() over (order by campaign_id, customer_id) as _n, *
            from ({send_rows_sql(con)})""",
        [send_date],
    )
    total = con.execute("select count(*) from _send_rows").fetchall()[0][0]
    versions = json.dumps(model_versions or {}, sort_keys=True)
    stored = dict(
        con.execute(
            f"""select idempotency_key, content_key from {SCHEMA}.email_payloads
                where send_date = ? and status = 'rendered'""",
            [send_date],
        ).fetchall()
    )
    summary = PayloadSummary()
    changed: set[str] = set()
    campaigns: set[str] = set()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # Batches commit without a WAL checkpoint each (see _checkpoint_threshold).
    with _checkpoint_threshold(con, checkpoint_threshold):
        for start in range(0, total, batch_size):
            rows = (
                con.sql(
                    "select * exclude (_n) from _send_rows where _n > ? and _n <= ? order by _n",
                    params=[start, start + batch_size],
                )
                .to_arrow_table()
                .to_pylist()
            )
            _schedule(rows, schedules or {}, clock)
            by_template: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                row["content_key"] = _content_key(row, versions, template_version)
                key = (row["campaign_id"], row["variant"])
                summary.per_campaign[key] = summary.per_campaign.get(key, 0) + 1
                campaigns.add(row["campaign_id"])
                if stored.get(row["idempotency_key"]) == row["content_key"]:
                    summary.reused += 1
                else:
                    by_template[row["template"]].append(row)
            records = []
            for template, template_rows in sorted(by_template.items()):
                contexts = [
                    build_context(r, base_url=base_url, campaign_names=campaign_names)
                    for r in template_rows
                ]
                cpu = time.thread_time()
                results = renderer.render_many(template, contexts)
                summary.render_cpu_s += time.thread_time() - cpu
                for row, result in zip(template_rows, results, strict=True):
                    records.append(_record(row, result, send_date, versions, now))
                    if isinstance(result, TemplateRenderError):
                        summary.failed += 1
                        summary.errors.setdefault(template, str(result))
                        summary.per_campaign[(row["campaign_id"], row["variant"])] -= 1
                    else:
                        summary.rendered += 1
                del contexts, results
            # Freed after the batch is stored; the next batch reuses the memory (see heap.py).
            changed |= _replace_records(con, records)
            del rows, records
        changed |= _delete_withdrawn(con, send_date)
    con.execute("drop table _send_rows")
    folder = output_dir / "payloads" / f"send_date={send_date}"
    missing = {c for c in campaigns if not (folder / f"{c}.jsonl").exists()}
    summary.jsonl_files = _write_jsonl(con, send_date, changed | missing, folder)
    return summary


@contextlib.contextmanager
def _checkpoint_threshold(con: duckdb.DuckDBPyConnection, threshold: str) -> Iterator[None]:
    """Raise DuckDB's WAL checkpoint threshold while batches are committed, then restore it.

    Each batch's commit writes ~25 MB of HTML to the WAL; at the default 16 MiB threshold every
    commit then checkpointed the table (rewriting compressed row groups): 3.3 s per batch of
    2,000 at 100k payloads, 125 of the step's 190 s. The WAL is checkpointed once, later."""
    previous = con.execute("select current_setting('checkpoint_threshold')").fetchall()[0][0]
    con.execute(f"set checkpoint_threshold = '{threshold}'")
    try:
        yield
    finally:
        con.execute(f"set checkpoint_threshold = '{previous}'")


def _schedule(
    rows: list[dict[str, Any]], schedules: dict[str, ScheduleSpec | None], clock: dt.datetime | None
) -> None:
    """Set each row's `send_at` (naive UTC, or None = due now) from its campaign's schedule."""
    if not rows or clock is None or not any(schedules.values()):
        for row in rows:
            row["send_at"] = None
        return
    planned = timing.schedule_sends(pd.DataFrame(rows), schedules, clock)
    for row, send_at in zip(rows, planned, strict=True):
        row["send_at"] = None if pd.isna(send_at) else send_at.to_pydatetime()


def _content_key(row: dict[str, Any], versions: str, template_version: str) -> str:
    inputs = json.dumps(row, sort_keys=True, default=str) + versions + template_version
    return hashlib.sha256(inputs.encode()).hexdigest()[:32]


def _replace_records(con: duckdb.DuckDBPyConnection, records: list[dict[str, Any]]) -> set[str]:
    """Store freshly rendered payloads in place of their previous versions; their campaigns."""
    if not records:
        return set()
    con.register("_payload_records", pa.Table.from_pylist(records))
    con.execute("begin transaction")
    try:
        con.execute(
            f"""delete from {SCHEMA}.email_payloads
                where idempotency_key in (select idempotency_key from _payload_records)"""
        )
        con.execute(f"insert into {SCHEMA}.email_payloads by name select * from _payload_records")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.unregister("_payload_records")
    return {record["campaign_id"] for record in records}


def _delete_withdrawn(con: duckdb.DuckDBPyConnection, send_date: dt.date) -> set[str]:
    """Drop the date's payloads whose decision is no longer a send; their campaigns."""
    withdrawn = f"""from {SCHEMA}.email_payloads
                    where send_date = ?
                      and idempotency_key not in (select idempotency_key from _send_rows)"""
    changed = {
        row[0]
        for row in con.execute(f"select distinct campaign_id {withdrawn}", [send_date]).fetchall()
    }
    con.execute(f"delete {withdrawn}", [send_date])
    return changed


def _record(row, result, send_date, versions, now) -> dict[str, Any]:
    failed = isinstance(result, TemplateRenderError)
    return {
        "idempotency_key": row["idempotency_key"],
        "send_date": send_date,
        "campaign_id": row["campaign_id"],
        "customer_id": row["customer_id"],
        "variant": row["variant"],
        "rule": row["rule"],
        "template": row["template"],
        "to_address": row["email"],
        "subject": None if failed else result.subject,
        "preheader": None if failed else result.preheader,
        "html": None if failed else result.html,
        "text": None if failed else result.text,
        "headers": None if failed else json.dumps(result.headers, sort_keys=True),
        "model_versions": versions,
        "status": "render_failed" if failed else "rendered",
        "error": str(result) if failed else None,
        "rendered_at": now,
        "content_key": row["content_key"],
        "send_at": row["send_at"],
    }


def _write_jsonl(
    con: duckdb.DuckDBPyConnection,
    send_date: dt.date,
    campaigns: set[str],
    folder: Path,
    *,
    table: str = f"{SCHEMA}.email_payloads",
    file_prefix: str = "",
) -> list[Path]:
    """ESP-ready JSONL, one file per campaign (or journey: `table` = the journey payloads,
    `file_prefix` = "journey__"), replaced atomically (write-then-rename). Only the files of
    campaigns whose payloads changed are rewritten."""
    folder.mkdir(parents=True, exist_ok=True)
    for campaign_id in sorted(campaigns):
        path = folder / f"{file_prefix}{campaign_id}.jsonl"
        path.unlink(missing_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        # Streamed in Arrow batches: memory stays flat however large the campaign (DuckDB's
        # own `COPY ... (format json)` needed a 2 GiB buffer for 730k payloads).
        reader = con.sql(
            f"""select idempotency_key, to_address, subject, preheader, html, text, headers,
                       campaign_id, variant, rule, model_versions
                from {table}
                where send_date = ? and campaign_id = ? and status = 'rendered'
                order by customer_id, idempotency_key""",
            params=[send_date, campaign_id],
        ).to_arrow_reader(JSONL_BATCH_ROWS)
        written = 0
        with tmp.open("w", encoding="utf-8") as handle:
            for batch in reader:
                handle.writelines(_jsonl_line(item) for item in batch.to_pylist())
                written += batch.num_rows
        if written:
            tmp.replace(path)
        else:
            tmp.unlink()
    return sorted(folder.glob(f"{file_prefix}*.jsonl"))


def _jsonl_line(item: dict[str, Any]) -> str:
    return (
        json.dumps(
            {
                "idempotency_key": item["idempotency_key"],
                "to": item["to_address"],
                "subject": item["subject"],
                "preheader": item["preheader"],
                "html": item["html"],
                "text": item["text"],
                "headers": json.loads(item["headers"]),
                "campaign": item["campaign_id"],
                "variant": item["variant"],
                "rule": item["rule"],
                "model_versions": json.loads(item["model_versions"]),
            },
            ensure_ascii=False,
        )
        + "\n"
    )


def write_journey_jsonl(
    con: duckdb.DuckDBPyConnection, output_dir: Path, rendered_since: dt.datetime
) -> list[Path]:
    """ESP-ready JSONL of the journey payloads rendered at or after `rendered_since`, next to
    the campaigns' (`<output>/payloads/send_date=*/journey__<journey>.jsonl`): the send-time API
    serves every email's view-in-browser link from these files."""
    pairs = con.execute(
        """select distinct send_date, campaign_id from delivery.journey_payloads
           where rendered_at >= ? and status = 'rendered' order by all""",
        [rendered_since],
    ).fetchall()
    written: list[Path] = []
    for send_date, journey_id in pairs:
        folder = output_dir / "payloads" / f"send_date={send_date}"
        written += _write_jsonl(
            con,
            send_date,
            {journey_id},
            folder,
            table="delivery.journey_payloads",
            file_prefix="journey__",
        )
    return sorted(set(written))
