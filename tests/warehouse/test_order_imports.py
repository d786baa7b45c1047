"""Historic order exports in the UCI Online Retail II layout become the same cleaned purchase facts."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from personalization_assets import paths
from personalization_assets.defs.ingest import landing
from personalization_assets.defs.ingest.order_imports import (
    OrderImportError,
    load_order_imports_config,
)
from tests.conftest import SHARED_RETAIL

CONFIG = load_order_imports_config(paths.PROJECT_ROOT / "config" / "order_imports.yaml")


def test_online_retail_ii_lines_become_order_facts(sample_shop):
    orders = {
        order_id: (customer_id, ordered_at, lines, amount, cancelled)
        for order_id, customer_id, ordered_at, lines, amount, cancelled in sample_shop.query(
            "select order_id, customer_id, ordered_at, line_count, net_amount_base, is_cancellation "
            "from fct_orders where order_source = 'orders_import'"
        )
    }
    # Two lines of one invoice; float-written customer id normalized; London winter time = UTC.
    assert orders["489434"][0] == "13085"
    assert orders["489434"][1] == datetime(2009, 12, 1, 7, 45)
    assert orders["489434"][2] == 2
    assert orders["489434"][3] == pytest.approx(round((12 * 6.95 + 12 * 6.75) * 1.17, 2), abs=0.02)
    # A `C` invoice is a cancellation with a negative value.
    assert orders["C489449"][4] is True and orders["C489449"][3] < 0
    # British summer time (BST, UTC+1) is converted.
    assert orders["489452"][1] == datetime(2010, 7, 1, 10, 0)


def test_online_retail_ii_bad_lines_are_quarantined_with_reasons(sample_shop):
    reasons = sorted(
        reason
        for (reason,) in sample_shop.query(
            "select reason from quarantined_rows where source = 'orders'"
        )
    )
    assert reasons == [
        "invalid_quantity",
        "invalid_timestamp",
        "missing_customer_id",
        "missing_customer_id",
    ]
    received, accepted, quarantined = sample_shop.query(
        "select rows_received, rows_accepted, rows_quarantined from ingest_reconciliation "
        "where source = 'orders'"
    )[0]
    assert (received, accepted, quarantined) == (10, 6, 4)


def test_order_only_customers_join_dim_customers_without_consent(sample_shop):
    rows = sample_shop.query(
        "select customer_source, email_consent, country from dim_customers where customer_id = '16321'"
    )
    assert rows == [("orders_import", False, "AU")]


def test_an_export_matching_no_layout_is_rejected_with_the_layouts_named(tmp_path):
    folder = tmp_path / "orders"
    folder.mkdir()
    (folder / "weird.csv").write_text("Order,Item\n1,2\n")
    con = duckdb.connect()
    with pytest.raises(OrderImportError, match="online_retail_ii"):
        landing.load_order_exports(con, tmp_path, CONFIG)


@pytest.mark.skipif(not SHARED_RETAIL.exists(), reason="shared Online Retail sample not present")
def test_the_shared_online_retail_sample_loads_every_row(tmp_path):
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "online_retail.csv").symlink_to(SHARED_RETAIL)
    con = duckdb.connect()
    result = landing.load_order_exports(con, tmp_path, CONFIG)
    data_rows = sum(1 for _ in SHARED_RETAIL.open(encoding="utf-8")) - 1
    assert result.rows == data_rows
    layouts = con.execute("select distinct layout from raw.order_lines").fetchall()
    assert layouts == [("online_retail",)]
    unparsed = con.execute(
        "select count(*) from raw.order_lines where ordered_at_local is null"
    ).fetchone()[0]
    assert unparsed == 0
