{#- One row per assignment export row: typed, trimmed, with the reason codes that would reject it.
    `holdout` (any case) marks the no-send group; other variant names keep their case, like the
    events' `variant`. The first valid row of a (campaign, customer) wins; later ones are
    `duplicate_assignment`. -#}

{#- The measurement assets read this model from DuckDB. On Spark only tables are read back into
    DuckDB (engine.import_spark_tables), so there it is built as a table. -#}
{{ config(materialized='table' if target.type == 'spark' else 'view') }}

with source as (

    select * from {{ source('experiments', 'assignments') }}

),

typed as (

    select
        source_file,
        row_no,
        loaded_at,
        malformed_error,
        malformed_record,
        nullif(trim(campaign_id), '') as campaign_id,
        {{ clean_id('customer_id') }} as customer_id,
        case
            when lower(trim(variant)) = 'holdout' then 'holdout'
            else nullif(trim(variant), '')
        end as variant,
        assigned_at as assigned_at_raw,
        {{ parse_iso_timestamp_utc('trim(assigned_at)') }} as assigned_at,
        planned_share as planned_share_raw,
        {{ dbt.safe_cast('trim(planned_share)', 'double') }} as planned_share
    from source

),

{%- set row_cases = [
    "case when malformed_error is not null then 'malformed_row' end",
    "case when campaign_id is null then 'missing_campaign_id' end",
    "case when customer_id is null then 'missing_customer_id' end",
    "case when variant is null then 'missing_variant' end",
    "case when assigned_at is null then 'invalid_assigned_at' end",
    "case when nullif(trim(planned_share_raw), '') is not null and not coalesce(planned_share > 0 and planned_share <= 1, false) then 'invalid_planned_share' end",
] %}

checked as (

    select
        *,
        {{ first_reason(row_cases) }} as row_reason,
        {{ reason_list(row_cases) }} as row_reasons
    from typed

),

ranked as (

    select
        *,
        case when row_reason is null then row_number() over (
            partition by campaign_id, customer_id, row_reason is null
            order by loaded_at, source_file, row_no
        ) end as assignment_occurrence
    from checked

),

validated as (

    select
        source_file,
        row_no,
        loaded_at,
        malformed_error,
        malformed_record,
        campaign_id,
        customer_id,
        variant,
        assigned_at_raw,
        assigned_at,
        planned_share_raw,
        planned_share,
        coalesce(
            row_reason,
            case when assignment_occurrence > 1 then 'duplicate_assignment' end
        ) as reject_reason,
        coalesce(
            row_reasons,
            case when assignment_occurrence > 1 then 'duplicate_assignment' end
        ) as reject_reasons
    from ranked

)

select * from validated
