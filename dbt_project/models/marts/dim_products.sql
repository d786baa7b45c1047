{#- The product catalog: one row per accepted product, prices in their currency and the base currency. -#}

with products as (

    select * from {{ ref('stg_catalog__products') }}
    where reject_reason is null

),

rates as (

    select currency, rate_to_base from {{ ref('currency_rates') }}

)

select
    products.product_id,
    products.product_name,
    products.category,
    products.price,
    products.currency,
    {{ round_double('products.price * coalesce(rates.rate_to_base, 1.0)', 2) }} as price_base,
    products.in_stock,
    products.source_file
from products
left join rates
    on products.currency = rates.currency
