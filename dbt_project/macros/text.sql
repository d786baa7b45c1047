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

{#- Round a DOUBLE to `digits` decimals the way DuckDB does: the exact binary value, half away
    from zero (13.485 is stored as 13.48499999... and gives 13.48). Spark's round() rounds the
    double's shortest decimal text instead (13.49), so Spark scales by 10^digits and, only when
    the scaled double lands exactly on a half, decides the side from the exact rounding error of
    that multiplication (Dekker's error-free product: x split into two 26-bit halves). -#}
{% macro round_double(expr, digits) -%}
    {{ return(adapter.dispatch('round_double', 'personalization')(expr, digits)) }}
{%- endmacro %}

{% macro default__round_double(expr, digits) -%}
    round({{ expr }}, {{ digits }})
{%- endmacro %}

{% macro spark__round_double(expr, digits) -%}
    {%- set scale = 10 ** digits -%}
    {%- set x = '(cast(' ~ expr ~ ' as double))' -%}
    {%- set p = '(' ~ x ~ ' * ' ~ scale ~ ')' -%}
    {%- set c = '(' ~ x ~ ' * 134217729)' -%}
    {%- set high = '(' ~ c ~ ' - (' ~ c ~ ' - ' ~ x ~ '))' -%}
    {%- set error = '((' ~ high ~ ' * ' ~ scale ~ ' - ' ~ p ~ ') + (' ~ x ~ ' - ' ~ high ~ ') * ' ~ scale ~ ')' -%}
    (case
        when {{ p }} - floor({{ p }}) != 0.5 then round({{ p }}, 0)
        when {{ error }} > 0 or ({{ error }} = 0 and {{ p }} > 0) then cast(ceil({{ p }}) as double)
        else cast(floor({{ p }}) as double)
    end / {{ scale }})
{%- endmacro %}

{#- True when the whole of `text` matches the regular expression `pattern` (a SQL literal). -#}
{% macro regex_full_match(text, pattern) -%}
    {{ return(adapter.dispatch('regex_full_match', 'personalization')(text, pattern)) }}
{%- endmacro %}

{% macro default__regex_full_match(text, pattern) -%}
    regexp_full_match({{ text }}, {{ pattern }})
{%- endmacro %}

{% macro spark__regex_full_match(text, pattern) -%}
    ({{ text }} rlike concat('^(?:', {{ pattern }}, ')$'))
{%- endmacro %}
