{#- Accepted behavioural and email events: deduplicated on event_id, typed, UTC, ids normalized.
    Incremental by landing day like int_events__classified (macros/incremental_days.sql). -#}
{{ config(
    materialized=event_model_materialization(),
    incremental_strategy='append',
    pre_hook="{{ delete_pending_landing_days() }}",
) }}

with pending as (

    {{ pending_landing_days() }}

),

accepted as (

    select classified.*
    from {{ ref('int_events__classified') }} as classified
    inner join pending
        on classified.landing_date = pending.landing_date
    where classified.disposition = 'accepted'

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
    {{ round_double('accepted.amount * rates.rate_to_base', 2) }} as amount_base,
    accepted.session_id,
    accepted.device,
    accepted.campaign_id,
    accepted.variant,
    accepted.properties,
    accepted.source_file,
    accepted.landing_date,
    accepted.day_loaded_at
from accepted
left join rates
    on accepted.currency = rates.currency
