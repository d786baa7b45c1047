"""The erasure module on a small hand-made estate: every kind of file and table it handles."""

import datetime as dt
import json

import duckdb

from personalization_assets.defs.privacy import erasure, pseudonym


def test_erasure_handles_each_file_kind_and_only_the_named_customers(tmp_path):
    landing, output, models = tmp_path / "landing", tmp_path / "output", tmp_path / "models"
    (landing / "events" / "date=2026-10-01").mkdir(parents=True)
    (landing / "crm").mkdir()
    (landing / "orders").mkdir()
    (output / "previews").mkdir(parents=True)
    events = landing / "events" / "date=2026-10-01" / "e.ndjson"
    events.write_text(
        "\n".join(
            json.dumps({"event_id": f"e{i}", "user_id": user})
            for i, user in enumerate(["c1", "c10", "C1", "c2"])
        )
        + "\n"
    )
    crm = landing / "crm" / "customers.csv"
    crm.write_text(
        "customer_id,email,first_name\r\n"
        "c1,Ann@Example.com,Ann\r\n"
        'c2,bob@example.com,"Bob\r\nmultiline"\r\n'
        "c10,c1@example.net,Cy\r\n"
    )
    orders = landing / "orders" / "o.csv"
    orders.write_text("Invoice,StockCode,Customer ID\n1,13085,777.0\n2,777,13085.0\n")
    (landing / "_manifest.json").write_text(json.dumps({"ids": ["c1", "c2"]}))
    (output / "previews" / "a.html").write_text("<p>Hi Ann, ann%40example.com</p>")
    (output / "previews" / "b.html").write_text("<p>Hi Bob</p>")
    (output / "mail.eml").write_text("To: ann@example.com\nHi Ann\n")

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create schema raw")
    con.execute("create table raw.lines (raw_line varchar, product_id varchar)")
    con.execute(
        """insert into raw.lines values ('{"user_id":"c1"}', 'p1'), ('{"user_id":"c10"}', 'c1'),
           ('x 13085 y', '13085'), ('no one', '777')"""
    )
    con.execute("create table main.contacts (customer_id varchar, email varchar)")
    con.execute("insert into main.contacts values ('C1 ', 'ann@example.com'), ('c10', 'x@y.io')")
    con.execute("create view main.v as select * from main.contacts")

    report = erasure.erase_customers(
        con,
        ["c1", "777"],
        erasure.Places(landing, output, models, tmp_path / "w.duckdb"),
        requested_by="test",
        now=dt.datetime(2026, 11, 1),
    )

    assert [json.loads(line)["user_id"] for line in events.read_text().splitlines()] == [
        "c10",
        "c2",
    ]
    # a quoted field spans lines: records are re-written by the csv module, others kept
    assert crm.read_bytes().decode() == (
        'customer_id,email,first_name\r\nc2,bob@example.com,"Bob\r\nmultiline"\r\n'
        "c10,c1@example.net,Cy\r\n"
    )
    assert orders.read_text() == "Invoice,StockCode,Customer ID\n2,777,13085.0\n"
    assert json.loads((landing / "_manifest.json").read_text()) == {"ids": ["[erased]", "c2"]}
    assert not (output / "previews" / "a.html").exists()
    assert (output / "previews" / "b.html").exists()
    assert not (output / "mail.eml").exists()
    assert con.execute("select raw_line, product_id from raw.lines order by 1").fetchall() == [
        ("no one", "777"),
        ("x 13085 y", "13085"),
        ('{"user_id":"c10"}', "c1"),
    ]
    assert con.execute("select * from main.contacts").fetchall() == [("c10", "x@y.io")]
    assert not list(landing.rglob(".*.erasing"))
    by_customer = con.execute(
        "select customer_hash, sum(removed) from privacy.erasure_log group by 1"
    ).fetchall()
    assert dict(by_customer) == {
        # 2 event lines, CRM row, manifest token, preview, .eml, raw line, contact row
        pseudonym.customer_hash("c1"): 2 + 1 + 1 + 1 + 1 + 1 + 1,
        pseudonym.customer_hash("777"): 1,
    }
    assert report.errors == []
    assert con.execute("select count(*) from privacy.erased_customers").fetchall() == [(2,)]
