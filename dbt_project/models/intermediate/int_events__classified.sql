{#-
  Every landing line with its final disposition:
  - `quarantined`: at least one reason code (own checks, or a product id the catalog does not know);
  - `duplicate`: valid, but an earlier valid line carried the same event_id (first arrival wins:
    earliest first load of its file, then file path, then line number);
  - `accepted`: everything else.
  rows received = accepted + quarantined + duplicate, always.

  Incremental by landing day (macros/incremental_days.sql): a run re-classifies only the days
  reloaded since the last run; their lines are deduplicated against the accepted lines of every
  other day already here. A full refresh (the nightly rebuild) re-classifies everything, e.g.
  after a catalog change turned an unknown product id into a known one.
-#}
{{ config(
    materialized=event_model_materialization(),
    incremental_strategy='append',
    pre_hook="{{ delete_pending_landing_days() }}",
) }}

with pending as (

    {{ pending_landing_days() }}

),

lines as (

    select stg.*, pending.reloaded_at as day_loaded_at
    from {{ ref('stg_raw__event_lines') }} as stg
    inner join pending
        on stg.landing_date = pending.landing_date

),

products as (

    select product_id, category
    from {{ ref('stg_catalog__products') }}
    where reject_reason is null

),

checked as (

    select
        lines.*,
        products.category as catalog_category,
        case
            when lines.reject_reason is null
                and lines.product_id is not null
                and products.product_id is null
            then 'unknown_product_id'
        end as catalog_reason
    from lines
    left join products
        on lines.product_id = products.product_id

),

valid_arrivals as (

    select event_id, loaded_at, source_file, line_no, true as is_pending
    from checked
    where coalesce(reject_reason, catalog_reason) is null
    {%- if is_incremental() %}

    union all

    select event_id, loaded_at, source_file, line_no, false as is_pending
    from {{ this }}
    where disposition = 'accepted'
        and landing_date not in (select landing_date from pending)
    {%- endif %}

),

arrival_ranks as (

    select
        source_file,
        line_no,
        row_number() over (
            partition by event_id
            order by loaded_at, source_file, line_no
        ) as arrival_rank,
        is_pending
    from valid_arrivals

),

ranked as (

    select
        checked.*,
        coalesce(checked.reject_reason, checked.catalog_reason) as final_reason,
        arrival_ranks.arrival_rank
    from checked
    left join arrival_ranks
        on checked.source_file = arrival_ranks.source_file
        and checked.line_no = arrival_ranks.line_no
        and arrival_ranks.is_pending

)

select
    source_file,
    landing_date,
    line_no,
    raw_line,
    loaded_at,
    event_id,
    user_id,
    event_type,
    event_ts,
    product_id,
    coalesce(catalog_category, category) as category,
    amount,
    currency,
    session_id,
    device,
    campaign_id,
    variant,
    properties,
    case
        when final_reason is not null then 'quarantined'
        when arrival_rank > 1 then 'duplicate'
        else 'accepted'
    end as disposition,
    case
        when final_reason is not null then final_reason
        when arrival_rank > 1 then 'duplicate_event_id'
    end as reason,
    case
        when reject_reasons is not null then reject_reasons
        when catalog_reason is not null then catalog_reason
        when arrival_rank > 1 then 'duplicate_event_id'
    end as reasons,
    day_loaded_at
from ranked
