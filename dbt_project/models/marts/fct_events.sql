{#- Accepted behavioural and email events: deduplicated on event_id, typed, UTC, ids normalized. -#}

with accepted as (

    select * from {{ ref('int_events__classified') }}
    where disposition = 'accepted'

),

rates as (

    select currency, rate_to_base from {{ ref('currency_rates') }}

)

select
    accepted.event_id,
    accepted.user_id as customer_id,
    accepted.event_type,
    accepted.event_ts,
    cast(accepted.event_ts as date) as event_date,
    accepted.product_id,
    accepted.category,
    accepted.amount,
    accepted.currency,
    round(accepted.amount * rates.rate_to_base, 2) as amount_base,
    accepted.session_id,
    accepted.device,
    accepted.campaign_id,
    accepted.variant,
    accepted.properties,
    accepted.source_file,
    accepted.landing_date
from accepted
left join rates
    on accepted.currency = rates.currency
