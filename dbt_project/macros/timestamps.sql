{#-
  Timestamp parsing, isolated per adapter. All timestamps in the warehouse are naive UTC.
-#}

{#- ISO 8601 text (with or without offset; no offset means UTC) to a UTC timestamp; null when unparseable. -#}
{% macro parse_iso_timestamp_utc(text) -%}
    {{ return(adapter.dispatch('parse_iso_timestamp_utc', 'personalization')(text)) }}
{%- endmacro %}

{% macro default__parse_iso_timestamp_utc(text) -%}
    (try_cast({{ text }} as timestamptz) at time zone 'UTC')
{%- endmacro %}

{% macro spark__parse_iso_timestamp_utc(text) -%}
    to_utc_timestamp(try_to_timestamp({{ text }}), 'UTC')
{%- endmacro %}

{#- Local wall-clock text `YYYY-MM-DD HH:MM:SS` read in IANA zone `tz` (a SQL expression), to UTC;
    null when unparseable. -#}
{% macro parse_local_timestamp_utc(text, tz) -%}
    {{ return(adapter.dispatch('parse_local_timestamp_utc', 'personalization')(text, tz)) }}
{%- endmacro %}

{% macro default__parse_local_timestamp_utc(text, tz) -%}
    timezone('UTC', timezone({{ tz }}, try_cast({{ text }} as timestamp)))
{%- endmacro %}

{% macro spark__parse_local_timestamp_utc(text, tz) -%}
    to_utc_timestamp(try_to_timestamp({{ text }}), {{ tz }})
{%- endmacro %}

{#- A `YYYY-MM-DD` text to a date; null when unparseable. -#}
{% macro parse_iso_date(text) -%}
    {{ dbt.safe_cast(text, 'date') }}
{%- endmacro %}
