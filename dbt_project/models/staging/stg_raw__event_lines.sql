{#-
  One row per landing line: the event's fields typed and standardized, plus the reason codes
  that would reject it. Checks that need other tables (catalog, duplicates) come later in
  int_events__classified.
-#}
{%- set event_types = var('event_types') -%}

with lines as (

    select
        source_file,
        landing_date,
        line_no,
        raw_line,
        loaded_at,
        {{ json_is_object('raw_line') }} as is_json_object
    from {{ source('raw', 'event_lines') }}

),

{#- JSON functions raise on malformed text, and the optimizer may evaluate them before a CASE
    guard: extract from a line that is always valid JSON instead. -#}
safe as (

    select
        *,
        case when is_json_object then raw_line else '{}' end as json_line
    from lines

),

{%- set json_keys = [
    'event_id', 'user_id', 'event_type', 'timestamp', 'product_id', 'category', 'amount',
    'currency', 'session_id', 'device', 'campaign_id', 'variant',
] -%}

parsed as (

    select
        *,
        {{ json_texts('json_line', json_keys) }} as json_values,
        nullif({{ json_raw('json_line', 'properties') }}, 'null') as properties_raw
    from safe

),

extracted as (

    select
        source_file,
        landing_date,
        line_no,
        raw_line,
        loaded_at,
        is_json_object,
        {%- for key in json_keys %}
        {{ array_item('json_values', loop.index) }} as {{ key }}_raw,
        {%- endfor %}
        properties_raw
    from parsed

),

typed as (

    select
        source_file,
        landing_date,
        line_no,
        raw_line,
        loaded_at,
        is_json_object,
        amount_raw,
        timestamp_raw,
        properties_raw,
        {{ clean_id('event_id_raw') }} as event_id,
        {{ clean_id('user_id_raw') }} as user_id,
        {{ clean_id('event_type_raw') }} as event_type,
        {{ parse_iso_timestamp_utc('timestamp_raw') }} as event_ts,
        {{ clean_id('product_id_raw') }} as product_id,
        {{ clean_id('category_raw') }} as category,
        {{ dbt.safe_cast('amount_raw', dbt.type_numeric()) }} as amount,
        coalesce(nullif(upper(trim(currency_raw)), ''), '{{ var("base_currency") }}') as currency,
        nullif(trim(session_id_raw), '') as session_id,
        {{ clean_id('device_raw') }} as device,
        nullif(trim(campaign_id_raw), '') as campaign_id,
        nullif(trim(variant_raw), '') as variant,
        coalesce(properties_raw, '{}') as properties
    from extracted

),

{%- set reason_cases = [
    "case when not is_json_object then 'invalid_json' end",
    "case when is_json_object and event_id is null then 'missing_event_id' end",
    "case when is_json_object and user_id is null then 'missing_user_id' end",
    "case when is_json_object and (event_type is null or event_type not in ('" ~ event_types | join("', '") ~ "')) then 'unknown_event_type' end",
    "case when is_json_object and event_ts is null then 'invalid_timestamp' end",
    "case when is_json_object and event_ts > " ~ dbt.dateadd('hour', 24 + var('future_tolerance_hours') | int, 'cast(landing_date as timestamp)') ~ " then 'future_timestamp' end",
    "case when is_json_object and amount_raw is not null and amount is null then 'invalid_amount' end",
    "case when is_json_object and amount < 0 then 'negative_amount' end",
    "case when is_json_object and event_type = 'purchase' and amount_raw is null then 'missing_amount' end",
    "case when is_json_object and event_type in ('" ~ var('product_event_types') | join("', '") ~ "') and product_id is null then 'missing_product_id' end",
    "case when is_json_object and length(properties) > " ~ var('max_properties_chars') ~ " then 'oversize_properties' end",
    "case when is_json_object and properties_raw is not null and substring(trim(properties_raw), 1, 1) != '{' then 'invalid_properties' end",
] %}

validated as (

    select
        *,
        {{ first_reason(reason_cases) }} as reject_reason,
        {{ reason_list(reason_cases) }} as reject_reasons
    from typed

)

select * from validated
