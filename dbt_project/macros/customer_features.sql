{#-
  Point-in-time customer features for every (as_of, customer) pair, where `as_of_relation` has
  a column `as_of` (and optionally more as-of columns). Only facts at or before each as_of are
  read, so the same SQL gives leakage-free training snapshots and current features.

  Definitions (documented in the README, section "Feature definitions"):
  - orders: fct_orders, non-cancelled orders are purchases; cancellation invoices subtract their
    (negative) value from monetary totals but never count as orders.
  - recency_days: days from the last purchase (all history up to as_of) to as_of.
  - frequency: purchases in the lookback window; monetary_total: net value of orders and
    cancellations in the window (floored at 0); monetary_avg: monetary_total / frequency.
  - lifetimes convention (for BG/NBD): repeat_purchase_days = distinct purchase days − 1;
    recency_lt_days = days from first to last purchase day; age_lt_days = days from first
    purchase day to as_of; monetary_lt = mean value per repeat purchase day (first day excluded).
  - behavioural (browsing) features use only customers with tracking consent; others get nulls.
  - rows are keyed by the pseudonymous customer_key (no customer_id leaves this macro).
-#}
{% macro customer_features_sql(as_of_relation) %}

with as_of_dates as (

    select as_of from {{ as_of_relation }}

),

customers as (

    select
        as_of_dates.as_of,
        customers.*
    from {{ ref('dim_customers') }} as customers
    cross join as_of_dates
    where customers.signup_date is null
        or customers.signup_date <= cast(as_of_dates.as_of as date)

),

orders as (

    select
        as_of_dates.as_of,
        orders.customer_id,
        orders.order_id,
        orders.ordered_at,
        orders.order_date,
        orders.net_amount_base,
        orders.is_cancellation,
        orders.ordered_at > {{ dbt.dateadd('day', -1 * var('rfm_lookback_days') | int, 'as_of_dates.as_of') }}
            as in_lookback
    from {{ ref('fct_orders') }} as orders
    inner join as_of_dates
        on orders.ordered_at <= as_of_dates.as_of

),

order_stats as (

    select
        as_of,
        customer_id,
        max(case when not is_cancellation then ordered_at end) as last_purchase_at,
        min(case when not is_cancellation then ordered_at end) as first_purchase_at,
        count(case when not is_cancellation then order_id end) as orders_all_time,
        count(case when not is_cancellation and in_lookback then order_id end) as frequency,
        sum(case when in_lookback then net_amount_base else 0 end) as net_value_lookback,
        count(case when is_cancellation and in_lookback then order_id end) as cancellations,
        count(case when not is_cancellation
                    and ordered_at > {{ dbt.dateadd('day', -90, 'as_of') }} then order_id end)
            as orders_90d
    from orders
    group by as_of, customer_id

),

purchase_days as (

    select
        as_of,
        customer_id,
        order_date,
        sum(net_amount_base) as day_value,
        row_number() over (partition by as_of, customer_id order by order_date) as day_index
    from orders
    where not is_cancellation
    group by as_of, customer_id, order_date

),

lifetimes_stats as (

    select
        purchase_days.as_of,
        purchase_days.customer_id,
        count(*) - 1 as repeat_purchase_days,
        {{ dbt.datediff('min(purchase_days.order_date)', 'max(purchase_days.order_date)', 'day') }}
            as recency_lt_days,
        {{ dbt.datediff('min(purchase_days.order_date)', 'cast(purchase_days.as_of as date)', 'day') }}
            as age_lt_days,
        avg(case when purchase_days.day_index > 1 then purchase_days.day_value end) as monetary_lt
    from purchase_days
    group by purchase_days.as_of, purchase_days.customer_id

),

events as (

    select
        as_of_dates.as_of,
        events.customer_id,
        events.event_type,
        events.event_ts,
        events.category,
        events.campaign_id,
        events.device,
        events.session_id,
        {{ dbt.datediff('events.event_ts', 'as_of_dates.as_of', 'second') }} / cast(86400 as double) as age_days
    from {{ ref('fct_events') }} as events
    inner join as_of_dates
        on events.event_ts <= as_of_dates.as_of
        and events.event_ts > {{ dbt.dateadd('day', -1 * var('rfm_lookback_days') | int, 'as_of_dates.as_of') }}

),

email_stats as (

    select
        as_of,
        customer_id,
        count(distinct case when event_type = 'email_send' and age_days < 30 then campaign_id end) as emails_sent_30d,
        count(distinct case when event_type = 'email_open' and age_days < 30 then campaign_id end) as emails_opened_30d,
        count(distinct case when event_type = 'email_click' and age_days < 30 then campaign_id end) as emails_clicked_30d,
        count(distinct case when event_type = 'email_send' and age_days < 90 then campaign_id end) as emails_sent_90d,
        count(distinct case when event_type = 'email_open' and age_days < 90 then campaign_id end) as emails_opened_90d,
        count(distinct case when event_type = 'email_click' and age_days < 90 then campaign_id end) as emails_clicked_90d,
        min(case when event_type = 'email_open' then age_days end) as days_since_last_open,
        min(case when event_type = 'email_click' then age_days end) as days_since_last_click,
        max(case when event_type = 'unsubscribe' then 1 else 0 end) as unsubscribed_by_event
    from events
    where event_type in ('email_send', 'email_open', 'email_click', 'unsubscribe')
    group by as_of, customer_id

),

browsing_events as (

    select events.*
    from events
    inner join customers
        on events.as_of = customers.as_of
        and events.customer_id = customers.customer_id
        and customers.tracking_consent
    where events.event_type in ('page_view', 'product_view', 'add_to_cart', 'checkout', 'purchase')

),

browsing_stats as (

    select
        as_of,
        customer_id,
        count(case when event_type = 'product_view' and age_days < 1 then 1 end) as product_views_24h,
        count(case when event_type = 'product_view' and age_days < 7 then 1 end) as product_views_7d,
        count(case when event_type = 'add_to_cart' and age_days < 7 then 1 end) as add_to_carts_7d,
        count(case when event_type = 'add_to_cart' and age_days < 30 then 1 end) as add_to_carts_30d,
        count(distinct case when age_days < 30 then session_id end) as sessions_30d,
        min(age_days) as days_since_last_interaction
    from browsing_events
    group by as_of, customer_id

),

category_views as (

    select
        as_of,
        customer_id,
        category,
        count(case when age_days < 1 then 1 end) as views_24h,
        count(case when age_days < 7 then 1 end) as views_7d,
        count(*) as views_lookback
    from browsing_events
    where event_type = 'product_view' and category is not null
    group by as_of, customer_id, category

),

category_stats as (

    select
        as_of,
        customer_id,
        max(views_24h) as max_category_views_24h,
        max(views_7d) as max_category_views_7d,
        max(case when category_rank = 1 then category end) as top_category
    from (
        select
            *,
            row_number() over (
                partition by as_of, customer_id order by views_lookback desc, category
            ) as category_rank
        from category_views
    ) as ranked
    group by as_of, customer_id

),

abandoned_carts as (

    {#- Add-to-carts in the last 30 days with no purchase of that product afterwards (up to as_of). -#}
    select
        carts.as_of,
        carts.customer_id,
        count(*) as carts_without_purchase_30d
    from browsing_events as carts
    where carts.event_type = 'add_to_cart'
        and carts.age_days < 30
        and not exists (
            select 1
            from browsing_events as purchases
            where purchases.as_of = carts.as_of
                and purchases.customer_id = carts.customer_id
                and purchases.event_type = 'purchase'
                and purchases.event_ts >= carts.event_ts
        )
    group by carts.as_of, carts.customer_id

),

device_stats as (

    select as_of, customer_id, device as preferred_device
    from (
        select
            as_of, customer_id, device,
            row_number() over (partition by as_of, customer_id order by count(*) desc, device) as device_rank
        from browsing_events
        where device is not null
        group by as_of, customer_id, device
    ) as ranked
    where device_rank = 1

),

hour_stats as (

    select as_of, customer_id, local_hour as preferred_hour
    from (
        select
            events.as_of,
            events.customer_id,
            {{ date_part_of('hour', to_local_time('events.event_ts', 'customers.timezone')) }} as local_hour,
            row_number() over (
                partition by events.as_of, events.customer_id
                order by count(*) desc,
                    {{ date_part_of('hour', to_local_time('events.event_ts', 'customers.timezone')) }}
            ) as hour_rank
        from browsing_events as events
        inner join customers
            on events.as_of = customers.as_of and events.customer_id = customers.customer_id
        group by
            events.as_of,
            events.customer_id,
            {{ date_part_of('hour', to_local_time('events.event_ts', 'customers.timezone')) }}
    ) as ranked
    where hour_rank = 1

),

joined as (

    select
        customers.as_of,
        keys.customer_key,
        customers.customer_source,
        -- demographics
        customers.gender,
        customers.city,
        customers.country,
        customers.city_tier,
        customers.timezone,
        floor({{ dbt.datediff('customers.birth_date', 'cast(customers.as_of as date)', 'day') }} / 365.25)
            as age,
        {{ date_part_of('month', 'customers.birth_date') }} as birthday_month,
        {{ date_part_of('day', 'customers.birth_date') }} as birthday_day,
        {{ dbt.datediff('customers.signup_date', 'cast(customers.as_of as date)', 'day') }} as tenure_days,
        customers.email_consent,
        customers.tracking_consent,
        customers.unsubscribed or coalesce(email_stats.unsubscribed_by_event, 0) = 1 as is_unsubscribed,
        -- RFM
        {{ dbt.datediff('order_stats.last_purchase_at', 'customers.as_of', 'second') }} / cast(86400 as double)
            as recency_days,
        coalesce(order_stats.frequency, 0) as frequency,
        coalesce(order_stats.orders_all_time, 0) as orders_all_time,
        coalesce(order_stats.cancellations, 0) as cancellations,
        case when coalesce(order_stats.net_value_lookback, 0) > 0
            then {{ round_double('order_stats.net_value_lookback', 2) }} else 0 end as monetary_total,
        case when coalesce(order_stats.frequency, 0) > 0 and order_stats.net_value_lookback > 0
            then {{ round_double('order_stats.net_value_lookback / order_stats.frequency', 2) }} else 0 end
            as monetary_avg,
        coalesce(order_stats.orders_90d, 0) / cast(3 as double) as purchases_per_month,
        order_stats.last_purchase_at,
        order_stats.first_purchase_at,
        -- lifetimes convention
        coalesce(lifetimes_stats.repeat_purchase_days, 0) as repeat_purchase_days,
        coalesce(lifetimes_stats.recency_lt_days, 0) as recency_lt_days,
        lifetimes_stats.age_lt_days,
        coalesce(lifetimes_stats.monetary_lt, 0) as monetary_lt,
        -- email engagement
        coalesce(email_stats.emails_sent_30d, 0) as emails_sent_30d,
        coalesce(email_stats.emails_opened_30d, 0) as emails_opened_30d,
        coalesce(email_stats.emails_clicked_30d, 0) as emails_clicked_30d,
        coalesce(email_stats.emails_sent_90d, 0) as emails_sent_90d,
        coalesce(email_stats.emails_opened_90d, 0) as emails_opened_90d,
        coalesce(email_stats.emails_clicked_90d, 0) as emails_clicked_90d,
        email_stats.days_since_last_open,
        email_stats.days_since_last_click,
        -- browsing (tracking consent only)
        browsing_stats.product_views_24h,
        browsing_stats.product_views_7d,
        browsing_stats.add_to_carts_7d,
        browsing_stats.add_to_carts_30d,
        case when customers.tracking_consent then coalesce(abandoned_carts.carts_without_purchase_30d, 0) end
            as carts_without_purchase_30d,
        browsing_stats.sessions_30d,
        browsing_stats.days_since_last_interaction,
        category_stats.max_category_views_24h,
        category_stats.max_category_views_7d,
        category_stats.top_category,
        device_stats.preferred_device,
        hour_stats.preferred_hour
    from customers
    {#- Pseudonymized: the output is keyed by customer_key only (restricted customer_keys maps back). #}
    inner join {{ ref('customer_keys') }} as keys
        on keys.customer_id = customers.customer_id
    left join order_stats
        on customers.as_of = order_stats.as_of and customers.customer_id = order_stats.customer_id
    left join lifetimes_stats
        on customers.as_of = lifetimes_stats.as_of and customers.customer_id = lifetimes_stats.customer_id
    left join email_stats
        on customers.as_of = email_stats.as_of and customers.customer_id = email_stats.customer_id
    left join browsing_stats
        on customers.as_of = browsing_stats.as_of and customers.customer_id = browsing_stats.customer_id
    left join category_stats
        on customers.as_of = category_stats.as_of and customers.customer_id = category_stats.customer_id
    left join abandoned_carts
        on customers.as_of = abandoned_carts.as_of and customers.customer_id = abandoned_carts.customer_id
    left join device_stats
        on customers.as_of = device_stats.as_of and customers.customer_id = device_stats.customer_id
    left join hour_stats
        on customers.as_of = hour_stats.as_of and customers.customer_id = hour_stats.customer_id

),

rated as (

    select
        *,
        case when emails_sent_90d > 0
            then least(cast(1 as double), cast(emails_opened_90d as double) / emails_sent_90d) end as open_rate_90d,
        case when emails_sent_90d > 0
            then least(cast(1 as double), cast(emails_clicked_90d as double) / emails_sent_90d) end as click_rate_90d,
        case when emails_sent_30d > 0
            then least(cast(1 as double), cast(emails_opened_30d as double) / emails_sent_30d) end as open_rate_30d,
        case when emails_sent_30d > 0
            then least(cast(1 as double), cast(emails_clicked_30d as double) / emails_sent_30d) end as click_rate_30d,
        case
            when age is null then null
            when age < 25 then '18-24'
            when age < 35 then '25-34'
            when age < 45 then '35-44'
            when age < 55 then '45-54'
            when age < 65 then '55-64'
            else '65+'
        end as age_band
    from joined

),

scored as (

    select
        *,
        {%- set w = var('engagement_weights') %}
        {%- set engagement %}
            {{ w['open_rate'] }} * coalesce(open_rate_90d, 0)
            + {{ w['click_rate'] }} * least(cast(1 as double), coalesce(click_rate_90d, 0) / {{ var('engagement_full_click_rate') }})
            + {{ w['open_recency'] }} * case
                when days_since_last_open is null then 0
                else greatest(cast(0 as double), 1 - days_since_last_open / cast(90 as double))
            end
        {%- endset %}
        {{ round_double(engagement, 1) }} as engagement_score,
        {#- Quintile scores among purchasers (frequency > 0); ties share the lower score. -#}
        case when frequency > 0 then least(5, 1 + floor(5 * percent_rank() over (
            partition by as_of, frequency > 0 order by recency_days desc))) end as r_score,
        case when frequency > 0 then least(5, 1 + floor(5 * percent_rank() over (
            partition by as_of, frequency > 0 order by frequency))) end as f_score,
        case when frequency > 0 then least(5, 1 + floor(5 * percent_rank() over (
            partition by as_of, frequency > 0 order by monetary_total))) end as m_score
    from rated

)

select * from scored

{% endmacro %}
