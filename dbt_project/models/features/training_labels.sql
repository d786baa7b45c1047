{#-
  Outcome labels for every training snapshot row: whether the customer purchased within each
  label horizon after the snapshot's as-of. Null when the horizon reaches past the data, so a
  label is only ever built from observed time. Churn = no purchase in the churn horizon among
  customers who had purchased before as-of. Keyed by the pseudonymous customer_key.
-#}

with snapshots as (

    select as_of, customer_key, orders_all_time
    from {{ ref('customer_feature_snapshots') }}

),

keyed_orders as (

    select keys.customer_key, orders.ordered_at, orders.is_cancellation
    from {{ ref('fct_orders') }} as orders
    inner join {{ ref('customer_keys') }} as keys
        on keys.customer_id = orders.customer_id

),

data_end as (

    select as_of as data_end from {{ ref('feature_as_of') }}

),

future_orders as (

    select
        snapshots.as_of,
        snapshots.customer_key,
        min(orders.ordered_at) as next_purchase_at
    from snapshots
    inner join keyed_orders as orders
        on orders.customer_key = snapshots.customer_key
        and orders.ordered_at > snapshots.as_of
        and not orders.is_cancellation
    group by snapshots.as_of, snapshots.customer_key

)

select
    snapshots.as_of,
    snapshots.customer_key,
    snapshots.orders_all_time > 0 as has_purchased_before,
    future_orders.next_purchase_at,
    {% for horizon in var('label_horizons_days') %}
    case
        when {{ dbt.dateadd('day', horizon | int, 'snapshots.as_of') }} > data_end.data_end then null
        when future_orders.next_purchase_at <= {{ dbt.dateadd('day', horizon | int, 'snapshots.as_of') }} then 1
        else 0
    end as purchased_within_{{ horizon }}d{% if not loop.last %},{% endif %}
    {% endfor %}
from snapshots
cross join data_end
left join future_orders
    on snapshots.as_of = future_orders.as_of
    and snapshots.customer_key = future_orders.customer_key
