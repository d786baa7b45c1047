{#-
  Restricted: the only way from a pseudonymous customer_key back to a customer id. Analytics
  layers (features, segments, models) are keyed by customer_key alone; the campaign layer,
  the serving snapshot and erasure join this table to re-identify. The key is
  HMAC-SHA256(PERSONALIZATION_PSEUDONYM_KEY, "customer:" + id), computed by the customer_key()
  macro (the key itself never appears in SQL).
-#}

with known_customers as (

    select customer_id from {{ ref('dim_customers') }}
    union
    select customer_id from {{ ref('fct_events') }} where customer_id is not null
    union
    select customer_id from {{ ref('fct_orders') }} where customer_id is not null

)

select
    {{ customer_key('customer_id') }} as customer_key,
    customer_id
from known_customers
