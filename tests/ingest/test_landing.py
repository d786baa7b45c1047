"""Landing-zone loading: files copied verbatim into raw tables, nothing parsed, nothing dropped."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from personalization_assets import contract
from personalization_assets.defs.ingest import landing

NOW = dt.datetime(2026, 10, 3, 12)


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _load_customers(con, landing_dir):
    return landing.load_csv_export(
        con,
        landing_dir,
        folder="crm",
        table="customers",
        columns=contract.CUSTOMER_COLUMNS,
        required=landing.REQUIRED_CUSTOMER_COLUMNS,
    )


def test_event_lines_keep_file_and_physical_line_numbers(con, tmp_path):
    _write(tmp_path / "events/date=2026-10-01/a.ndjson", '{"a":1}\n\n{"b":2}\r\nnot json\n')
    result = landing.load_event_lines(con, tmp_path)
    rows = con.execute(
        "select source_file, landing_date::varchar, line_no, raw_line from raw.event_lines order by line_no"
    ).fetchall()
    assert rows == [
        ("events/date=2026-10-01/a.ndjson", "2026-10-01", 1, '{"a":1}'),
        ("events/date=2026-10-01/a.ndjson", "2026-10-01", 3, '{"b":2}'),
        ("events/date=2026-10-01/a.ndjson", "2026-10-01", 4, "not json"),
    ]
    assert result.rows == 3


def test_loading_in_small_batches_gives_the_same_rows_as_one_statement(tmp_path):
    for day in ("2026-10-01", "2026-10-02"):
        for name in ("a", "b", "c"):
            lines = "".join(f'{{"n":{i},"f":"{name}"}}\n' for i in range(50))
            _write(tmp_path / f"events/date={day}/{name}.ndjson", lines + "\n")
    query = "select * from raw.event_lines order by source_file, line_no"
    tables = []
    for batch_bytes in (landing.DEFAULT_BATCH_BYTES, 1, 2_000):
        con = duckdb.connect()
        result = landing.load_event_lines(con, tmp_path, now=NOW, batch_bytes=batch_bytes)
        assert result.rows == 300
        tables.append(con.execute(query).fetchall())
        con.close()
    assert tables[0] == tables[1] == tables[2]
    assert len(tables[0]) == 300


def test_files_still_being_written_or_outside_the_contract_are_not_loaded(con, tmp_path):
    _write(tmp_path / "events/date=2026-10-01/done.ndjson", '{"a":1}\n')
    _write(tmp_path / "events/date=2026-10-01/writing.ndjson.tmp", '{"half":')
    _write(tmp_path / "events/date=2026-10-01/.hidden.ndjson", '{"a":2}\n')
    _write(tmp_path / "events/2026-10-01/wrong_folder.ndjson", '{"a":3}\n')
    _write(tmp_path / "events/date=2026-13-01/bad_date.ndjson", '{"a":4}\n')
    result = landing.load_event_lines(con, tmp_path)
    assert result.files == ["events/date=2026-10-01/done.ndjson"]
    assert sorted(result.skipped_files) == [
        "events/2026-10-01/wrong_folder.ndjson",
        "events/date=2026-13-01/bad_date.ndjson",
    ]
    assert con.execute("select count(*) from raw.event_lines").fetchone()[0] == 1


def test_reloading_is_idempotent_and_keeps_first_load_time(con, tmp_path):
    _write(tmp_path / "events/date=2026-10-01/a.ndjson", '{"a":1}\n')
    import datetime as dt

    first = dt.datetime(2026, 10, 1, 12)
    landing.load_event_lines(con, tmp_path, now=first)
    landing.load_event_lines(con, tmp_path, now=first + dt.timedelta(hours=1))
    assert con.execute("select count(*), min(loaded_at) from raw.event_lines").fetchone() == (
        1,
        first,
    )


def test_a_missing_landing_folder_gives_a_clear_message_not_a_stack_trace(con, tmp_path):
    result = landing.load_event_lines(con, tmp_path / "nowhere")
    assert result.rows == 0
    assert "does not exist" in result.message and "PERSONALIZATION_LANDING_DIR" in result.message
    assert con.execute("select count(*) from raw.event_lines").fetchone()[0] == 0


def test_a_csv_missing_a_required_column_names_file_and_column(con, tmp_path):
    _write(tmp_path / "crm/customers.csv", "customer_id,first_name\nc1,Ann\n")
    with pytest.raises(landing.LandingContractError, match=r"crm/customers.csv.*'email'"):
        _load_customers(con, tmp_path)


def test_malformed_csv_records_are_kept_with_the_parser_error(con, tmp_path):
    _write(
        tmp_path / "catalog/products.csv",
        "product_id,name,category,price,currency,in_stock\n"
        "p1,Shoe,shoes,10,EUR,true\n"
        "p2,Boot,shoes,12,EUR,true,unexpected\n"
        "p3,Hat,accessories,5,EUR,false\n",
    )
    result = landing.load_csv_export(
        con,
        tmp_path,
        folder="catalog",
        table="products",
        columns=contract.PRODUCT_COLUMNS,
        required=landing.REQUIRED_PRODUCT_COLUMNS,
    )
    rows = con.execute(
        "select product_id, malformed_error is not null, malformed_record from raw.products "
        "order by row_no"
    ).fetchall()
    assert result.malformed_records == 1
    assert rows[0][:2] == ("p1", False) and rows[-1][:2] == ("p3", False)
    assert (None, True, "p2,Boot,shoes,12,EUR,true,unexpected") in rows


def test_optional_csv_columns_may_be_absent(con, tmp_path):
    _write(
        tmp_path / "crm/customers.csv", "customer_id,email,email_consent\nc1,a@example.com,true\n"
    )
    _load_customers(con, tmp_path)
    assert con.execute("select customer_id, timezone from raw.customers").fetchall() == [
        ("c1", None)
    ]


def test_good_generated_events_follow_the_published_json_schema(tmp_path):
    import json

    import jsonschema

    from personalization_assets import paths
    from personalization_assets.defs.ingest.sample_data import generate_sample_data

    schema = json.loads((paths.PROJECT_ROOT / "contracts" / "event.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    manifest = generate_sample_data(tmp_path, customers=80, products=20, days=10, seed=1)
    bad = {
        (row["file"], row["line"])
        for row in manifest.to_dict()["injected"]
        if row["disposition"] != "accepted"
    }
    checked = 0
    for path in sorted(tmp_path.glob("events/date=*/*.ndjson")):
        relative = path.relative_to(tmp_path).as_posix()
        for number, line in enumerate(path.read_text().split("\n"), start=1):
            if line and (relative, number) not in bad:
                validator.validate(json.loads(line))
                checked += 1
    assert checked > 100
