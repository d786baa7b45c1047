{#- One row per catalog export row: typed, with the reason codes that would reject it. -#}

with source as (

    select * from {{ source('raw', 'products') }}

),

typed as (

    select
        source_file,
        row_no,
        loaded_at,
        malformed_error,
        malformed_record,
        {{ clean_id('product_id') }} as product_id,
        nullif(trim(name), '') as product_name,
        {{ clean_id('category') }} as category,
        price as price_raw,
        {{ dbt.safe_cast('trim(price)', dbt.type_numeric()) }} as price,
        coalesce(nullif(upper(trim(currency)), ''), '{{ var("base_currency") }}') as currency,
        coalesce({{ parse_bool('in_stock') }}, false) as in_stock,
        row_number() over (
            partition by {{ clean_id('product_id') }} order by loaded_at, source_file, row_no
        ) as id_occurrence
    from source

),

{%- set reason_cases = [
    "case when malformed_error is not null then 'malformed_row' end",
    "case when product_id is null then 'missing_product_id' end",
    "case when product_id is not null and id_occurrence > 1 then 'duplicate_product_id' end",
    "case when price is null or price < 0 then 'invalid_price' end",
] %}

validated as (

    select
        *,
        {{ first_reason(reason_cases) }} as reject_reason,
        {{ reason_list(reason_cases) }} as reject_reasons
    from typed

)

select * from validated
