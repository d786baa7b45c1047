"""The analysis against ground truth: simulated campaigns with planted effects (the generator's
response model) go through the real attribution SQL on DuckDB and the real statistics.

Coverage and false-positive rates are estimated over many independent simulated campaigns; the
bounds sit about four standard errors from the nominal rates, so a correct analysis fails them
with negligible probability while a biased one (wrong window, wrong denominator, holdout
compared on delivered only) does not pass.
"""

from __future__ import annotations

from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest

from personalization_assets.defs.ingest.sample_data import (
    GROUND_TRUTH_WINDOW_DAYS,
    ArmEffect,
    ResponseModel,
    simulate_campaign_responses,
)
from personalization_assets.defs.measurement import attribution
from personalization_assets.defs.measurement.assets import (
    VS_HOLDOUT,
    _analyze,
    _analyze_holdout,
    planned_shares,
)
from personalization_assets.settings import MeasurementSettings

SETTINGS = MeasurementSettings(attribution_window_days=GROUND_TRUTH_WINDOW_DAYS)
CAMPAIGNS, RECIPIENTS = 200, 2000
NULL_MODEL = ResponseModel(
    holdout_share=0.2,
    variants=(("A", ArmEffect()), ("B", ArmEffect())),  # no effect anywhere: all lifts 1
)


def _warehouse(sim) -> duckdb.DuckDBPyConnection:
    """The tables the attribution reads, as the warehouse has them."""
    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    for name, frame in (("fct_events", sim.events), ("fct_orders", sim.orders)):
        con.register("_frame", frame)
        con.execute(f"create table {name} as select * from _frame")
        con.unregister("_frame")
    con.register("_frame", sim.assignments)
    con.execute(
        "create table stg_experiments__assignments as "
        "select *, null::varchar as reject_reason from _frame"
    )
    return con


def _run(sim):
    con = _warehouse(sim)
    assigned, counts = attribution.assignment_outcomes(
        con, window_days=GROUND_TRUTH_WINDOW_DAYS, max_clicks_per_minute=5
    )
    outcomes, _ = attribution.recipient_outcomes(
        con, window_days=GROUND_TRUTH_WINDOW_DAYS, max_clicks_per_minute=5
    )
    con.close()
    return assigned, counts, outcomes


def _true_diff(truth: dict, campaign: str, arm: str, baseline: str, metric: str) -> float:
    arms = truth[campaign]["arms"]
    return arms[arm][metric] - arms[baseline][metric]


def _covered(results: pd.DataFrame, truth: dict, baseline: str, metric: str) -> np.ndarray:
    rows = results[results["variant"] != baseline]
    hits = []
    for row in rows.itertuples(index=False):
        true = _true_diff(truth, row.campaign_id, row.variant, baseline, metric)
        low, high = getattr(row, f"{metric}_diff_ci_low"), getattr(row, f"{metric}_diff_ci_high")
        hits.append(low <= true <= high)
    return np.array(hits)


@pytest.fixture(scope="module")
def planted():
    """Campaigns with the shop's default effects: B opens more, both variants convert more."""
    sim = simulate_campaign_responses(11, campaigns=CAMPAIGNS, recipients=RECIPIENTS)
    assigned, counts, outcomes = _run(sim)
    return sim, assigned, counts, outcomes, _analyze_holdout(assigned, SETTINGS)[0]


def test_assignment_record_counts_every_arm_and_the_holdout_gets_nothing(planted):
    sim, assigned, counts, _, _ = planted
    assert len(assigned) == len(sim.assignments) == CAMPAIGNS * RECIPIENTS
    holdout = assigned[assigned["variant"] == "holdout"]
    assert len(holdout) > 0 and holdout[["sent", "opened", "clicked"]].sum().sum() == 0
    assert holdout["converted"].sum() > 0  # customers buy without any email
    assert counts == {
        "sends_without_assignment": 0,
        "holdout_members_sent_an_email": 0,
        "sends_in_another_variant": 0,
        "assignments_window_open": 0,
    }


def test_incremental_lift_vs_holdout_is_recovered_at_nominal_coverage(planted):
    sim, _, _, _, results = planted
    assert set(results["comparison"]) == {VS_HOLDOUT}
    # Welch's interval on zero-inflated, skewed revenue with a small holdout covers a little
    # under nominal (about 0.93 over 600 campaigns); Newcombe's for rates is at nominal.
    for metric, lowest in (("conversion_rate", 0.90), ("revenue_per_recipient", 0.88)):
        covered = _covered(results, sim.truth, "holdout", metric)
        assert len(covered) == 2 * CAMPAIGNS
        assert lowest <= covered.mean() <= 0.995, (metric, covered.mean())


def test_incremental_lift_estimates_are_unbiased_and_detect_the_planted_effect(planted):
    sim, _, _, _, results = planted
    rows = results[results["variant"] != "holdout"]
    truth = np.array(
        [
            _true_diff(sim.truth, r.campaign_id, r.variant, "holdout", "conversion_rate")
            for r in rows.itertuples(index=False)
        ]
    )
    estimate = rows["conversion_rate_diff"].to_numpy()
    standard_error = (estimate - truth).std() / np.sqrt(len(truth))
    assert truth.min() > 0  # the planted lifts are real effects
    assert abs((estimate - truth).mean()) < 4 * standard_error
    # B's larger planted lift shows in the average estimate
    by_arm = rows.groupby("variant")["conversion_rate_diff"].mean()
    assert by_arm["B"] > by_arm["A"] > 0


def test_open_rate_lift_of_variant_b_vs_control_is_recovered(planted):
    sim, assigned, _, outcomes, _ = planted
    results, mismatches = _analyze(outcomes, SETTINGS, planned_shares(assigned))
    assert mismatches == []
    covered = _covered(results, sim.truth, "A", "open_rate")
    assert len(covered) == CAMPAIGNS and 0.90 <= covered.mean() <= 0.995
    significant = results.loc[results["variant"] == "B", "open_rate_significant"]
    assert significant.mean() > 0.5  # a 15% relative open lift is usually detected


@pytest.fixture(scope="module")
def null_campaigns():
    sim = simulate_campaign_responses(23, campaigns=CAMPAIGNS, recipients=2000, model=NULL_MODEL)
    assigned, _, outcomes = _run(sim)
    return sim, assigned, outcomes


def test_no_effect_gives_false_positives_at_the_stated_rate(null_campaigns):
    sim, assigned, outcomes = null_campaigns
    vs_holdout, _ = _analyze_holdout(assigned, SETTINGS)
    treated = vs_holdout[vs_holdout["variant"] != "holdout"]
    # Holm keeps the family-wise rate (either variant flagged) at alpha per campaign
    flagged = treated.groupby("campaign_id")["conversion_rate_significant"].any()
    assert len(flagged) == CAMPAIGNS and flagged.mean() <= 0.05 + 4 * np.sqrt(
        0.05 * 0.95 / CAMPAIGNS
    )
    raw = treated["conversion_rate_p_value"].to_numpy()
    assert 0.01 <= (raw < 0.05).mean() <= 0.10  # about alpha, not far below (a dead test)
    vs_control, _ = _analyze(outcomes, SETTINGS, planned_shares(assigned))
    open_p = vs_control.loc[vs_control["variant"] == "B", "open_rate_p_value"].to_numpy()
    assert (open_p < 0.05).mean() <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / CAMPAIGNS)
    # and the truth really is "no effect"
    diffs = [_true_diff(sim.truth, c, "B", "holdout", "conversion_rate") for c in sim.truth]
    assert max(abs(d) for d in diffs) < 1e-12


def test_an_injected_sample_ratio_mismatch_in_the_holdout_is_flagged():
    model = replace(NULL_MODEL, holdout_share=0.1)
    skewed = simulate_campaign_responses(
        5,
        campaigns=10,
        recipients=3000,
        model=model,
        assignment_shares={"A": 0.465, "B": 0.465, "holdout": 0.07},  # planned 0.45/0.45/0.10
    )
    clean = simulate_campaign_responses(6, campaigns=30, recipients=3000, model=model)
    _, skewed_mismatches = _analyze_holdout(_run(skewed)[0], SETTINGS)
    clean_results, clean_mismatches = _analyze_holdout(_run(clean)[0], SETTINGS)
    assert len(skewed_mismatches) == 10
    assert len(clean_mismatches) <= 1  # srm_alpha 0.001: a false alarm is rare
    assert clean_results["srm_p_value"].notna().all()
