{#-
  customer_key(expr): the pseudonymous key of a customer id, equal to Python's
  `pseudonym.customer_hash(id)` (lowercase hex HMAC-SHA256 of "customer:" + normalized id).
  The key is never in SQL: the `personalization_assets.dbt_plugin` profile plugin puts its HMAC
  pads into the connection variables `pseudonym_ipad` / `pseudonym_opad`; without them the
  expression raises rather than producing null keys. A null id gives a null key.
-#}
{% macro customer_key(expr) -%}
    {{ return(adapter.dispatch('customer_key', 'personalization')(expr)) }}
{%- endmacro %}

{% macro duckdb__customer_key(expr) -%}
    (case
        when getvariable('pseudonym_ipad') is null or getvariable('pseudonym_opad') is null
            then error('customer_key: pseudonym key not configured on this connection (profile plugin personalization_assets.dbt_plugin missing)')
        else sha256(
            getvariable('pseudonym_opad')
            || unhex(sha256(
                getvariable('pseudonym_ipad')
                || encode('customer:' || regexp_replace(lower(trim(cast({{ expr }} as varchar))), '\.0+$', ''))
            ))
        )
    end)
{%- endmacro %}

{% macro default__customer_key(expr) -%}
    {{ exceptions.raise_compiler_error("customer_key() is not implemented for this adapter (" ~ adapter.type() ~ "): it needs the pseudonym key's HMAC pads as session variables") }}
{%- endmacro %}

{#- Spark: the same HMAC from the pads in the session conf (hex), substituted by Spark SQL's
    ${...} variable substitution at execution, so the compiled SQL holds no key material. -#}
{% macro spark__customer_key(expr) -%}
    (case
        when {{ expr }} is null then null
        when length('${spark.personalization.pseudonym_ipad}') <> 128
            or length('${spark.personalization.pseudonym_opad}') <> 128
            then raise_error('customer_key: pseudonym pads not configured in the Spark session (profiles.yml spark target)')
        else sha2(
            concat(
                unhex('${spark.personalization.pseudonym_opad}'),
                unhex(sha2(concat(
                    unhex('${spark.personalization.pseudonym_ipad}'),
                    encode(concat('customer:', regexp_replace(lower(trim(cast({{ expr }} as string))), '[.]0+$', '')), 'UTF-8')
                ), 256))
            ),
            256
        )
    end)
{%- endmacro %}
