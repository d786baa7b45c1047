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

{#- The top-level keys of a JSON object text, as an array of text (for `explode`/`unnest`). -#}
{% macro json_object_keys(text) -%}
    {{ return(adapter.dispatch('json_object_keys', 'personalization')(text)) }}
{%- endmacro %}

{% macro default__json_object_keys(text) -%}
    json_keys({{ text }})
{%- endmacro %}

{% macro spark__json_object_keys(text) -%}
    json_object_keys({{ text }})
{%- endmacro %}

{#- The value at top-level key `key_expr` (a SQL text expression) as text. -#}
{% macro json_text_at(text, key_expr) -%}
    {{ return(adapter.dispatch('json_text_at', 'personalization')(text, key_expr)) }}
{%- endmacro %}

{% macro default__json_text_at(text, key_expr) -%}
    json_extract_string({{ text }}, '$."' || {{ key_expr }} || '"')
{%- endmacro %}

{% macro spark__json_text_at(text, key_expr) -%}
    get_json_object({{ text }}, concat('$.', {{ key_expr }}))
{%- endmacro %}

{#- True when the value at top-level key `key_expr` is a JSON boolean (not the text "true").
    Spark has no json_type: the text is parsed as a VARIANT (Spark 4) object and the key's
    value asked for its type. -#}
{% macro json_is_boolean_at(text, key_expr) -%}
    {{ return(adapter.dispatch('json_is_boolean_at', 'personalization')(text, key_expr)) }}
{%- endmacro %}

{% macro default__json_is_boolean_at(text, key_expr) -%}
    (json_type({{ text }}, '$."' || {{ key_expr }} || '"') = 'BOOLEAN')
{%- endmacro %}

{% macro spark__json_is_boolean_at(text, key_expr) -%}
    coalesce(schema_of_variant(element_at(
        try_cast(try_parse_json({{ text }}) as map<string, variant>), {{ key_expr }}
    )) = 'BOOLEAN', false)
{%- endmacro %}

{#- One output row per element of an array expression (in a select list). -#}
{% macro explode_array(expr) -%}
    {{ return(adapter.dispatch('explode_array', 'personalization')(expr)) }}
{%- endmacro %}

{% macro default__explode_array(expr) -%}
    unnest({{ expr }})
{%- endmacro %}

{% macro spark__explode_array(expr) -%}
    explode({{ expr }})
{%- endmacro %}

{#- The values at several top-level keys as one array of text, in the order of `keys`: the text
    is parsed once for all of them (DuckDB parsed a line 12 times with one json_text per key:
    ~85 s of CPU for 15M lines). Read the values with array_item(expr, i). -#}
{% macro json_texts(text, keys) -%}
    {{ return(adapter.dispatch('json_texts', 'personalization')(text, keys)) }}
{%- endmacro %}

{% macro default__json_texts(text, keys) -%}
    json_extract_string({{ text }}, [{% for key in keys %}'$.{{ key }}'{{ ", " if not loop.last }}{% endfor %}])
{%- endmacro %}

{% macro spark__json_texts(text, keys) -%}
    array({% for key in keys %}{{ spark__json_text(text, key) }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}

{#- Element `i` (1-based) of an array expression. -#}
{% macro array_item(expr, i) -%}
    {{ return(adapter.dispatch('array_item', 'personalization')(expr, i)) }}
{%- endmacro %}

{% macro default__array_item(expr, i) -%}
    {{ expr }}[{{ i }}]
{%- endmacro %}

{% macro spark__array_item(expr, i) -%}
    element_at({{ expr }}, {{ i }})
{%- endmacro %}
