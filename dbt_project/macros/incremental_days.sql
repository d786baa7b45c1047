{#-
  Incremental processing by landing day. The raw loader stamps every landing day it replaces
  (`raw.event_day_loads.reloaded_at`); an incremental model keeps, per row, the stamp of the day
  load it was built from (`day_loaded_at`). A day is pending when it was reloaded after the
  model last processed it, or never processed. Rows of pending days are deleted (pre-hook) and
  rebuilt; all other days are untouched. Without an existing table every day is processed.

  Plain ANSI SQL (join, group by, delete ... in): the same on DuckDB and other adapters whose
  tables support DELETE (Delta on Spark).
-#}

{% macro pending_landing_days() -%}
    select loads.landing_date, loads.reloaded_at
    from {{ source('raw', 'event_day_loads') }} as loads
    {%- if is_incremental() %}
    left join (
        select landing_date, max(day_loaded_at) as processed_at
        from {{ this }}
        group by landing_date
    ) as done
        on loads.landing_date = done.landing_date
    where done.processed_at is null or loads.reloaded_at > done.processed_at
    {%- endif %}
{%- endmacro %}

{#- Pre-hook of an incremental model: drop the rows of the days about to be rebuilt. -#}
{% macro delete_pending_landing_days() -%}
    {%- if is_incremental() -%}
    delete from {{ this }}
    where landing_date in (select landing_date from ({{ pending_landing_days() }}) as pending)
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}

{#- The event models' materialization: incremental where the table format supports DELETE
    (DuckDB; Spark with `file_format: delta`), else a full rebuild each run (plain Parquet on
    Spark, which has no row-level delete). Results are identical; only the work differs. -#}
{% macro event_model_materialization() -%}
    {%- if target.type == 'spark' and config.get('file_format', 'parquet') != 'delta' -%}
        {{ return('table') }}
    {%- else -%}
        {{ return('incremental') }}
    {%- endif -%}
{%- endmacro %}
