{#- Time helpers whose spelling differs per adapter. -#}

{#- A naive UTC timestamp converted to wall-clock time in IANA zone `tz` (SQL expressions). -#}
{% macro to_local_time(ts, tz) -%}
    {{ return(adapter.dispatch('to_local_time', 'personalization')(ts, tz)) }}
{%- endmacro %}

{% macro default__to_local_time(ts, tz) -%}
    timezone({{ tz }}, cast({{ ts }} as timestamptz))
{%- endmacro %}

{% macro spark__to_local_time(ts, tz) -%}
    from_utc_timestamp({{ ts }}, {{ tz }})
{%- endmacro %}

{#- Fractional days between two timestamps (b − a). -#}
{% macro days_between(a, b) -%}
    ({{ dbt.datediff(a, b, 'second') }} / 86400.0)
{%- endmacro %}

{#- An integer date part (`hour`, `day`, `month`, ...) of a date or timestamp; ANSI EXTRACT. -#}
{% macro date_part_of(part, expr) -%}
    extract({{ part }} from {{ expr }})
{%- endmacro %}

{#- dbt-spark's dateadd goes through unix seconds and drops sub-second precision; Spark's own
    timestampadd keeps it, like DuckDB's `+ interval`. -#}
{% macro spark__dateadd(datepart, interval, from_date_or_timestamp) -%}
    timestampadd({{ datepart }}, {{ interval }}, {{ from_date_or_timestamp }})
{%- endmacro %}
