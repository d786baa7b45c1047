"""Test-then-winner: sticky phases, planted winners found, fallbacks, no re-decision."""

from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pytest

from personalization_assets.defs.campaigns.rollout import (
    RolloutDecision,
    RolloutSpec,
    decide_winner,
    remainder_variants,
    rollout_bucket,
    rollout_bucket_sql,
    simulate_test_phase,
    split_audience,
)

STARTED = datetime(2026, 6, 2, 7, tzinfo=UTC)
AFTER_WAIT = STARTED + timedelta(hours=25)
CUSTOMERS = [f"c{i:07d}" for i in range(20_000)]


def spec(**overrides) -> RolloutSpec:
    return RolloutSpec(**{"default_variant": "A", "wait_hours": 24, **overrides})


def test_python_bucket_equals_the_duckdb_expression():
    con = duckdb.connect()
    sample = CUSTOMERS[:500]
    rows = con.execute(
        f"select c, {rollout_bucket_sql('$campaign', 'c')} from unnest($ids) as t(c)",
        {"campaign": "spring_sale", "ids": sample},
    ).fetchall()
    assert [b for _, b in rows] == pytest.approx(
        [rollout_bucket("spring_sale", c) for c, _ in rows]
    )


def test_split_is_sticky_sized_and_each_recipient_in_exactly_one_phase():
    first = split_audience("spring_sale", CUSTOMERS, 0.2)
    rerun = split_audience("spring_sale", list(reversed(CUSTOMERS)), 0.2)
    merged = first.merge(rerun, on="customer_id", suffixes=("", "_rerun"))
    assert len(merged) == len(CUSTOMERS) == first["customer_id"].nunique()
    assert (merged["phase"] == merged["phase_rerun"]).all()
    assert set(first["phase"]) == {"test", "remainder"}
    assert first["phase"].eq("test").mean() == pytest.approx(0.2, abs=0.01)
    wider = split_audience("spring_sale", CUSTOMERS, 0.3)
    # growing the test share only moves recipients from remainder into test
    assert set(first.loc[first.phase == "test", "customer_id"]) <= set(
        wider.loc[wider.phase == "test", "customer_id"]
    )
    other = split_audience("autumn_sale", CUSTOMERS, 0.2)
    assert (other["phase"] != first["phase"]).mean() > 0.25  # per-campaign, not per-customer


def test_phase_bucket_is_independent_of_the_variant_bucket():
    # decisions.py assigns variants from md5(campaign:customer); the rollout key differs, so
    # the test phase gets the variants in their planned shares.
    con = duckdb.connect()
    shares = con.execute(
        f"""
        select avg(case when ((md5_number('spring_sale:' || c) % 1000000) / 1000000.0) < 0.5
                   then 1 else 0 end)
        from unnest($ids) as t(c)
        where {rollout_bucket_sql("'spring_sale'", "c")} < 0.2
        """,
        {"ids": CUSTOMERS},
    ).fetchall()[0][0]
    assert shares == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    ("metric", "rates"),
    [
        ("click_rate", {"A": 0.030, "B": 0.045, "C": 0.030}),
        ("open_rate", {"A": 0.20, "B": 0.235}),
        ("conversion_rate", {"A": 0.020, "B": 0.032}),
        ("revenue_per_recipient", {"A": 0.020, "B": 0.034}),
    ],
)
def test_planted_winner_is_picked_in_the_large_majority_of_seeds(metric, rates):
    picked, wrong = 0, 0
    for seed in range(40):
        results = simulate_test_phase(12_000, rates, metric, seed)
        decision = decide_winner(
            "spring_sale", results, spec(metric=metric), test_started=STARTED, now=AFTER_WAIT
        )
        picked += decision.winner == "B" and decision.reason == "significant"
        wrong += decision.reason == "significant" and decision.winner != "B"
    assert picked >= 32  # >= 80% of seeds
    assert wrong == 0


def test_no_real_difference_falls_back_to_the_default_variant():
    significant = 0
    for seed in range(40):
        results = simulate_test_phase(8_000, {"A": 0.03, "B": 0.03}, "click_rate", seed)
        decision = decide_winner("s", results, spec(), test_started=STARTED, now=AFTER_WAIT)
        assert decision.winner == "A" or decision.reason == "significant"
        significant += decision.reason == "significant"
        if decision.reason == "not_significant":
            assert decision.adjusted_p_values["A" if decision.leader == "B" else "B"] > 0.05 - 1e-12
    assert significant <= 6  # about alpha (5%) of 40 seeds; never the rule


def test_too_few_responses_gives_the_default_with_a_reason():
    results = simulate_test_phase(150, {"A": 0.01, "B": 0.05}, "click_rate", 3)
    decision = decide_winner(
        "s",
        results,
        spec(min_recipients_per_variant=50, min_responses_per_variant=20),
        test_started=STARTED,
        now=AFTER_WAIT,
    )
    assert decision.winner == "A"
    assert decision.reason == "too_few_responses"
    assert "responses" in decision.note
    tiny = simulate_test_phase(60, {"A": 0.3, "B": 0.6}, "click_rate", 1)
    decision = decide_winner("s", tiny, spec(), test_started=STARTED, now=AFTER_WAIT)
    assert decision.reason == "too_few_responses"
    assert "fewer than 100 recipients" in decision.note


def test_nothing_is_decided_before_the_wait_is_over():
    results = simulate_test_phase(12_000, {"A": 0.03, "B": 0.06}, "click_rate", 0)
    early = STARTED + timedelta(hours=23, minutes=59)
    assert decide_winner("s", results, spec(), test_started=STARTED, now=early) is None
    on_time = decide_winner(
        "s", results, spec(), test_started=STARTED, now=STARTED + timedelta(hours=24)
    )
    assert on_time is not None and on_time.winner == "B"


def test_rerun_after_the_decision_returns_the_stored_decision_unchanged():
    results = simulate_test_phase(12_000, {"A": 0.03, "B": 0.06}, "click_rate", 0)
    decision = decide_winner("s", results, spec(), test_started=STARTED, now=AFTER_WAIT)
    stored = RolloutDecision.from_json(decision.to_json())
    assert stored == decision
    # later data that would now favour A must not change the recorded winner
    flipped = results.assign(variant=results["variant"].map({"A": "B", "B": "A"}))
    again = decide_winner(
        "s",
        flipped,
        spec(),
        test_started=STARTED,
        now=AFTER_WAIT + timedelta(days=3),
        existing=stored,
    )
    assert again == decision
    assert again.decided_at == AFTER_WAIT.isoformat()


def test_decision_record_carries_metric_estimates_and_p_values():
    results = simulate_test_phase(12_000, {"A": 0.03, "B": 0.06, "C": 0.03}, "click_rate", 5)
    decision = decide_winner("s", results, spec(), test_started=STARTED, now=AFTER_WAIT)
    assert decision.metric == "click_rate"
    assert set(decision.estimates) == {"A", "B", "C"}
    for variant in "ABC":
        rows = results[results.variant == variant]
        assert decision.estimates[variant] == pytest.approx(
            rows.clicked.sum() / rows.delivered.sum()
        )
    assert set(decision.p_values) == {"A", "C"} == set(decision.adjusted_p_values)
    assert all(decision.adjusted_p_values[v] >= decision.p_values[v] for v in decision.p_values)


def test_every_recipient_gets_at_most_one_email_across_phases():
    split = split_audience("spring_sale", CUSTOMERS, 0.2)
    test_phase = split[split.phase == "test"].assign(
        variant=lambda f: ["A" if i % 2 else "B" for i in range(len(f))]
    )
    assert remainder_variants(split, None).empty  # nothing goes to the remainder before a decision
    decision = decide_winner(
        "spring_sale",
        simulate_test_phase(len(test_phase), {"A": 0.03, "B": 0.06}, "click_rate", 2),
        spec(),
        test_started=STARTED,
        now=AFTER_WAIT,
    )
    remainder = remainder_variants(split, decision)
    sends = pd.concat(
        [test_phase[["customer_id", "variant"]], remainder[["customer_id", "variant"]]]
    )
    assert sends["customer_id"].is_unique
    assert len(sends) == len(CUSTOMERS)
    assert (remainder["variant"] == decision.winner).all()
    assert remainder_variants(split, decision).equals(remainder)  # rerun: same plan


def test_missing_metric_columns_raise_a_clear_error():
    with pytest.raises(ValueError, match="lack columns"):
        decide_winner(
            "s",
            pd.DataFrame({"variant": ["A", "B"], "opened": [1, 0]}),
            spec(metric="click_rate"),
            test_started=STARTED,
            now=AFTER_WAIT,
        )
