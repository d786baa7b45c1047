{#- One row per CRM export row: typed, trimmed, lower-cased, with the reason codes that would reject it. -#}

with source as (

    select * from {{ source('raw', 'customers') }}

),

typed as (

    select
        source_file,
        row_no,
        loaded_at,
        malformed_error,
        malformed_record,
        {{ clean_id('customer_id') }} as customer_id,
        lower(trim(email)) as email,
        nullif(trim(first_name), '') as first_name,
        nullif(trim(last_name), '') as last_name,
        {{ clean_id('gender') }} as gender,
        {{ parse_iso_date('trim(birth_date)') }} as birth_date,
        nullif(trim(city), '') as city,
        nullif(upper(trim(country)), '') as country,
        nullif(trim(timezone), '') as timezone,
        {{ parse_iso_date('trim(signup_date)') }} as signup_date,
        coalesce({{ parse_bool('email_consent') }}, false) as email_consent,
        coalesce({{ parse_bool('tracking_consent') }}, false) as tracking_consent,
        coalesce({{ parse_bool('unsubscribed') }}, false) as unsubscribed,
        row_number() over (
            partition by {{ clean_id('customer_id') }} order by loaded_at, source_file, row_no
        ) as id_occurrence
    from source

),

{%- set reason_cases = [
    "case when malformed_error is not null then 'malformed_row' end",
    "case when customer_id is null then 'missing_customer_id' end",
    "case when customer_id is not null and id_occurrence > 1 then 'duplicate_customer_id' end",
    "case when email is null or email = '' or not " ~ is_valid_email('email') ~ " then 'invalid_email' end",
] %}

validated as (

    select
        *,
        {{ first_reason(reason_cases) }} as reject_reason,
        {{ reason_list(reason_cases) }} as reject_reasons
    from typed

)

select * from validated
