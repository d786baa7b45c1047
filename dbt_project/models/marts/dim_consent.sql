{#-
  The consent ledger: one row per customer and purpose (`email_marketing`,
  `behavioral_tracking`, `email_group:<group>`) with the current state, the statement that set it
  and when.

  Statements:
  - CRM export rows state both purposes: email_marketing is granted when `email_consent` is
    true and `unsubscribed` is false; behavioral_tracking follows `tracking_consent`.
    The first CRM value of a customer (`crm_initial`) is dated at the signup date (when consent
    was collected; unknown signup = before any event). A later export only states something
    when the value changed (`crm_change`), dated by the load of the first export showing it.
    So a stale or re-delivered export never re-grants after an unsubscribe, while a real
    re-subscription recorded by the CRM does. Rows valid apart from being a later export of the
    same customer in another file (`duplicate_customer_id`) count as history.
  - an `unsubscribe` event revokes email_marketing at the event's time.
  - a `preference_update` event (the preference centre; properties `{"<group>": true|false}`,
    groups of config/campaigns.yaml `subscription_groups`) states `email_group:<group>` for each
    boolean it carries, at the event's time. Other keys and values are ignored.
  The latest statement wins; on a tie a revocation wins. No row means no consent, except for
  `email_group:*`: a group is opt-out, so no row means the customer gets the group's emails as
  long as email_marketing is granted. A global unsubscribe revokes email_marketing and so every
  group, whatever the group rows say.
-#}

with crm_rows as (

    select
        customer_id,
        loaded_at,
        coalesce(cast(signup_date as timestamp), timestamp '1900-01-01') as signup_at,
        source_file,
        row_no,
        email_consent and not unsubscribed as email_marketing,
        tracking_consent as behavioral_tracking
    from {{ ref('stg_crm__customers') }}
    where customer_id is not null
        and (reject_reason is null or reject_reason = 'duplicate_customer_id')
        and coalesce(reject_reasons, '') not like '%malformed_row%'
        and coalesce(reject_reasons, '') not like '%invalid_email%'
    -- a second row of the same customer in the same file is bad input, not history
    qualify row_number() over (partition by customer_id, source_file order by row_no) = 1

),

crm_statements as (

    select
        customer_id,
        purpose,
        granted,
        case when previous is null then signup_at else loaded_at end as stated_at,
        case when previous is null then 'crm_initial' else 'crm_change' end as source,
        source_file as source_ref
    from (
        select
            *,
            lag(granted) over (
                partition by customer_id, purpose order by loaded_at, source_file, row_no
            ) as previous
        from crm_rows
        unpivot (granted for purpose in (email_marketing, behavioral_tracking))
    )
    where previous is null or previous <> granted

),

unsubscribe_statements as (

    select
        customer_id,
        'email_marketing' as purpose,
        false as granted,
        event_ts as stated_at,
        'unsubscribe_event' as source,
        event_id as source_ref
    from {{ ref('fct_events') }}
    where event_type = 'unsubscribe'

),

group_choices as (

    select
        customer_id,
        event_id,
        event_ts,
        properties,
        unnest(json_keys(properties)) as group_id
    from {{ ref('fct_events') }}
    where event_type = 'preference_update'

),

group_statements as (

    select
        customer_id,
        'email_group:' || group_id as purpose,
        json_extract_string(properties, '$."' || group_id || '"') = 'true' as granted,
        event_ts as stated_at,
        'preference_event' as source,
        event_id as source_ref
    from group_choices
    where regexp_full_match(group_id, '[a-z0-9_]+')
        and json_type(properties, '$."' || group_id || '"') = 'BOOLEAN'

),

statements as (

    select * from crm_statements
    union all
    select * from unsubscribe_statements
    union all
    select * from group_statements

),

latest as (

    select
        *,
        row_number() over (
            partition by customer_id, purpose
            order by stated_at desc, granted asc, source, source_ref desc
        ) as recency
    from statements

)

select
    customer_id || ':' || purpose as consent_key,
    customer_id,
    purpose,
    granted,
    source,
    source_ref,
    stated_at
from latest
where recency = 1
