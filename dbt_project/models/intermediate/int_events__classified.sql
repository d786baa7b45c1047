{#-
  Every landing line with its final disposition:
  - `quarantined`: at least one reason code (own checks, or a product id the catalog does not know);
  - `duplicate`: valid, but an earlier valid line carried the same event_id (first arrival wins:
    earliest first load of its file, then file path, then line number);
  - `accepted`: everything else.
  rows received = accepted + quarantined + duplicate, always.
-#}

with lines as (

    select * from {{ ref('stg_raw__event_lines') }}

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

ranked as (

    select
        *,
        coalesce(reject_reason, catalog_reason) as final_reason,
        case
            when coalesce(reject_reason, catalog_reason) is null
            then row_number() over (
                partition by event_id, coalesce(reject_reason, catalog_reason)
                order by loaded_at, source_file, line_no
            )
        end as arrival_rank
    from checked

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
    end as reasons
from ranked
