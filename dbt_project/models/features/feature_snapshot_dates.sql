{#-
  As-of dates for training snapshots, per label horizon: `snapshot_count` dates
  `snapshot_spacing_days` apart, the latest one a full horizon before the current as-of (so its
  label window is observed), none earlier than `snapshot_min_history_days` after the first event.
-#}

with bounds as (

    select
        (select as_of from {{ ref('feature_as_of') }}) as data_end,
        (select min(event_ts) from {{ ref('fct_events') }}) as data_start

),

candidates as (

    {% for horizon in var('label_horizons_days') %}
    {% set horizon_loop = loop %}
    {% for i in range(var('snapshot_count') | int) %}
    select
        {{ horizon }} as horizon_days,
        {{ i }} as snapshot_index,
        {{ dbt.dateadd('day', -1 * (horizon | int + i * var('snapshot_spacing_days') | int), 'bounds.data_end') }} as as_of
    from bounds
    {% if not (loop.last and horizon_loop.last) %}union all{% endif %}
    {% endfor %}
    {% endfor %}

)

select distinct cast(candidates.as_of as timestamp) as as_of
from candidates
cross join bounds
where candidates.as_of >= {{ dbt.dateadd('day', var('snapshot_min_history_days') | int, 'bounds.data_start') }}
