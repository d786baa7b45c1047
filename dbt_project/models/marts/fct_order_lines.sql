{#-
  Purchased products, one row per order line, from both sources: `purchase` events of the shop
  (order id from properties.order_id, else the event id) and imported order exports. Amounts are
  net of nothing: cancellations keep their negative quantity and amount and are flagged.
-#}

with event_lines as (

    select
        coalesce({{ json_text('properties', 'order_id') }}, event_id) as order_id,
        event_id as order_line_id,
        customer_id,
        product_id,
        coalesce({{ dbt.safe_cast(json_text('properties', 'quantity'), dbt.type_numeric()) }}, 1) as quantity,
        amount as line_amount,
        currency,
        amount_base as line_amount_base,
        event_ts as ordered_at,
        false as is_cancellation,
        'events' as order_source
    from {{ ref('fct_events') }}
    where event_type = 'purchase'

),

imported_lines as (

    select
        orders.invoice_id as order_id,
        {{ dbt.concat(['orders.source_file', "':'", dbt.cast('orders.row_no', dbt.type_string())]) }} as order_line_id,
        orders.customer_id,
        orders.product_id,
        orders.quantity,
        round(orders.quantity * orders.unit_price, 2) as line_amount,
        orders.currency,
        {{ round_double('orders.quantity * orders.unit_price * coalesce(rates.rate_to_base, 1.0)', 2) }} as line_amount_base,
        orders.ordered_at,
        orders.is_cancellation,
        'orders_import' as order_source
    from {{ ref('stg_orders__order_lines') }} as orders
    left join {{ ref('currency_rates') }} as rates
        on orders.currency = rates.currency
    where orders.reject_reason is null

)

select * from event_lines
union all
select * from imported_lines
