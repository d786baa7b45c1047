{#-
  The single point in time the current features, segments and scores are computed at:
  var `as_of` when set, else the latest event or order in the warehouse.
-#}

{%- if var('as_of') -%}

select cast({{ parse_iso_timestamp_utc("'" ~ var('as_of') ~ "'") }} as timestamp) as as_of

{%- else -%}

select cast(coalesce(
    greatest(
        (select max(event_ts) from {{ ref('fct_events') }}),
        (select max(ordered_at) from {{ ref('fct_orders') }} where order_source = 'events')
    ),
    (select max(ordered_at) from {{ ref('fct_orders') }}),
    {{ dbt.current_timestamp() }}
) as timestamp) as as_of

{%- endif -%}
