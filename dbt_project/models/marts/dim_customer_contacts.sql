{#-
  Restricted: the only table holding direct identifiers (email address, names). Joined at render
  time only; analytics layers never read it.
-#}

select
    customer_id,
    email,
    first_name,
    last_name
from {{ ref('stg_crm__customers') }}
where reject_reason is null
