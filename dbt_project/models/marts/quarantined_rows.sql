{#-
  Every rejected input row from every source, with its primary reason, all its reason codes,
  the landing file and line/row number, and the raw content. Nothing rejected is dropped.
-#}

{{ config(post_hook="{{ dagster_rows_by('source', 'reason') }}") }}

with events as (

    select
        'events' as source,
        source_file,
        line_no as source_row,
        reason,
        reasons,
        raw_line as raw_content,
        loaded_at
    from {{ ref('int_events__classified') }}
    where disposition = 'quarantined'

),

customers as (

    select
        'customers' as source,
        source_file,
        row_no as source_row,
        reject_reason as reason,
        reject_reasons as reasons,
        coalesce(
            malformed_record,
            {{ dbt.concat(["coalesce(customer_id, '')", "','", "coalesce(email, '')"]) }}
        ) as raw_content,
        loaded_at
    from {{ ref('stg_crm__customers') }}
    where reject_reason is not null

),

products as (

    select
        'products' as source,
        source_file,
        row_no as source_row,
        reject_reason as reason,
        reject_reasons as reasons,
        coalesce(
            malformed_record,
            {{ dbt.concat(["coalesce(product_id, '')", "','", "coalesce(price_raw, '')"]) }}
        ) as raw_content,
        loaded_at
    from {{ ref('stg_catalog__products') }}
    where reject_reason is not null

),

orders as (

    select
        'orders' as source,
        source_file,
        row_no as source_row,
        reject_reason as reason,
        reject_reasons as reasons,
        coalesce(malformed_record, {{ dbt.concat([
            "coalesce(invoice_id, '')", "','", "coalesce(product_id, '')", "','",
            "coalesce(quantity_raw, '')", "','", "coalesce(unit_price_raw, '')", "','",
            "coalesce(ordered_at_raw, '')", "','", "coalesce(customer_id, '')"
        ]) }}) as raw_content,
        loaded_at
    from {{ ref('stg_orders__order_lines') }}
    where reject_reason is not null

),

assignments as (

    select
        'assignments' as source,
        source_file,
        row_no as source_row,
        reject_reason as reason,
        reject_reasons as reasons,
        coalesce(malformed_record, {{ dbt.concat([
            "coalesce(campaign_id, '')", "','", "coalesce(customer_id, '')", "','",
            "coalesce(variant, '')", "','", "coalesce(assigned_at_raw, '')"
        ]) }}) as raw_content,
        loaded_at
    from {{ ref('stg_experiments__assignments') }}
    where reject_reason is not null

)

select * from events
union all
select * from customers
union all
select * from products
union all
select * from orders
union all
select * from assignments
