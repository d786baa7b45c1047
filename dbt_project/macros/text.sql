{#- Small text predicates whose spelling differs per adapter. -#}

{#- A pragmatic email check: one @, a non-empty local part, a dotted domain, no spaces. -#}
{% macro is_valid_email(text) -%}
    {{ return(adapter.dispatch('is_valid_email', 'personalization')(text)) }}
{%- endmacro %}

{% macro default__is_valid_email(text) -%}
    regexp_full_match({{ text }}, '[^@\s]+@[^@\s]+\.[^@\s]+')
{%- endmacro %}

{% macro spark__is_valid_email(text) -%}
    ({{ text }} rlike '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$')
{%- endmacro %}

{#- Trimmed, lower-cased identifier; empty text becomes null. -#}
{% macro clean_id(text) -%}
    nullif(lower(trim({{ text }})), '')
{%- endmacro %}

{#- Parse `true/false/yes/no/1/0/y/n` (any case); null otherwise. -#}
{% macro parse_bool(text) -%}
    case lower(trim({{ text }}))
        when 'true' then true when 'yes' then true when 'y' then true when '1' then true
        when 'false' then false when 'no' then false when 'n' then false when '0' then false
    end
{%- endmacro %}

{#- A comma-separated list of the non-null reason codes among `cases` (each a `case ... end`). -#}
{% macro reason_list(cases) -%}
    nullif(concat_ws(',', {{ cases | join(', ') }}), '')
{%- endmacro %}

{#- The first non-null reason code among `cases`, in priority order. -#}
{% macro first_reason(cases) -%}
    coalesce({{ cases | join(', ') }})
{%- endmacro %}

{#- dbt-duckdb falls back to a plain CAST for dbt.safe_cast; a bad value must become null instead. -#}
{% macro duckdb__safe_cast(field, type) -%}
    try_cast({{ field }} as {{ type }})
{%- endmacro %}
