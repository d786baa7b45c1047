"""Erasure end to end on a copy of the sample shop, scanned rather than assumed.

The module fixture copies the session's sample shop, erases a sample of customers with the
`personalization erase` CLI (which runs the `erase_customers` job), records what a scan finds,
then re-delivers the original CRM, order and event files (still holding those customers) and
runs `full_pipeline` again on a persistent-in-memory instance whose event log is scanned too.
"""

import csv
import datetime as dt
import json
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
import pytest

from personalization_assets import cli
from personalization_assets.defs.automation.jobs import range_tags
from personalization_assets.defs.privacy import pseudonym
from tests.conftest import project_env, run_job

EXCLUDED_SCHEMAS = ("privacy", "information_schema", "pg_catalog")


@dataclass
class Target:
    customer_id: str
    emails: list[str]

    def needles(self) -> list[str]:
        key = pseudonym.pseudonym_key()
        return [
            *self.emails,
            *(quote(e, safe="") for e in self.emails),
            pseudonym.customer_hash(self.customer_id, key),
            *(pseudonym.email_hash(e, key) for e in self.emails),
        ]


def _id_regex(targets: list[Target]) -> str:
    ids = "|".join(re.escape(t.customer_id) for t in targets)
    return rf"(?i)(^|[^a-z0-9_])({ids})(\.0+)?([^a-z0-9_]|$)"


def scan_database(path: Path, targets: list[Target]) -> list[str]:
    """`schema.table` of every table or view with a target's id (token), email or hash."""
    pattern = _id_regex(targets)
    needles = [n.lower() for t in targets for n in t.needles()]
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = con.execute(
            """select table_schema, table_name, column_name, data_type
               from information_schema.columns where table_schema not in (select unnest(?))""",
            [list(EXCLUDED_SCHEMAS)],
        ).fetchall()
        by_table: dict[tuple[str, str], list[str]] = {}
        for schema, table, column, data_type in columns:
            textual = "VARCHAR" in data_type or "JSON" in data_type
            if textual or column in ("customer_id", "user_id"):
                by_table.setdefault((schema, table), []).append(f'cast("{column}" as varchar)')
        hits = []
        for (schema, table), exprs in sorted(by_table.items()):
            text = " || ' ' || ".join(f"coalesce({e}, '')" for e in exprs)
            found = con.execute(
                f"""select count(*) from "{schema}"."{table}"
                    where regexp_matches({text}, ?)
                       or list_has_any([n for n in ? if contains(lower({text}), n)], ?)""",
                [pattern, needles, needles],
            ).fetchall()[0][0]
            if found:
                hits.append(f"{schema}.{table}")
        return hits
    finally:
        con.close()


def scan_files(roots: list[Path], targets: list[Target]) -> list[str]:
    """Files (other than DuckDB databases, scanned by SQL) mentioning a target."""
    pattern = re.compile(
        r"(?<![A-Za-z0-9_])(" + "|".join(re.escape(t.customer_id) for t in targets) + r")"
        r"(\.0+)?(?![A-Za-z0-9_])",
        re.IGNORECASE,
    )
    needles = [n.lower() for t in targets for n in t.needles()]
    hits = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix in {".duckdb", ".wal"}:
                continue
            text = path.read_bytes().decode("latin-1")
            if pattern.search(text) or any(n in text.lower() for n in needles):
                hits.append(str(path.relative_to(root.parent)))
    return hits


def _scan_all(root: Path, targets: list[Target]) -> dict[str, list[str]]:
    databases = [root / "warehouse.duckdb", *sorted((root / "output").rglob("*.duckdb"))]
    return {
        "tables": [h for db in databases for h in scan_database(db, targets)],
        "files": scan_files([root / "landing", root / "output", root / "models"], targets),
    }


def _crm(landing: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted((landing / "crm").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                rows[row["customer_id"].strip().lower()] = row
    return rows


def _pick_targets(con, crm: dict[str, dict], retail_csv: Path) -> list[Target]:
    rendered_with_factors = con.execute(
        """select p.customer_id from campaigns.email_payloads p
           join main.customer_keys k using (customer_id)
           join models.product_recommendations r using (customer_key)
           where p.status = 'rendered' and r.source = 'als' group by 1 order by 1 limit 2"""
    ).fetchall()
    retail_text = retail_csv.read_text()
    retail_ids = con.execute(
        """select customer_id from main.fct_orders where customer_id not like 'c%'
           group by 1 order by count(*) desc"""
    ).fetchall()
    # An import customer whose number appears nowhere else in the export (no StockCode clash).
    retail = next(
        r[0]
        for r in retail_ids
        if len(re.findall(rf"(?<![\w.]){re.escape(r[0])}(?![\w])", retail_text))
        == len(re.findall(rf",{re.escape(r[0])}\.0,", retail_text))
    )
    ids = [r[0] for r in rendered_with_factors] + [retail]
    return [
        Target(i, [crm[i]["email"].strip().lower()] if i in crm and crm[i]["email"] else [])
        for i in ids
    ]


@dataclass
class ErasedShop:
    root: Path
    targets: list[Target]
    before: dict[str, list[str]]
    after_erasure: dict[str, list[str]]
    after_rerun: dict[str, list[str]]
    cli_output: str
    rerun: dg.ExecuteInProcessResult
    instance: dg.DagsterInstance
    crm: dict[str, dict]
    log_rows: list[tuple]
    als_user_ids: list[str]


@pytest.fixture(scope="module")
def erased_shop(sample_shop, tmp_path_factory) -> ErasedShop:
    root = tmp_path_factory.mktemp("erased_shop")
    for name in ("landing", "output", "models"):
        if (sample_shop.root / name).exists():
            shutil.copytree(sample_shop.root / name, root / name)
    shutil.copy(sample_shop.database, root / "warehouse.duckdb")
    crm = _crm(root / "landing")
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    targets = _pick_targets(con, crm, root / "landing" / "orders" / "online_retail_ii.csv")
    con.close()
    before = _scan_all(root, targets)

    with pytest.MonkeyPatch.context() as mp:
        for key, value in project_env(root).items():
            mp.setenv(key, value)
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            args = [a for t in targets for a in ("--customer-id", t.customer_id.upper())]
            assert cli.main(["erase", *args, "--requested-by", "dpo@shop.test"]) == 0
    after_erasure = _scan_all(root, targets)
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    log_rows = con.execute("select * from privacy.erasure_log").fetchall()
    con.close()
    als_model, als_matrix = pickle.loads(
        (root / "models/recommendations/als_state.pkl").read_bytes()
    )
    assert als_model.user_factors.shape[0] <= len(als_matrix.user_ids)
    assert als_matrix.user_items.shape[0] == len(als_matrix.user_ids)

    # The sources deliver their old exports again, erased customers included.
    for relative in ("crm", "orders"):
        shutil.rmtree(root / "landing" / relative)
        shutil.copytree(sample_shop.landing / relative, root / "landing" / relative)
    for original in sorted((sample_shop.landing / "events").rglob("*.ndjson")):
        if any(t.customer_id in original.read_text() for t in targets):
            shutil.copy(original, root / "landing" / original.relative_to(sample_shop.landing))
    instance = dg.DagsterInstance.ephemeral()
    rerun = run_job(root, instance=instance)
    return ErasedShop(
        root=root,
        targets=targets,
        before=before,
        after_erasure=after_erasure,
        after_rerun=_scan_all(root, targets),
        cli_output=out.getvalue(),
        rerun=rerun,
        instance=instance,
        crm=crm,
        log_rows=log_rows,
        als_user_ids=[str(u) for u in als_matrix.user_ids],
    )


def test_the_scan_finds_the_customers_before_erasure(erased_shop):
    tables = set(erased_shop.before["tables"])
    assert {"main.fct_events", "campaigns.email_payloads", "raw.customers"} <= tables
    assert {"main.fct_orders", "raw.order_lines", "models.product_recommendations"} <= tables
    files = erased_shop.before["files"]
    assert any(f.startswith("landing/events/") for f in files)
    assert "landing/crm/customers.csv" in files and "landing/orders/online_retail_ii.csv" in files
    assert "models/recommendations/als_state.pkl" in files
    assert any(f.startswith("output/payloads/") for f in files)


def test_erasure_leaves_no_id_email_or_hash_in_any_table_or_file(erased_shop):
    assert erased_shop.after_erasure == {"tables": [], "files": []}
    erased = {t.customer_id for t in erased_shop.targets}
    erased |= {pseudonym.customer_hash(t.customer_id) for t in erased_shop.targets}
    assert not erased & set(erased_shop.als_user_ids)


def test_erasure_log_names_customers_by_hash_only(erased_shop):
    hashes = {pseudonym.customer_hash(t.customer_id) for t in erased_shop.targets}
    assert {row[1] for row in erased_shop.log_rows} == hashes
    assert {row[2] for row in erased_shop.log_rows} == {"dpo@shop.test"}
    locations = {row[5] for row in erased_shop.log_rows}
    assert "warehouse:main.fct_events" in locations
    assert "landing:crm/customers.csv" in locations
    assert any("als_state.pkl (user factors)" in loc for loc in locations)
    flat = repr(erased_shop.log_rows).lower() + erased_shop.cli_output.lower()
    for target in erased_shop.targets:
        assert not re.search(rf"(?<![\w]){re.escape(target.customer_id)}(?![\w])", flat)
        assert not any(e in flat for e in target.emails)
    assert "warehouse:main.fct_events" in erased_shop.cli_output


def test_a_full_rerun_with_redelivered_sources_does_not_bring_them_back(erased_shop):
    assert erased_shop.rerun.success
    files = erased_shop.after_rerun["files"]
    # The re-delivered landing files hold them (the source's copy), nothing derived does.
    assert all(f.startswith("landing/") for f in files) and files
    assert erased_shop.after_rerun["tables"] == []
    con = duckdb.connect(str(erased_shop.root / "warehouse.duckdb"), read_only=True)
    customers = con.execute("select count(*) from main.dim_customers").fetchall()[0][0]
    con.close()
    assert customers > 0


def _crm_personal_data(crm: dict[str, dict]) -> tuple[set[str], set[str]]:
    emails = {r["email"].strip().lower() for r in crm.values() if "@" in (r["email"] or "")}
    names = {
        f"{r['first_name'].strip()} {r['last_name'].strip()}"
        for r in crm.values()
        if r.get("first_name", "").strip() and r.get("last_name", "").strip()
    }
    return emails, names


def test_metadata_and_logs_of_a_full_run_contain_no_address_or_name(erased_shop):
    emails, names = _crm_personal_data(erased_shop.crm)
    entries = erased_shop.instance.all_logs(erased_shop.rerun.run_id)
    # Every event of the run serialized whole: messages, materialization and check metadata.
    blob = "\n".join(dg.serialize_value(entry) for entry in entries)
    assert blob.count("ASSET_MATERIALIZATION") > 20 and "dagster/row_count" in blob
    assert not [e for e in emails if e in blob.lower()]
    assert not [n for n in names if n in blob]


def test_preview_files_are_masked(erased_shop):
    emails, names = _crm_personal_data(erased_shop.crm)
    previews = sorted((erased_shop.root / "output" / "previews").glob("*.html"))
    assert previews
    con = duckdb.connect(str(erased_shop.root / "warehouse.duckdb"), read_only=True)
    recipients = dict(
        con.execute(
            """select left(p.idempotency_key, 10), c.first_name
               from campaigns.email_payloads p join main.dim_customer_contacts c using (customer_id)
               where p.status = 'rendered'"""
        ).fetchall()
    )
    con.close()
    masked = 0
    for path in previews:
        html = path.read_text()
        assert not [e for e in emails if e in html.lower()], path.name
        assert not [n for n in names if n in html], path.name
        first_name = recipients[path.stem.rsplit("__", 1)[1]]
        assert not re.search(rf"(?<!\w){re.escape(first_name)}(?!\w)", html), path.name
        masked += f"{first_name[0]}***" in html
    assert masked > 0


def test_a_revocation_after_the_grant_takes_effect_in_the_next_decisions_run(erased_shop):
    """Runs last: it appends an unsubscribe and runs `event_refresh` on the same copy."""
    root = erased_shop.root
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    as_of = con.execute("select as_of from main.feature_as_of").fetchall()[0][0]
    customer, send_date = con.execute(
        """select d.customer_id, d.send_date from campaigns.campaign_decisions d
           join main.dim_consent c on c.customer_id = d.customer_id
            and c.purpose = 'email_marketing' and c.granted
           where d.status = 'send' and d.send_date = ? order by d.customer_id limit 1""",
        [as_of.date()],
    ).fetchall()[0]
    last_day = con.execute("select max(landing_date) from raw.event_lines").fetchall()[0][0]
    con.close()
    at = as_of + dt.timedelta(seconds=1)
    assert at.date() == send_date
    folder = root / "landing" / "events" / f"date={last_day}"
    event = {
        "event_id": "e-revoke-1",
        "user_id": customer,
        "event_type": "unsubscribe",
        "timestamp": at.isoformat() + "+00:00",
        "properties": {},
    }
    (folder / "zz_unsubscribe.ndjson").write_text(json.dumps(event) + "\n")
    result = run_job(
        root, "event_refresh", tags=range_tags(last_day, last_day), instance=erased_shop.instance
    )
    assert result.success
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    consent = con.execute(
        """select granted, source, source_ref from main.dim_consent
           where customer_id = ? and purpose = 'email_marketing'""",
        [customer],
    ).fetchall()
    decisions = con.execute(
        "select status, reason from campaigns.campaign_decisions where customer_id = ? "
        "and send_date = ?",
        [customer, send_date],
    ).fetchall()
    con.close()
    assert consent == [(False, "unsubscribe_event", "e-revoke-1")]
    assert decisions and all(status != "send" for status, _ in decisions)
    assert any("unsubscribed" in (reason or "") for _, reason in decisions)
