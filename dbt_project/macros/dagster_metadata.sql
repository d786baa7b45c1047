{#
  Post-hooks that report a built node's row count (and, for quarantined_rows, the rows per
  reason) in dbt's own log stream, so the Dagster asset can attach them to each materialization
  as it streams, without opening the warehouse after the build (DuckDB: one writer at a time).
  personalization_assets/defs/warehouse/assets.py reads the `dagster_metadata ` log lines.
  On Spark a count is a cluster job per node: the asset reads counts back from DuckDB there.
#}
{% macro dagster_row_count() %}
  {{ return(adapter.dispatch('dagster_row_count', 'personalization')()) }}
{% endmacro %}

{% macro default__dagster_row_count() %}
  {%- if execute and config.get('materialized') in ('table', 'incremental', 'seed') -%}
    {%- set result = run_query('select count(*) from ' ~ this) -%}
    {%- do log('dagster_metadata ' ~ tojson({'row_count': result.columns[0].values()[0] | int}), info=True) -%}
  {%- endif -%}
{% endmacro %}

{% macro spark__dagster_row_count() %}{% endmacro %}

{% macro dagster_rows_by(column_a, column_b) %}
  {{ return(adapter.dispatch('dagster_rows_by', 'personalization')(column_a, column_b)) }}
{% endmacro %}

{% macro default__dagster_rows_by(column_a, column_b) %}
  {%- if execute -%}
    {%- set result = run_query(
        'select ' ~ column_a ~ ', ' ~ column_b ~ ', count(*) as n from ' ~ this
        ~ ' group by 1, 2 order by n desc, 1, 2') -%}
    {%- set rows = [] -%}
    {%- for row in result.rows -%}
      {%- do rows.append([row[0], row[1], row[2] | int]) -%}
    {%- endfor -%}
    {%- do log('dagster_metadata ' ~ tojson({'rows_by': [column_a, column_b], 'rows': rows}), info=True) -%}
  {%- endif -%}
{% endmacro %}

{% macro spark__dagster_rows_by(column_a, column_b) %}{% endmacro %}
