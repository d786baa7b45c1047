"""Campaign results over the real graph: attribution rules and the sample-ratio-mismatch check."""

from __future__ import annotations

from personalization_assets.defs.measurement.assets import _analyze
from personalization_assets.defs.measurement.attribution import recipient_outcomes
from personalization_assets.settings import MeasurementSettings
from tests.conftest import failed_checks


def test_results_exist_per_campaign_and_variant_and_the_split_check_passes(sample_shop):
    rows = sample_shop.query(
        "select campaign_id, variant, recipients, sends from measurement.campaign_results "
        "where comparison = 'variant_vs_control'"
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


def test_bad_assignment_rows_are_rejected_with_their_reasons(sample_shop):
    expected = {
        (row["file"], row["line"]): row["reason"]
        for row in sample_shop.manifest["injected"]
        if row["source"] == "assignments"
    }
    actual = dict(
        ((source_file, row_no), reason)
        for source_file, row_no, reason in sample_shop.query(
            "select source_file, row_no, reject_reason from stg_experiments__assignments "
            "where reject_reason is not null"
        )
    )
    assert expected and actual == expected
    assert not [k for k in failed_checks(sample_shop.result) if "stg_experiments__assignments" in k]
    accepted = sample_shop.query(
        "select count(*), count(distinct (campaign_id, customer_id)) "
        "from stg_experiments__assignments where reject_reason is null"
    )[0]
    counts = sample_shop.manifest["counts"]
    assert accepted == (counts["expected_assignments_accepted"],) * 2


def test_incremental_lift_vs_holdout_covers_the_planted_effect(sample_shop):
    """Through the real graph: holdout rows per campaign whose window has closed, arm sizes equal
    to the generator's assignments, and the true (planted) differences inside the intervals."""
    truth = sample_shop.manifest["ground_truth"]
    rows = sample_shop.df(
        "select * from measurement.campaign_results where comparison = 'incremental_vs_holdout'"
    )
    complete = {c for c, spec in truth["campaigns"].items() if spec["window_complete"]}
    assert complete and set(rows["campaign_id"]) == complete
    assert set(rows["variant"]) == {"A", "B", "holdout"}
    assert (rows.loc[rows["variant"] == "holdout", "baseline"] == "holdout").all()
    covered = []
    for row in rows.itertuples(index=False):
        arms = truth["campaigns"][row.campaign_id]["arms"]
        assert row.recipients == arms[row.variant]["assigned"]
        if row.variant == "holdout":
            assert row.sends == 0 and row.conversions >= 0
            continue
        for metric in ("conversion_rate", "revenue_per_recipient"):
            true = arms[row.variant][metric] - arms["holdout"][metric]
            low = getattr(row, f"{metric}_diff_ci_low")
            high = getattr(row, f"{metric}_diff_ci_high")
            covered.append(low <= true <= high)
    assert len(covered) == 4 * len(complete)
    assert sum(covered) >= 0.8 * len(covered)
    # opens and clicks are not compared with a holdout: it received nothing
    assert rows["open_rate"].isna().all() and rows["ctr"].isna().all()


def test_results_metadata_shows_the_holdout_table_and_exclusion_counts(sample_shop):
    materializations = [
        event.event_specific_data.materialization
        for event in sample_shop.result.all_events
        if event.event_type_value == "ASSET_MATERIALIZATION"
        and event.event_specific_data.materialization.asset_key.to_user_string()
        == "measurement/campaign_results"
    ]
    metadata = materializations[-1].metadata
    table = metadata["incremental_lift_vs_holdout"].value
    assert "| holdout |" in table and "[" in table
    assert metadata["assignments_analyzed"].value > 0
    assert metadata["assignments_window_open"].value > 0  # the engine's own decisions, at the end
    assert metadata["sends_without_assignment"].value == 0
