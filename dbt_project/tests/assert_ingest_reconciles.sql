{{ config(meta={'dagster': {'ref': {'name': 'ingest_reconciliation'}}}) }}
{#- Fails on any source where received != accepted + quarantined + duplicates. -#}

select *
from {{ ref('ingest_reconciliation') }}
where unaccounted != 0
