{#- The same features at each training as-of date (feature_snapshot_dates): leakage-free training rows. -#}
{{ customer_features_sql(ref('feature_snapshot_dates')) }}
