{#- One row per customer: RFM, engagement, browsing and demographic features as of `feature_as_of`. -#}
{#- Spark: the contract's DuckDB column types are not Spark's; the parity test checks values. -#}
{{ config(contract={'enforced': target.type != 'spark'}) }}
{{ customer_features_sql(ref('feature_as_of')) }}
