{#-
  One row per order (or cancellation invoice): the purchase facts RFM and lifecycle models use.
  `net_amount_base` is the order total in the base currency; cancellation invoices carry a
  negative total and `is_cancellation = true`.
-#}

select
    order_id,
    order_source,
    min(customer_id) as customer_id,
    min(ordered_at) as ordered_at,
    cast(min(ordered_at) as date) as order_date,
    count(*) as line_count,
    sum(quantity) as item_quantity,
    {{ round_double('sum(line_amount_base)', 2) }} as net_amount_base,
    {{ dbt.bool_or('is_cancellation') }} as is_cancellation
from {{ ref('fct_order_lines') }}
group by order_id, order_source
