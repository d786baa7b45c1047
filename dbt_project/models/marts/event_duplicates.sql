{#- Valid event lines whose event_id had already arrived: kept (never silently dropped), not counted twice. -#}

select
    event_id,
    source_file,
    line_no,
    raw_line,
    loaded_at
from {{ ref('int_events__classified') }}
where disposition = 'duplicate'
