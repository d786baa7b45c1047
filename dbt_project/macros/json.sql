{#-
  JSON access over raw text lines. DuckDB and Spark spell these differently, so models call
  these macros and each adapter gets its own implementation (dispatch).
-#}

{#- True when `text` parses as a JSON object (not an array, scalar or garbage). -#}
{% macro json_is_object(text) -%}
    {{ return(adapter.dispatch('json_is_object', 'personalization')(text)) }}
{%- endmacro %}

{% macro default__json_is_object(text) -%}
    {#- json_type raises on malformed text and AND does not short-circuit: feed it only valid JSON. -#}
    coalesce(json_type(case when json_valid({{ text }}) then {{ text }} end) = 'OBJECT', false)
{%- endmacro %}

{% macro spark__json_is_object(text) -%}
    (from_json({{ text }}, 'map<string,string>') is not null)
{%- endmacro %}

{#- The value at top-level `key` as text (numbers as their literal text); null when absent or JSON null. -#}
{% macro json_text(text, key) -%}
    {{ return(adapter.dispatch('json_text', 'personalization')(text, key)) }}
{%- endmacro %}

{% macro default__json_text(text, key) -%}
    json_extract_string({{ text }}, '$.{{ key }}')
{%- endmacro %}

{% macro spark__json_text(text, key) -%}
    get_json_object({{ text }}, '$.{{ key }}')
{%- endmacro %}

{#- The raw JSON text of the value at top-level `key` (objects stay objects). -#}
{% macro json_raw(text, key) -%}
    {{ return(adapter.dispatch('json_raw', 'personalization')(text, key)) }}
{%- endmacro %}

{% macro default__json_raw(text, key) -%}
    cast(json_extract({{ text }}, '$.{{ key }}') as varchar)
{%- endmacro %}

{% macro spark__json_raw(text, key) -%}
    get_json_object({{ text }}, '$.{{ key }}')
{%- endmacro %}
