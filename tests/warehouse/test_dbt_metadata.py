"""dbt materializations carry row counts reported by dbt post-hooks while the build streams."""

import re

import dagster as dg


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {
        "/".join(m.asset_key.path): m.metadata
        for m in result.asset_materializations_for_node("warehouse_dbt_assets")
    }


def test_tables_report_their_row_counts_and_quarantine_reasons(sample_shop):
    materialized = _materializations(sample_shop.result)
    expected = {
        "warehouse/dim_products": "main.dim_products",
        "warehouse/quarantined_rows": "main.quarantined_rows",
        "warehouse/customer_keys": "main.customer_keys",
        "warehouse/currency_rates": "reference.currency_rates",  # a seed
    }
    for asset, table in expected.items():
        count = sample_shop.query(f"select count(*) from {table}")[0][0]
        assert count > 0
        assert materialized[asset]["dagster/row_count"].value == count, asset
    reasons = materialized["warehouse/quarantined_rows"]["rows_by_reason"].value
    rows = re.findall(r"^\| (\w+) \| (\w+) \| (\d+) \|$", reasons, flags=re.M)
    stored = sample_shop.query(
        "select source, reason, count(*) from main.quarantined_rows group by all"
    )
    assert sorted((s, r, int(n)) for s, r, n in rows) == sorted(stored)
    # Views are not counted (a count would re-run their query).
    assert "dagster/row_count" not in materialized["warehouse/stg_raw__event_lines"]


def test_each_check_follows_the_materialization_it_checks(sample_shop):
    """Events are passed on as dbt streams them: a test's check result comes after its model's
    materialization in the same run, never before (it would be attached to the previous one)."""
    seen: set[tuple[str, ...]] = set()
    checks = 0
    for event in sample_shop.result.all_events:
        if event.step_key != "warehouse_dbt_assets":
            continue
        if event.event_type_value == "ASSET_MATERIALIZATION":
            seen.add(tuple(event.asset_key.path))
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            checks += 1
            target = tuple(event.event_specific_data.asset_check_key.asset_key.path)
            assert target in seen, target
    assert checks > 20
