{#-
  One row per imported order-export line (e.g. UCI Online Retail), already renamed to canonical
  columns by the loader. Invoices starting with `C` are cancellations. Timestamps are local
  wall-clock time in the layout's zone: the loader keeps the raw text and, parsed with the
  layout's format, `ordered_at_local` (null when it does not parse).
-#}

with source as (

    select * from {{ source('raw', 'order_lines') }}

),

typed as (

    select
        source_file,
        row_no,
        loaded_at,
        malformed_error,
        malformed_record,
        nullif(upper(trim(invoice_id)), '') as invoice_id,
        {{ clean_id('product_id') }} as product_id,
        nullif(trim(description), '') as description,
        quantity as quantity_raw,
        {{ dbt.safe_cast('trim(quantity)', dbt.type_numeric()) }} as quantity,
        unit_price as unit_price_raw,
        {{ dbt.safe_cast('trim(unit_price)', dbt.type_numeric()) }} as unit_price,
        ordered_at as ordered_at_raw,
        {{ parse_local_timestamp_utc('ordered_at_local', 'source_timezone') }} as ordered_at,
        {#- Exports often write numeric ids as floats (13085.0): keep the integer part. -#}
        {{ clean_id("regexp_replace(trim(customer_id), '[.]0+$', '')") }} as customer_id,
        nullif(trim(country), '') as country_name,
        coalesce(nullif(upper(trim(currency)), ''), '{{ var("base_currency") }}') as currency
    from source

),

{%- set reason_cases = [
    "case when malformed_error is not null then 'malformed_row' end",
    "case when invoice_id is null then 'missing_invoice_id' end",
    "case when customer_id is null then 'missing_customer_id' end",
    "case when product_id is null then 'missing_product_id' end",
    "case when quantity is null then 'invalid_quantity' end",
    "case when unit_price is null then 'invalid_price' end",
    "case when unit_price < 0 then 'negative_price' end",
    "case when ordered_at is null then 'invalid_timestamp' end",
] %}

validated as (

    select
        *,
        invoice_id like 'C%' as is_cancellation,
        {{ first_reason(reason_cases) }} as reject_reason,
        {{ reason_list(reason_cases) }} as reject_reasons
    from typed

)

select * from validated
