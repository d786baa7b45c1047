{#-
  On Spark the raw sources are the Parquet export of DuckDB's `raw` schema
  (`personalization_assets.engine.export_raw_tables`, under PERSONALIZATION_SPARK_DIR/raw/<table>).
  This on-run-start hook (re)registers each one as an external table `raw.<table>`, so sources
  resolve the same way on both engines. DuckDB reads its own `raw` schema: nothing to do.
-#}
{% macro register_raw_tables() -%}
    {{ return(adapter.dispatch('register_raw_tables', 'personalization')()) }}
{%- endmacro %}

{% macro default__register_raw_tables() -%}
{%- endmacro %}

{% macro spark__register_raw_tables() -%}
    {%- if execute -%}
    {%- set root = env_var('PERSONALIZATION_SPARK_DIR', '../data/spark') ~ '/raw' -%}
    {%- set schemas = graph.sources.values() | map(attribute='schema') | unique | list -%}
    {%- for schema in schemas -%}
        {%- do run_query('create database if not exists ' ~ schema) -%}
    {%- endfor -%}
    {%- for node in graph.sources.values() -%}
        {%- set table = node.schema ~ '.' ~ node.identifier -%}
        {%- do run_query('drop table if exists ' ~ table) -%}
        {%- do run_query("create table " ~ table ~ " using parquet location '" ~ root ~ "/" ~ node.identifier ~ "'") -%}
    {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
