"""Incremental recommendations in the real graph: only customers with new events change."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import duckdb

from personalization_assets.defs.automation.jobs import range_tags
from tests.conftest import by_id, run_job

RECS = dg.AssetKey(["models", "product_recommendations"])


def _recs(database) -> dict[str, list]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "select customer_id, list(product_id order by rank) from "
            f"{by_id('models.product_recommendations')} group by customer_id"
        ).fetchall()
        return dict(rows)
    finally:
        con.close()


def test_new_events_refresh_only_those_customers_without_a_retrain(sample_shop, tmp_path):
    shutil.copytree(sample_shop.landing, tmp_path / "landing")
    shutil.copy(sample_shop.database, tmp_path / "warehouse.duckdb")
    shutil.copytree(sample_shop.root / "models", tmp_path / "models")
    before = _recs(tmp_path / "warehouse.duckdb")
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    as_of = con.execute("select as_of from feature_as_of").fetchone()[0]
    customers = [
        r[0]
        for r in con.execute(
            f"select customer_id from {by_id('customer_features')} where frequency > 0 "
            "order by customer_id limit 2"
        ).fetchall()
    ]
    products = [
        r[0]
        for r in con.execute(
            "select product_id from dim_products where in_stock order by product_id limit 6"
        ).fetchall()
    ]
    con.close()
    day = as_of.date()
    folder = tmp_path / "landing" / "events" / f"date={day}"
    lines = [
        json.dumps(
            {
                "event_id": f"new{i}{j}",
                "user_id": customer,
                "event_type": "add_to_cart",
                "timestamp": (as_of + dt.timedelta(minutes=5)).isoformat() + "+00:00",
                "product_id": product,
                "properties": {},
            }
        )
        for i, customer in enumerate(customers)
        for j, product in enumerate(products)
    ]
    (folder / "events_late_9999.ndjson").write_text("\n".join(lines) + "\n")

    keys = list(
        dg.AssetSelection.all().resolve(_graph())
        - {dg.AssetKey(["models", "churn_model"]), dg.AssetKey(["models", "purchase_model"])}
    )
    result = run_job(
        tmp_path,
        job_name="event_refresh",
        asset_selection=keys,
        tags=range_tags(day, day),
        run_config={
            "ops": {"models__product_recommendations": {"config": {"mode": "incremental"}}}
        },
    )
    assert result.success
    materialization = result.asset_materializations_for_node("models__product_recommendations")[0]
    assert materialization.metadata["mode"].value == "incremental"
    assert materialization.metadata["customers_refreshed"].value == 2
    after = _recs(tmp_path / "warehouse.duckdb")
    unchanged = {c: r for c, r in before.items() if c not in customers}
    assert {c: after[c] for c in unchanged} == unchanged
    assert all(after[c] != before[c] for c in customers)


def _graph():
    from personalization_assets.definitions import defs

    return defs().resolve_asset_graph()
