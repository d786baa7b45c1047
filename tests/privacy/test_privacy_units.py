"""Keyed hashes, masking, the privacy config and the tombstone filter of the raw loaders."""

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from personalization_assets.defs.ingest import landing
from personalization_assets.defs.privacy import pseudonym, tombstone
from personalization_assets.defs.privacy.config import PrivacyConfigError, load_privacy_config
from personalization_assets.defs.privacy.masking import (
    Contact,
    mask_contact,
    mask_email,
    mask_emails,
)
from tests.conftest import write_landing

NOW = dt.datetime(2026, 10, 31, 12)


def test_keyed_hash_depends_on_the_secret_and_normalizes_ids(monkeypatch):
    monkeypatch.setenv(pseudonym.KEY_ENV, "secret-one")
    first = pseudonym.customer_hash("C001")
    assert first == pseudonym.customer_hash(" c001 ")
    assert pseudonym.customer_hash("13085.0") == pseudonym.customer_hash("13085")
    assert "c001" not in first and len(first) == 64
    monkeypatch.setenv(pseudonym.KEY_ENV, "secret-two")
    assert pseudonym.customer_hash("c001") != first
    assert not pseudonym.using_dev_key()
    monkeypatch.delenv(pseudonym.KEY_ENV)
    assert pseudonym.using_dev_key()


def test_masking_hides_addresses_and_names_but_not_test_addresses():
    assert mask_email("jane.doe@example.com") == "j***@example.com"
    html = (
        '<p>Hi Jane,</p><a href="https://x/u?e=jane.doe%40example.com">unsubscribe</a>'
        "<p>Jane Doe · jane.doe@example.com · Janet · other@shop.test</p>"
    )
    masked = mask_contact(html, Contact("jane.doe@example.com", "Jane", "Doe"))
    assert "jane.doe" not in masked and "Jane" not in masked.replace("Janet", "")
    assert "Doe" not in masked and "Janet" in masked
    assert "J***" in masked and "j***@example.com" in masked and "o***@shop.test" in masked
    seed = Contact("seed@example.com", "Seed", "Inbox")
    assert mask_contact("Hi Seed seed@example.com", seed, ["SEED@example.com"]) == (
        "Hi Seed seed@example.com"
    )
    assert mask_emails("a b@c.io d", ["b@c.io"]) == "a b@c.io d"


def test_privacy_config_is_validated_with_the_file_named(tmp_path):
    path = tmp_path / "privacy.yaml"
    assert load_privacy_config(path).retention_days == 730
    path.write_text("retention_days: 0\n")
    with pytest.raises(PrivacyConfigError, match="privacy.yaml"):
        load_privacy_config(path)
    path.write_text("unmasked_test_addresses: [not-an-address]\n")
    with pytest.raises(PrivacyConfigError, match="not an email address"):
        load_privacy_config(path)
    path.write_text("retention_days: null\nunmasked_test_addresses: [Seed@Example.com]\n")
    config = load_privacy_config(path)
    assert config.retention_days is None and config.unmasked_test_addresses == ["seed@example.com"]


def _event(event_id: str, user: str) -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "event_type": "page_view",
        "timestamp": "2026-10-01T10:00:00+00:00",
        "properties": {},
    }


def _customer(customer_id: str, email: str) -> dict:
    return {
        "customer_id": customer_id,
        "email": email,
        "email_consent": "true",
        "tracking_consent": "true",
    }


def test_raw_loaders_drop_and_count_tombstoned_customers(tmp_path: Path):
    root = write_landing(
        tmp_path,
        events={"2026-10-01": [_event("e1", "c1"), _event("e2", "c2"), _event("e3", " C1 ")]},
        customers=[
            _customer("c1", "one@example.com"),
            _customer("c2", "two@example.com"),
            _customer("c9", "ONE@example.com"),
        ],
        products=[{"product_id": "p1", "price": "1"}],
    )
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    tombstone.add_to_tombstone(con, {"c1": {"one@example.com"}}, "req", NOW)
    events = landing.load_event_lines(con, root, now=NOW)
    customers = landing.load_csv_export(
        con,
        root,
        folder="crm",
        table="customers",
        columns=["customer_id", "email"],
        required=["customer_id"],
        now=NOW,
    )
    assert (events.rows, events.erased_rows) == (1, 2)
    # c9 re-uses the erased address: the address is erased, so its row goes too.
    assert (customers.rows, customers.erased_rows) == (1, 2)
    assert con.execute("select customer_id from raw.customers").fetchall() == [("c2",)]
    assert con.execute("select count(*) from privacy.erased_customers").fetchall() == [(1,)]
    assert "c1" not in str(con.execute("select * from privacy.erased_customers").fetchall())
