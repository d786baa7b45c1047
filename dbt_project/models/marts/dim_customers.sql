{#-
  One row per known customer: demographics and consent, no direct identifiers (email and names
  live in dim_customer_contacts). CRM customers come first; customers seen only in imported
  order exports are added with no consent, so they are analysed but never emailed.
-#}

with crm as (

    select * from {{ ref('stg_crm__customers') }}
    where reject_reason is null

),

countries as (

    select country, default_timezone from {{ ref('country_defaults') }}

),

urban as (

    select lower(city) as city_key, country from {{ ref('urban_cities') }}

),

crm_customers as (

    select
        crm.customer_id,
        crm.gender,
        crm.birth_date,
        crm.city,
        crm.country,
        coalesce(crm.timezone, countries.default_timezone, 'UTC') as timezone,
        case
            when crm.timezone is not null then 'crm'
            when countries.default_timezone is not null then 'country_default'
            else 'utc_fallback'
        end as timezone_source,
        case when urban.city_key is not null then 'urban' else 'other' end as city_tier,
        crm.signup_date,
        crm.email_consent,
        crm.tracking_consent,
        crm.unsubscribed,
        'crm' as customer_source
    from crm
    left join countries
        on crm.country = countries.country
    left join urban
        on lower(crm.city) = urban.city_key and crm.country = urban.country

),

order_only_customers as (

    select
        orders.customer_id,
        cast(null as {{ dbt.type_string() }}) as gender,
        cast(null as date) as birth_date,
        cast(null as {{ dbt.type_string() }}) as city,
        max(countries.country) as country,
        coalesce(max(countries.default_timezone), 'UTC') as timezone,
        case when max(countries.default_timezone) is not null then 'country_default' else 'utc_fallback' end
            as timezone_source,
        'other' as city_tier,
        cast(min(orders.ordered_at) as date) as signup_date,
        false as email_consent,
        false as tracking_consent,
        false as unsubscribed,
        'orders_import' as customer_source
    from {{ ref('stg_orders__order_lines') }} as orders
    left join {{ ref('country_defaults') }} as countries
        on lower(orders.country_name) = lower(countries.country_name)
    where orders.reject_reason is null
        and orders.customer_id not in (select customer_id from crm)
    group by orders.customer_id

)

select * from crm_customers
union all
select * from order_only_customers
