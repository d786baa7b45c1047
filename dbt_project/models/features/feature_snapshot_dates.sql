{#-
  As-of dates for training snapshots: `snapshot_count` dates, `snapshot_spacing_days` apart, the
  latest `snapshot_label_horizon_days` before the current as-of so every snapshot has a label
  window. Models train on the earlier ones and evaluate on the latest.
-#}

with current_as_of as (

    select as_of from {{ ref('feature_as_of') }}

),

offsets as (

    {% for i in range(var('snapshot_count') | int) %}
    select {{ i }} as snapshot_index
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

)

select
    offsets.snapshot_index,
    {{ dbt.dateadd(
        'day',
        '-1 * (' ~ var('snapshot_label_horizon_days') ~ ' + offsets.snapshot_index * ' ~ var('snapshot_spacing_days') ~ ')',
        'current_as_of.as_of'
    ) }} as as_of
from offsets
cross join current_as_of
