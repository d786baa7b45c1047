"""Tests for the A/B/n experiment statistics (``defs/measurement/stats.py``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from personalization_assets.defs.measurement.stats import (
    achieved_power,
    adjust_p_values,
    analyze_variants,
    bonferroni_correction,
    holm_correction,
    required_sample_size,
    sample_ratio_mismatch,
    simulate_experiment,
    two_proportion_test,
    welch_t_test,
    wilson_interval,
)

RATE_COLUMNS = ("open_rate", "ctr", "conversion_rate", "revenue_per_recipient")
COMPARISON_SUFFIXES = ("diff", "diff_ci_low", "diff_ci_high", "lift", "p_value", "p_adjusted")


# --------------------------------------------------------------------------- scipy references


@pytest.mark.parametrize("seed", range(8))
def test_two_proportion_test_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_a, n_b = (int(v) for v in rng.integers(50, 50_000, size=2))
    x_a = int(rng.binomial(n_a, rng.uniform(0.01, 0.5)))
    x_b = int(rng.binomial(n_b, rng.uniform(0.01, 0.5)))
    alpha = float(rng.choice([0.01, 0.05, 0.1]))

    res = two_proportion_test(x_a, n_a, x_b, n_b, alpha)

    table = np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]])
    chi2, p_ref, dof, _ = sps.chi2_contingency(table, correction=False)
    assert dof == 1
    assert res.p_value == pytest.approx(p_ref, rel=1e-9, abs=1e-300)
    assert res.z**2 == pytest.approx(chi2, rel=1e-9)
    assert res.difference == pytest.approx(x_b / n_b - x_a / n_a)
    assert math.copysign(1, res.z) == math.copysign(1, res.difference) or res.difference == 0
    assert res.relative_lift == pytest.approx((x_b / n_b - x_a / n_a) / (x_a / n_a))
    assert res.ci_low <= res.difference <= res.ci_high

    # Wald interval against the textbook formula.
    wald = two_proportion_test(x_a, n_a, x_b, n_b, alpha, ci_method="wald")
    p_a, p_b = x_a / n_a, x_b / n_b
    half = sps.norm.ppf(1 - alpha / 2) * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    assert (wald.ci_low, wald.ci_high) == pytest.approx(
        (res.difference - half, res.difference + half)
    )
    assert wald.p_value == res.p_value

    # The Wilson building block of the Newcombe interval against scipy.
    for x, n in ((x_a, n_a), (x_b, n_b)):
        ref = sps.binomtest(x, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
        assert wilson_interval(x, n, alpha) == pytest.approx((ref.low, ref.high), rel=1e-9)


@pytest.mark.parametrize(
    ("control", "treatment", "expected"),
    [
        # Newcombe (1998), Stat. Med. 17:873-890, Table II, method 10 (hybrid score, no CC).
        # The paper reports treatment - control for (treatment, control) = (56/70, 48/80) etc.
        ((48, 80), (56, 70), (0.0524, 0.3339)),
        ((3, 10), (9, 10), (0.1705, 0.8090)),
        ((0, 20), (0, 10), (-0.1611, 0.2775)),
        ((0, 10), (10, 10), (0.6075, 1.0000)),
    ],
)
def test_newcombe_interval_matches_published_examples(control, treatment, expected) -> None:
    res = two_proportion_test(*control, *treatment)
    assert (res.ci_low, res.ci_high) == pytest.approx(expected, abs=5e-5)


def test_wald_interval_matches_published_example() -> None:
    # Newcombe (1998) Table II, method 1 (simple asymptotic), example (a).
    res = two_proportion_test(48, 80, 56, 70, ci_method="wald")
    assert (res.ci_low, res.ci_high) == pytest.approx((0.0575, 0.3425), abs=5e-5)


@pytest.mark.parametrize("seed", range(8))
def test_welch_t_test_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n_a, n_b = (int(v) for v in rng.integers(20, 5_000, size=2))
    # Zero-inflated, skewed revenue per recipient, as in real campaigns.
    a = np.where(rng.random(n_a) < 0.05, rng.lognormal(3.5, 0.8, n_a), 0.0)
    b = np.where(rng.random(n_b) < 0.06, rng.lognormal(3.6, 0.9, n_b), 0.0)
    a[0], b[0] = 12.5, 30.0  # never all-zero
    alpha = float(rng.choice([0.01, 0.05, 0.1]))

    res = welch_t_test(a, b, alpha)
    ref = sps.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(confidence_level=1 - alpha)

    assert res.t == pytest.approx(ref.statistic, rel=1e-9)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert res.df == pytest.approx(ref.df, rel=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert res.difference == pytest.approx(b.mean() - a.mean())
    assert res.relative_lift == pytest.approx(b.mean() / a.mean() - 1)
    assert res.lift_ci_low < res.relative_lift < res.lift_ci_high


@pytest.mark.parametrize("seed", range(5))
def test_sample_ratio_mismatch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    weights = {"control": 0.45, "variant_b": 0.45, "holdout": 0.10}
    counts = dict(zip(weights, rng.multinomial(10_000, list(weights.values())), strict=True))
    res = sample_ratio_mismatch(counts, weights)
    expected = [10_000 * w for w in weights.values()]
    ref = sps.chisquare(list(counts.values()), expected)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.df == 2
    assert res.expected == pytest.approx(dict(zip(weights, expected, strict=True)))


# --------------------------------------------------------------------------- SRM


def test_injected_sample_ratio_mismatch_is_flagged() -> None:
    planned = {"control": 0.5, "treatment": 0.5}
    broken = sample_ratio_mismatch({"control": 10_600, "treatment": 9_400}, planned)
    assert broken.statistic == pytest.approx(72.0)
    assert broken.mismatch
    assert broken.p_value < 1e-15
    healthy = sample_ratio_mismatch({"control": 10_050, "treatment": 9_950}, planned)
    assert healthy.statistic == pytest.approx(0.5)
    assert not healthy.mismatch
    assert healthy.p_value == pytest.approx(0.4795, abs=1e-4)
    # Weights are relative; an arm missing from the counts is a zero count.
    assert sample_ratio_mismatch({"a": 100, "b": 100}, {"a": 1, "b": 1}).p_value == 1.0
    assert sample_ratio_mismatch({"a": 100}, {"a": 1, "b": 1}).mismatch


def test_sample_ratio_mismatch_through_analyze_variants() -> None:
    planned = {"control": 0.5, "treatment": 0.5}
    rates = {"control": 0.05, "treatment": 0.05}
    skewed = simulate_experiment(20_000, rates, {"control": 0.53, "treatment": 0.47}, seed=3)
    out = analyze_variants(skewed, metrics=("conversions",), expected_weights=planned)
    assert out["srm_mismatch"].all()
    assert out["note"].str.contains("SAMPLE RATIO MISMATCH").all()

    fair = simulate_experiment(20_000, rates, planned, seed=3)
    out = analyze_variants(fair, metrics=("conversions",), expected_weights=planned)
    assert not out["srm_mismatch"].any()
    assert not out["note"].str.contains("SAMPLE RATIO MISMATCH").any()


def test_sample_ratio_mismatch_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="without an expected weight"):
        sample_ratio_mismatch({"a": 1, "z": 2}, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="at least one assigned unit"):
        sample_ratio_mismatch({"a": 0, "b": 0}, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="positive"):
        sample_ratio_mismatch({"a": 1, "b": 2}, {"a": 1, "b": 0})
    with pytest.raises(ValueError, match="at least 2 arms"):
        sample_ratio_mismatch({"a": 1}, {"a": 1})


# --------------------------------------------------------------------------- multiplicity


def test_holm_correction_hand_worked_example() -> None:
    # m = 4. Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04,
    # raised to the running max 0.06). Back in input order: 0.03, 0.06, 0.06, 0.02.
    res = holm_correction([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert res.adjusted == pytest.approx((0.03, 0.06, 0.06, 0.02))
    assert res.reject == (True, False, False, True)
    assert res.method == "holm"

    bonf = bonferroni_correction([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert bonf.adjusted == pytest.approx((0.04, 0.16, 0.12, 0.02))
    assert bonf.reject == (True, False, False, True)

    # Capped at 1, and monotone in the sorted order.
    assert holm_correction([0.5, 0.6]).adjusted == (1.0, 1.0)
    assert holm_correction([0.02, 0.03]).adjusted == pytest.approx((0.04, 0.04))
    assert holm_correction([0.2]).adjusted == (0.2,)
    assert holm_correction([]).adjusted == ()
    assert adjust_p_values([0.01, 0.04], "bonferroni").adjusted == pytest.approx((0.02, 0.08))


def test_holm_is_never_less_powerful_than_bonferroni() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=int(rng.integers(1, 8)))
        holm, bonf = holm_correction(p), bonferroni_correction(p)
        assert all(h <= b + 1e-15 for h, b in zip(holm.adjusted, bonf.adjusted, strict=True))
        assert all(h >= p_i for h, p_i in zip(holm.adjusted, p, strict=True))


def test_multiple_testing_rejects_invalid_p_values() -> None:
    with pytest.raises(ValueError, match="NaN"):
        holm_correction([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bonferroni_correction([1.2])
    with pytest.raises(ValueError, match="holm"):
        adjust_p_values([0.1], "sidak")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- power


def _fleiss_n(p1: float, p2: float, alpha: float, power: float) -> float:
    """Fleiss, Levin & Paik (2003) eq. 4.14 without continuity correction, written out."""
    pbar = (p1 + p2) / 2
    z_a, z_b = sps.norm.ppf(1 - alpha / 2), sps.norm.ppf(power)
    top = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return top**2 / (p2 - p1) ** 2


def test_required_sample_size_worked_example() -> None:
    # 10% baseline, detect 12% (20% relative / 2 points absolute), alpha 0.05, power 0.8.
    assert _fleiss_n(0.10, 0.12, 0.05, 0.8) == pytest.approx(3840.8, abs=0.05)
    assert required_sample_size(0.10, 0.20) == 3841
    assert required_sample_size(0.10, 0.02, lift_type="absolute") == 3841
    assert required_sample_size(0.10, 0.20, lift_type="relative") == 3841


@pytest.mark.parametrize(
    ("p1", "lift", "alpha", "power"),
    [
        (0.02, 0.10, 0.05, 0.8),
        (0.3, -0.05, 0.01, 0.9),
        (0.5, 0.01, 0.1, 0.8),
        (0.001, 1.0, 0.05, 0.95),
    ],
)
def test_required_sample_size_matches_formula_and_power(p1, lift, alpha, power) -> None:
    n = required_sample_size(p1, lift, alpha=alpha, power=power)
    assert n == math.ceil(_fleiss_n(p1, p1 * (1 + lift), alpha, power))
    assert achieved_power(p1, lift, n, alpha=alpha) >= power
    # achieved_power also counts the (tiny) far rejection tail that the sample-size formula
    # ignores, so one unit fewer can be above target by at most that tail (< 1e-4 here).
    assert achieved_power(p1, lift, n - 1, alpha=alpha) < power + 1e-4
    assert achieved_power(p1, lift, int(n * 0.95), alpha=alpha) < power
    # Unequal arms with the same total are less powerful; equal arms reduce to the default.
    assert achieved_power(p1, lift, n, n, alpha=alpha) == achieved_power(p1, lift, n, alpha=alpha)
    assert achieved_power(p1, lift, n // 2, n + n // 2, alpha=alpha) < power


def test_power_input_validation() -> None:
    with pytest.raises(ValueError, match="outside"):
        required_sample_size(0.6, 1.0)  # 0.6 * 2 > 1
    with pytest.raises(ValueError, match="non-zero"):
        required_sample_size(0.1, 0.0)
    with pytest.raises(ValueError, match="lift_type"):
        required_sample_size(0.1, 0.1, lift_type="percent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p_baseline"):
        achieved_power(0.0, 0.1, 1000)
    with pytest.raises(ValueError, match="positive group sizes"):
        achieved_power(0.1, 0.1, 0)


# --------------------------------------------------------------------------- simulations


def test_confidence_intervals_cover_the_true_effect() -> None:
    true_rates = {"control": 0.05, "treatment": 0.06}
    aov = 60.0
    covered = {"conversion_diff": 0, "conversion_lift": 0, "revenue_diff": 0, "revenue_lift": 0}
    seeds = range(100)
    for seed in seeds:
        frame = simulate_experiment(6_000, true_rates, seed=seed, mean_order_value=aov)
        row = analyze_variants(frame, metrics=("conversions", "revenue")).iloc[1]
        covered["conversion_diff"] += (
            row["conversion_rate_diff_ci_low"] <= 0.01 <= row["conversion_rate_diff_ci_high"]
        )
        covered["conversion_lift"] += (
            row["conversion_rate_lift_ci_low"] <= 0.2 <= row["conversion_rate_lift_ci_high"]
        )
        true_rpr_diff = (0.06 - 0.05) * aov
        covered["revenue_diff"] += (
            row["revenue_per_recipient_diff_ci_low"]
            <= true_rpr_diff
            <= row["revenue_per_recipient_diff_ci_high"]
        )
        covered["revenue_lift"] += (
            row["revenue_per_recipient_lift_ci_low"]
            <= 0.2
            <= row["revenue_per_recipient_lift_ci_high"]
        )
    # 95% nominal; with 100 seeds, >= 90 allows for sampling noise (P(X < 90) ~ 1.5%).
    assert all(count >= 90 for count in covered.values()), covered


def test_false_positive_rate_without_a_true_effect() -> None:
    # A/B/C/D with no true differences: 3 comparisons against control per seed.
    rates = dict.fromkeys(("control", "b", "c", "d"), 0.05)
    seeds = range(200)
    raw_conv = raw_rev = family_conv = 0
    for seed in seeds:
        frame = simulate_experiment(8_000, rates, seed=10_000 + seed)
        out = analyze_variants(frame, metrics=("conversions", "revenue")).iloc[1:]
        raw_conv += int((out["conversion_rate_p_value"] < 0.05).sum())
        raw_rev += int((out["revenue_per_recipient_p_value"] < 0.05).sum())
        family_conv += bool(out["conversion_rate_significant"].any())
    comparisons = 3 * len(seeds)
    # Expected 0.05; tolerance 0.09 is > 4 binomial SDs above for 600 comparisons.
    assert raw_conv / comparisons <= 0.09
    assert raw_rev / comparisons <= 0.09
    # Not absurdly conservative either.
    assert raw_conv / comparisons >= 0.02
    # Holm keeps the family-wise error rate (any false positive among the 3) near alpha.
    assert family_conv / len(seeds) <= 0.09


def test_simulate_experiment_shape_and_known_rates() -> None:
    rates = {"control": 0.04, "treatment": 0.06, "holdout": 0.03}
    weights = {"control": 0.45, "treatment": 0.45, "holdout": 0.10}
    frame = simulate_experiment(40_000, rates, weights, seed=1, open_rates=0.3, click_rates=0.05)
    assert list(frame.columns) == [
        "recipient_id",
        "variant",
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
        "revenue",
    ]
    assert len(frame) == 40_000
    holdout = frame[frame["variant"] == "holdout"]
    assert holdout[["sent", "delivered", "opened", "clicked"]].to_numpy().sum() == 0
    assert holdout["converted"].mean() == pytest.approx(0.03, abs=0.01)
    assert (frame.loc[frame["converted"] == 0, "revenue"] == 0).all()
    assert (frame.loc[frame["converted"] == 1, "revenue"] > 0).all()
    emailed = frame[frame["variant"] != "holdout"]
    assert emailed["delivered"].mean() == pytest.approx(0.98, abs=0.005)
    delivered = emailed[emailed["delivered"] == 1]
    assert delivered["opened"].mean() == pytest.approx(0.3, abs=0.01)
    assert delivered["clicked"].mean() == pytest.approx(0.05, abs=0.005)
    shares = frame["variant"].value_counts(normalize=True)
    assert shares["holdout"] == pytest.approx(0.10, abs=0.01)
    again = simulate_experiment(40_000, rates, weights, seed=1, open_rates=0.3, click_rates=0.05)
    pd.testing.assert_frame_equal(frame, again)


# --------------------------------------------------------------------------- analyze_variants


def _hand_frame() -> pd.DataFrame:
    """10 control, 10 treatment and 5 holdout recipients with hand-countable outcomes."""
    rows = []
    # control: 10 sent, 8 delivered, 4 opened, 2 clicked, 1 converted (revenue 50).
    for i in range(10):
        rows.append(
            ("control", 1, int(i < 8), int(i < 4), int(i < 2), int(i == 0), 50.0 * (i == 0))
        )
    # treatment: 10 sent, 10 delivered, 6 opened, 3 clicked, 3 converted (20, 30, 40).
    for i in range(10):
        rev = (20.0, 30.0, 40.0)[i] if i < 3 else 0.0
        rows.append(("treatment", 1, 1, int(i < 6), int(i < 3), int(i < 3), rev))
    # holdout: nothing sent; 1 of 5 converted anyway (revenue 10).
    for i in range(5):
        rows.append(("holdout", 0, 0, 0, 0, int(i == 0), 10.0 * (i == 0)))
    columns = ["variant", "sent", "delivered", "opened", "clicked", "converted", "revenue"]
    return pd.DataFrame(rows, columns=columns)


def test_analyze_variants_denominators_and_counts() -> None:
    out = analyze_variants(_hand_frame()).set_index("variant")
    assert list(out.index) == ["control", "holdout", "treatment"]
    assert out["is_control"].tolist() == [True, False, False]

    c, t, h = out.loc["control"], out.loc["treatment"], out.loc["holdout"]
    assert (c["recipients"], c["sends"], c["delivered"]) == (10, 10, 8)
    assert c["open_rate"] == pytest.approx(4 / 8)  # opens / delivered
    assert c["ctr"] == pytest.approx(2 / 8)  # clicks / delivered
    assert c["conversion_rate"] == pytest.approx(1 / 10)  # conversions / recipients
    assert c["revenue_per_recipient"] == pytest.approx(50 / 10)  # revenue / recipients
    assert t["open_rate"] == pytest.approx(6 / 10)
    assert t["revenue_per_recipient"] == pytest.approx(90 / 10)

    # Holdout: engagement undefined (with a note), conversions and revenue comparable.
    assert math.isnan(h["open_rate"]) and math.isnan(h["ctr"])
    assert math.isnan(h["open_rate_p_value"])
    assert "nothing delivered" in h["note"]
    assert h["conversion_rate"] == pytest.approx(1 / 5)
    assert h["revenue_per_recipient"] == pytest.approx(10 / 5)

    # The per-variant p-values are exactly the building-block tests on the same data.
    frame = _hand_frame()
    ref = two_proportion_test(4, 8, 6, 10)
    assert t["open_rate_p_value"] == pytest.approx(ref.p_value)
    assert t["open_rate_diff_ci_low"] == pytest.approx(ref.ci_low)
    ref_rev = welch_t_test(
        frame.loc[frame.variant == "control", "revenue"],
        frame.loc[frame.variant == "treatment", "revenue"],
    )
    assert t["revenue_per_recipient_p_value"] == pytest.approx(ref_rev.p_value)
    assert t["revenue_per_recipient_diff_ci_high"] == pytest.approx(ref_rev.ci_high)

    # Holm across the two variants compared on conversions.
    p = [h["conversion_rate_p_value"], t["conversion_rate_p_value"]]
    assert [h["conversion_rate_p_adjusted"], t["conversion_rate_p_adjusted"]] == pytest.approx(
        list(holm_correction(p).adjusted)
    )
    # The control row carries no comparison.
    assert c[[f"conversion_rate_{s}" for s in COMPARISON_SUFFIXES]].isna().all()
    assert pd.isna(c["underpowered"]) and pd.isna(c["conversion_rate_significant"])


def test_analyze_variants_with_holdout_as_control() -> None:
    out = analyze_variants(_hand_frame(), control="holdout").set_index("variant")
    assert list(out.index) == ["holdout", "control", "treatment"]
    for variant in ("control", "treatment"):
        row = out.loc[variant]
        assert math.isnan(row["open_rate_diff"]) and math.isnan(row["ctr_p_value"])
        assert "open_rate not compared: delivered is 0 in control" in row["note"]
        assert not math.isnan(row["conversion_rate_p_value"])
        assert not math.isnan(row["revenue_per_recipient_p_value"])
    assert out.loc["treatment", "conversion_rate_diff"] == pytest.approx(3 / 10 - 1 / 5)


def test_analyze_variants_underpowered_flag() -> None:
    rates = {"control": 0.05, "treatment": 0.05}
    small = analyze_variants(simulate_experiment(2_000, rates, seed=5), metrics=("conversions",))
    row = small.iloc[1]
    assert bool(row["underpowered"]) is True
    assert row["power"] < 0.8
    assert "under-powered" in row["note"] and "per arm needed" in row["note"]

    big = simulate_experiment(20_000, rates, seed=5)
    out = analyze_variants(big, metrics=("conversions",), min_detectable_lift=1.0)
    assert bool(out.iloc[1]["underpowered"]) is False
    assert out.iloc[1]["power"] > 0.99
    assert "under-powered" not in out.iloc[1]["note"]


def test_analyze_variants_by_campaign() -> None:
    rates = {"control": 0.05, "treatment": 0.07}
    first = simulate_experiment(3_000, rates, seed=1).assign(campaign_id="spring")
    second = simulate_experiment(2_000, rates, seed=2).assign(campaign_id="autumn")
    frame = pd.concat([first, second], ignore_index=True)
    out = analyze_variants(frame, by="campaign_id", metrics=("conversions", "revenue"))
    assert out.columns[0] == "campaign_id"
    assert out[["campaign_id", "variant"]].values.tolist() == [
        ["autumn", "control"],
        ["autumn", "treatment"],
        ["spring", "control"],
        ["spring", "treatment"],
    ]
    alone = analyze_variants(first, metrics=("conversions", "revenue"))
    assert out.iloc[3]["conversion_rate_p_value"] == pytest.approx(
        alone.iloc[1]["conversion_rate_p_value"]
    )

    broken = frame[~((frame.campaign_id == "autumn") & (frame.variant == "control"))]
    with pytest.raises(ValueError, match="autumn.*control arm 'control' not found"):
        analyze_variants(broken, by="campaign_id", metrics=("conversions",))


# --------------------------------------------------------------------------- edge cases


def test_zero_conversions_give_finite_results_with_notes() -> None:
    # Treatment has no conversions at all.
    res = two_proportion_test(30, 1_000, 0, 1_000)
    assert all(math.isfinite(v) for v in (res.z, res.p_value, res.ci_low, res.ci_high))
    assert res.relative_lift == pytest.approx(-1.0)
    assert res.lift_ci_low is None and res.lift_ci_high is None
    assert any("treatment rate is 0" in n for n in res.notes)
    assert -1.0 <= res.ci_low < res.ci_high < 0

    # Neither arm converts: p = 1 by convention (scipy raises here), interval still finite.
    none = two_proportion_test(0, 500, 0, 400)
    assert (none.z, none.p_value, none.difference) == (0.0, 1.0, 0.0)
    assert none.relative_lift is None
    assert none.ci_low < 0 < none.ci_high
    assert any("no variation" in n for n in none.notes)
    assert any("control rate is 0" in n for n in none.notes)


def test_zero_units_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="n_a > 0 and n_b > 0"):
        two_proportion_test(0, 0, 1, 10)
    with pytest.raises(ValueError, match="cannot exceed"):
        two_proportion_test(11, 10, 1, 10)
    with pytest.raises(ValueError, match="non-negative integer"):
        two_proportion_test(-1, 10, 1, 10)
    with pytest.raises(ValueError, match="non-negative integer"):
        two_proportion_test(float("nan"), 10, 1, 10)
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="at least 2 values"):
        welch_t_test([], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        welch_t_test([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="alpha"):
        two_proportion_test(1, 10, 1, 10, alpha=0)
    empty = _hand_frame().iloc[0:0]
    with pytest.raises(ValueError, match="no rows"):
        analyze_variants(empty)
    with pytest.raises(ValueError, match="n > 0"):
        simulate_experiment(0, {"control": 0.1})


def test_all_zero_revenue_is_finite() -> None:
    res = welch_t_test(np.zeros(100), np.zeros(80))
    assert (res.t, res.p_value, res.difference, res.ci_low, res.ci_high) == (0, 1, 0, 0, 0)
    assert res.relative_lift is None
    assert any("no variance" in n for n in res.notes)

    # Only one arm has revenue: the variance of the other is 0, the test is still well defined.
    one_sided = welch_t_test(np.zeros(100), np.r_[np.zeros(78), 10.0, 20.0])
    ref = sps.ttest_ind(np.r_[np.zeros(78), 10.0, 20.0], np.zeros(100), equal_var=False)
    assert one_sided.p_value == pytest.approx(ref.pvalue)

    frame = simulate_experiment(1_000, {"control": 0.0, "treatment": 0.0}, seed=0)
    out = analyze_variants(frame)
    row = out.iloc[1]
    assert row["revenue_per_recipient_p_value"] == 1.0
    assert row["conversion_rate_p_value"] == 1.0
    assert "no variance" in row["note"]
    assert "relative lift undefined" in row["note"]
    assert bool(row["underpowered"]) is True  # a relative lift on a 0 baseline is undetectable


def test_analyze_variants_never_leaves_unexplained_nan() -> None:
    frame = _hand_frame()
    # A one-recipient arm (no Welch test possible) and a zero-conversion arm.
    frame = pd.concat(
        [
            frame,
            pd.DataFrame(
                {
                    "variant": ["tiny"] + ["dud"] * 6,
                    "sent": 1,
                    "delivered": 1,
                    "opened": 0,
                    "clicked": 0,
                    "converted": 0,
                    "revenue": 0.0,
                }
            ),
        ],
        ignore_index=True,
    )
    for control in ("control", "holdout"):
        out = analyze_variants(frame, control=control)
        for _, row in out[~out["is_control"]].iterrows():
            columns = [f"{rate}_{s}" for rate in RATE_COLUMNS for s in COMPARISON_SUFFIXES]
            columns += [f"{rate}_lift_ci_low" for rate in RATE_COLUMNS] + ["power"]
            if row[columns].isna().any():
                assert row["note"], (control, row["variant"])
            numeric = row[columns].astype(float)
            assert not np.isinf(numeric).any()
    tiny = analyze_variants(frame).set_index("variant").loc["tiny"]
    assert "revenue_per_recipient not compared: welch_t_test needs at least 2" in tiny["note"]
    assert not math.isnan(tiny["conversion_rate_p_value"])


def test_analyze_variants_rejects_inconsistent_input() -> None:
    frame = _hand_frame()
    with pytest.raises(ValueError, match="missing columns"):
        analyze_variants(frame.drop(columns="clicked"))
    # ... unless clicks are not requested.
    analyze_variants(frame.drop(columns="clicked"), metrics=("opens", "conversions"))
    with pytest.raises(ValueError, match="unknown metrics"):
        analyze_variants(frame, metrics=("bounces",))
    bad = frame.copy()
    bad.loc[0, "delivered"] = 0  # row 0 was opened
    with pytest.raises(ValueError, match="opened=1 but delivered=0"):
        analyze_variants(bad)
    bad = frame.copy()
    bad.loc[1, "converted"] = 2
    with pytest.raises(ValueError, match="must be 0/1"):
        analyze_variants(bad)
    bad = frame.copy()
    bad.loc[1, "revenue"] = np.nan
    with pytest.raises(ValueError, match="'revenue' has missing"):
        analyze_variants(bad)
    with pytest.raises(ValueError, match="control arm 'ctrl' not found"):
        analyze_variants(frame, control="ctrl")
    with pytest.raises(ValueError, match="power_metric"):
        analyze_variants(frame, power_metric="revenue")
