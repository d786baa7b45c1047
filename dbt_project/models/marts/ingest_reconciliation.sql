{#-
  Per source: rows received versus rows accepted, quarantined and set aside as duplicates.
  `unaccounted` must be 0 (a dbt test fails the run otherwise): nothing is lost on the way in.
-#}

with received as (

    select 'events' as source, count(*) as rows_received from {{ source('raw', 'event_lines') }}
    union all
    select 'customers', count(*) from {{ source('raw', 'customers') }}
    union all
    select 'products', count(*) from {{ source('raw', 'products') }}
    union all
    select 'orders', count(*) from {{ source('raw', 'order_lines') }}
    union all
    select 'assignments', count(*) from {{ source('experiments', 'assignments') }}

),

accepted as (

    select 'events' as source, count(*) as rows_accepted from {{ ref('fct_events') }}
    union all
    select 'customers', count(*) from {{ ref('dim_customer_contacts') }}
    union all
    select 'products', count(*) from {{ ref('dim_products') }}
    union all
    select 'orders', count(*) from {{ ref('fct_order_lines') }} where order_source = 'orders_import'
    union all
    select 'assignments', count(*)
    from {{ ref('stg_experiments__assignments') }}
    where reject_reason is null

),

quarantined as (

    select source, count(*) as rows_quarantined
    from {{ ref('quarantined_rows') }}
    group by source

),

duplicates as (

    select 'events' as source, count(*) as rows_duplicate from {{ ref('event_duplicates') }}

)

select
    received.source,
    received.rows_received,
    coalesce(accepted.rows_accepted, 0) as rows_accepted,
    coalesce(quarantined.rows_quarantined, 0) as rows_quarantined,
    coalesce(duplicates.rows_duplicate, 0) as rows_duplicate,
    received.rows_received
        - coalesce(accepted.rows_accepted, 0)
        - coalesce(quarantined.rows_quarantined, 0)
        - coalesce(duplicates.rows_duplicate, 0) as unaccounted
from received
left join accepted on received.source = accepted.source
left join quarantined on received.source = quarantined.source
left join duplicates on received.source = duplicates.source
