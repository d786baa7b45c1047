"""Campaign results over the real graph: attribution rules and the sample-ratio-mismatch check."""

from __future__ import annotations

from personalization_assets.defs.measurement.assets import _analyze
from personalization_assets.defs.measurement.attribution import recipient_outcomes
from personalization_assets.settings import MeasurementSettings
from tests.conftest import failed_checks


def test_results_exist_per_campaign_and_variant_and_the_split_check_passes(sample_shop):
    rows = sample_shop.query(
        "select campaign_id, variant, recipients, sends from measurement.campaign_results"
    )
    assert rows and {variant for _, variant, _, _ in rows} == {"A", "B"}
    assert "measurement/campaign_results:sample_ratio_mismatch" not in failed_checks(
        sample_shop.result
    )


def test_each_recipient_counts_once_and_responses_never_precede_the_send(sample_shop):
    import duckdb

    con = duckdb.connect(str(sample_shop.database), read_only=True)
    outcomes, _ = recipient_outcomes(con, window_days=3, max_clicks_per_minute=5)
    opened_before_send = con.execute(
        """
        select count(*) from fct_events o
        where o.event_type = 'email_open'
          and o.event_ts < (select min(s.event_ts) from fct_events s where s.event_type = 'email_send'
                            and s.campaign_id = o.campaign_id and s.customer_id = o.customer_id)
        """
    ).fetchone()[0]
    con.close()
    assert not outcomes.duplicated(["campaign_id", "customer_id"]).any()
    assert (outcomes["clicked"] <= outcomes["opened"]).all()
    assert opened_before_send == 0 or outcomes["opened"].sum() > 0


def test_an_injected_sample_ratio_mismatch_is_flagged(sample_shop):
    import duckdb

    con = duckdb.connect(str(sample_shop.database), read_only=True)
    outcomes, _ = recipient_outcomes(con, window_days=3, max_clicks_per_minute=5)
    con.close()
    campaign = outcomes["campaign_id"].value_counts().index[0]
    group = outcomes[outcomes["campaign_id"] == campaign]
    b_rows = group[group["variant"] == "B"]
    skewed = group.drop(b_rows.index[: int(len(b_rows) * 0.7)])
    _, mismatches = _analyze(skewed, MeasurementSettings())
    _, clean = _analyze(group, MeasurementSettings())
    assert mismatches == [campaign] and clean == []
