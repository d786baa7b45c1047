{#- One row per customer: RFM, engagement, browsing and demographic features as of `feature_as_of`. -#}
{{ customer_features_sql(ref('feature_as_of')) }}
