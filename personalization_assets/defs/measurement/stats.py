"""Statistics for email A/B/n tests that include a holdout group.

Pure logic (numpy / scipy / pandas only, no Dagster), so it can be unit-tested
against ``scipy.stats`` and reused by assets, reports and data generators.

Building blocks
---------------
* :func:`two_proportion_test` compares two rates (opens, clicks, conversions).
  It uses a pooled-SE z test, which is the same as the 2x2 chi-square test
  without Yates correction. The interval for the difference is Newcombe's
  hybrid score interval (the default) or a Wald interval.
* :func:`welch_t_test` compares two means (revenue per recipient, zeros
  included). It uses Welch's unequal-variance t test with Welch-Satterthwaite
  degrees of freedom.
* :func:`holm_correction` and :func:`bonferroni_correction` adjust p-values when
  several variants are each compared with one control.
* :func:`sample_ratio_mismatch` checks whether the assignment split is what was
  intended (chi-square goodness of fit).
* :func:`required_sample_size` and :func:`achieved_power` do power analysis for
  two proportions.
* :func:`analyze_variants` turns a table with one row per recipient into a
  table with one row per variant.
* :func:`simulate_experiment` makes such a table with known true effects.

Conventions
-----------
* A comparison is always *treatment minus control*. ``difference = b - a`` where
  ``a`` is the control. ``relative_lift = difference / a``.
* ``alpha`` is two-sided. Intervals have confidence ``1 - alpha``.
* The pure functions raise :class:`ValueError` on input they cannot handle
  (zero units, counts above ``n``, NaN). When a statistic exists but the usual
  formula breaks down (no variance, control rate of 0), they return a finite,
  conventional value and say so in ``notes``. :func:`analyze_variants` never
  raises for one bad comparison. It writes NaN into that cell and explains it
  in the row's ``note`` column.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd


def _sps():
    """scipy.stats, imported on first use: it costs ~1.5 s, paid by every run's code load."""
    from scipy import stats

    return stats


__all__ = [
    "METRICS",
    "AdjustedPValues",
    "ProportionTest",
    "SampleRatioMismatch",
    "WelchTest",
    "achieved_power",
    "adjust_p_values",
    "analyze_variants",
    "bonferroni_correction",
    "holm_correction",
    "required_sample_size",
    "sample_ratio_mismatch",
    "simulate_experiment",
    "two_proportion_test",
    "welch_t_test",
    "wilson_interval",
]

CiMethod = Literal["newcombe", "wald"]
LiftType = Literal["relative", "absolute"]
Correction = Literal["holm", "bonferroni"]


# --------------------------------------------------------------------------- validation


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    alpha = float(alpha)
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {alpha!r}")
    return alpha


def _count(value: object, name: str) -> int:
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}") from None
    if not math.isfinite(as_float) or as_float < 0 or as_float != int(as_float):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(as_float)


@functools.lru_cache(maxsize=64)
def _z_two_sided(alpha: float) -> float:
    return float(_sps().norm.isf(alpha / 2.0))


# --------------------------------------------------------------------------- proportions


@dataclass(frozen=True)
class ProportionTest:
    """Result of :func:`two_proportion_test` (``a`` = control, ``b`` = treatment).

    ``ci_low``/``ci_high`` bound the *absolute* difference ``rate_b - rate_a``.
    ``lift_ci_low``/``lift_ci_high`` bound the *relative* lift. They use the
    delta method on the log of the rate ratio (Katz). They are ``None`` when
    either rate is 0, and ``relative_lift`` is ``None`` when ``rate_a`` is 0.
    """

    successes_a: int
    n_a: int
    successes_b: int
    n_b: int
    rate_a: float
    rate_b: float
    difference: float
    ci_low: float
    ci_high: float
    relative_lift: float | None
    lift_ci_low: float | None
    lift_ci_high: float | None
    z: float
    p_value: float
    alpha: float
    ci_method: str
    notes: tuple[str, ...] = ()


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for one binomial proportion, without continuity correction.

    This is the same as ``scipy.stats.binomtest(k, n).proportion_ci(1 - alpha, "wilson")``.
    """
    x = _count(successes, "successes")
    n = _count(n, "n")
    alpha = _check_alpha(alpha)
    if n == 0:
        raise ValueError("wilson_interval needs n > 0")
    if x > n:
        raise ValueError(f"successes ({x}) cannot exceed n ({n})")
    z = _z_two_sided(alpha)
    p = x / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_ratio_ci(
    mean_a: float,
    var_a: float,
    n_a: int,
    mean_b: float,
    var_b: float,
    n_b: int,
    alpha: float,
) -> tuple[float | None, float | None]:
    """Delta-method CI for ``mean_b / mean_a - 1``, built on the log scale.

    The log ratio has variance ``var_b / (n_b mean_b^2) + var_a / (n_a mean_a^2)``.
    For proportions with ``var = p (1 - p)`` this is Katz's interval for a risk
    ratio. Returns ``(None, None)`` when either mean is not positive.
    """
    if mean_a <= 0 or mean_b <= 0:
        return None, None
    se = math.sqrt(var_a / (n_a * mean_a**2) + var_b / (n_b * mean_b**2))
    z = _z_two_sided(alpha)
    log_ratio = math.log(mean_b / mean_a)
    return math.exp(log_ratio - z * se) - 1.0, math.exp(log_ratio + z * se) - 1.0


def two_proportion_test(
    success_a: int,
    n_a: int,
    success_b: int,
    n_b: int,
    alpha: float = 0.05,
    *,
    ci_method: CiMethod = "newcombe",
) -> ProportionTest:
    """Compare two independent proportions (``a`` = control, ``b`` = treatment).

    * Difference: ``p_b - p_a``. Relative lift: ``(p_b - p_a) / p_a``.
    * Test: ``z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b))``, where ``p`` is the
      pooled rate ``(x_a + x_b) / (n_a + n_b)``. The two-sided p-value is
      ``2 * (1 - Phi(|z|))``. Because ``z**2`` equals the Pearson chi-square
      statistic of the 2x2 table, the p-value is the same as
      ``scipy.stats.chi2_contingency(table, correction=False)``.
    * Interval for the difference:

      - ``"newcombe"`` (default): Newcombe (1998), method 10, the hybrid score
        interval built from the two Wilson intervals. It stays inside [-1, 1] and
        behaves well with small or zero counts.
      - ``"wald"``: ``d +/- z * sqrt(p_a q_a / n_a + p_b q_b / n_b)``.

    Edge cases: ``n_a == 0`` or ``n_b == 0`` raises ``ValueError``. When both
    rates are 0 (or both are 1), the pooled SE is 0. The result is then
    ``z = 0`` and ``p = 1``, with a note; scipy raises an error for that table.
    """
    xa, na = _count(success_a, "success_a"), _count(n_a, "n_a")
    xb, nb = _count(success_b, "success_b"), _count(n_b, "n_b")
    alpha = _check_alpha(alpha)
    if na == 0 or nb == 0:
        raise ValueError(f"two_proportion_test needs n_a > 0 and n_b > 0, got {na} and {nb}")
    if xa > na or xb > nb:
        raise ValueError(f"successes cannot exceed n: {xa}/{na}, {xb}/{nb}")
    if ci_method not in ("newcombe", "wald"):
        raise ValueError(f"ci_method must be 'newcombe' or 'wald', got {ci_method!r}")

    notes: list[str] = []
    pa, pb = xa / na, xb / nb
    diff = pb - pa
    z_crit = _z_two_sided(alpha)

    pooled = (xa + xb) / (na + nb)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    if se_pooled > 0:
        z = diff / se_pooled
        p_value = float(2.0 * _sps().norm.sf(abs(z)))
    else:
        z, p_value = 0.0, 1.0
        notes.append(
            f"both groups have rate {pa:g}: no variation, so z = 0 and p = 1 by convention"
        )

    if ci_method == "wald":
        se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
        ci_low, ci_high = diff - z_crit * se, diff + z_crit * se
        if se == 0:
            notes.append("Wald interval has zero width (rates of 0 or 1); prefer 'newcombe'")
    else:
        la, ua = wilson_interval(xa, na, alpha)
        lb, ub = wilson_interval(xb, nb, alpha)
        ci_low = diff - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
        ci_high = diff + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)

    if pa > 0:
        relative_lift: float | None = diff / pa
    else:
        relative_lift = None
        notes.append("control rate is 0: relative lift undefined")
    lift_low, lift_high = _log_ratio_ci(pa, pa * (1 - pa), na, pb, pb * (1 - pb), nb, alpha)
    if lift_low is None and pa > 0:
        notes.append("treatment rate is 0: relative-lift interval undefined")

    return ProportionTest(
        successes_a=xa,
        n_a=na,
        successes_b=xb,
        n_b=nb,
        rate_a=pa,
        rate_b=pb,
        difference=diff,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        relative_lift=relative_lift,
        lift_ci_low=lift_low,
        lift_ci_high=lift_high,
        z=float(z),
        p_value=p_value,
        alpha=alpha,
        ci_method=ci_method,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- means


@dataclass(frozen=True)
class WelchTest:
    """Result of :func:`welch_t_test` (``a`` = control, ``b`` = treatment).

    ``ci_low``/``ci_high`` bound ``mean_b - mean_a``. They use the t quantile at
    ``df`` degrees of freedom (Welch-Satterthwaite). ``lift_ci_*`` bound the
    relative lift. They use the delta method on the log of the ratio of means
    with a normal quantile, and are ``None`` unless both means are positive.
    """

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    var_a: float
    var_b: float
    difference: float
    ci_low: float
    ci_high: float
    relative_lift: float | None
    lift_ci_low: float | None
    lift_ci_high: float | None
    t: float
    df: float
    p_value: float
    alpha: float
    notes: tuple[str, ...] = ()


def _welch_from_moments(
    mean_a: float,
    var_a: float,
    n_a: int,
    mean_b: float,
    var_b: float,
    n_b: int,
    alpha: float,
) -> WelchTest:
    if n_a < 2 or n_b < 2:
        raise ValueError(f"welch_t_test needs at least 2 values per group, got {n_a} and {n_b}")
    for name, value in (("mean_a", mean_a), ("mean_b", mean_b), ("var_a", var_a), ("var_b", var_b)):
        if not math.isfinite(value):
            raise ValueError(f"{name} is not finite ({value!r}); remove NaN/inf values first")
    notes: list[str] = []
    diff = mean_b - mean_a
    se2_a, se2_b = var_a / n_a, var_b / n_b
    se2 = se2_a + se2_b
    if se2 > 0:
        se = math.sqrt(se2)
        df = se2**2 / (se2_a**2 / (n_a - 1) + se2_b**2 / (n_b - 1))
        t = diff / se
        p_value = float(2.0 * _sps().t.sf(abs(t), df))
        q = float(_sps().t.isf(alpha / 2.0, df))
        ci_low, ci_high = diff - q * se, diff + q * se
    else:
        df = float(n_a + n_b - 2)
        ci_low = ci_high = diff
        if diff == 0:
            t, p_value = 0.0, 1.0
            notes.append(
                "no variance in either group (e.g. all-zero revenue): t = 0 and p = 1 by convention"
            )
        else:
            t, p_value = math.copysign(math.inf, diff), 0.0
            notes.append("both groups are constant but differ: t is infinite and p = 0")

    if mean_a > 0:
        relative_lift: float | None = diff / mean_a
    else:
        relative_lift = None
        notes.append(f"control mean is {mean_a:g}: relative lift undefined")
    lift_low, lift_high = _log_ratio_ci(mean_a, var_a, n_a, mean_b, var_b, n_b, alpha)
    if lift_low is None and mean_a > 0:
        notes.append(f"treatment mean is {mean_b:g}: relative-lift interval undefined")

    return WelchTest(
        n_a=int(n_a),
        n_b=int(n_b),
        mean_a=float(mean_a),
        mean_b=float(mean_b),
        var_a=float(var_a),
        var_b=float(var_b),
        difference=float(diff),
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        relative_lift=relative_lift,
        lift_ci_low=lift_low,
        lift_ci_high=lift_high,
        t=float(t),
        df=float(df),
        p_value=p_value,
        alpha=alpha,
        notes=tuple(notes),
    )


def welch_t_test(
    values_a: Sequence[float] | np.ndarray | pd.Series,
    values_b: Sequence[float] | np.ndarray | pd.Series,
    alpha: float = 0.05,
) -> WelchTest:
    """Welch's unequal-variance t test for ``mean(b) - mean(a)``.

    ``values_*`` hold one value per recipient, zeros included. For revenue per
    recipient, non-buyers count as 0. The test uses
    ``se = sqrt(s_a^2/n_a + s_b^2/n_b)`` and the Welch-Satterthwaite degrees of
    freedom ``df = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))``. The
    statistic, p-value, ``df`` and interval are the same as
    ``scipy.stats.ttest_ind(values_b, values_a, equal_var=False)`` and its
    ``confidence_interval(1 - alpha)``.

    Fewer than 2 values in a group, or a NaN/inf value, raises ``ValueError``.
    If both groups have zero variance (for example all-zero revenue), the result
    is ``t = 0`` and ``p = 1`` (or ``t = +/-inf`` and ``p = 0`` if the constants
    differ), with a note. scipy returns NaN in that case.
    """
    alpha = _check_alpha(alpha)
    a = np.asarray(values_a, dtype=float).ravel()
    b = np.asarray(values_b, dtype=float).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("welch_t_test got NaN or infinite values; fill or drop them first")
    if a.size < 2 or b.size < 2:
        raise ValueError(
            f"welch_t_test needs at least 2 values per group, got {a.size} and {b.size}"
        )
    return _welch_from_moments(
        float(a.mean()),
        float(a.var(ddof=1)),
        int(a.size),
        float(b.mean()),
        float(b.var(ddof=1)),
        int(b.size),
        alpha,
    )


# --------------------------------------------------------------------------- multiplicity


@dataclass(frozen=True)
class AdjustedPValues:
    """Adjusted p-values, in the same order as the input p-values."""

    method: str
    alpha: float
    p_values: tuple[float, ...]
    adjusted: tuple[float, ...]
    reject: tuple[bool, ...]


def _clean_p_values(p_values: Iterable[float]) -> np.ndarray:
    p = np.asarray(list(p_values), dtype=float)
    if p.ndim != 1:
        raise ValueError("p_values must be a flat sequence")
    if np.isnan(p).any():
        raise ValueError("p_values contain NaN; drop comparisons that could not be made first")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p_values must lie in [0, 1]")
    return p


def bonferroni_correction(p_values: Iterable[float], alpha: float = 0.05) -> AdjustedPValues:
    """Bonferroni: ``p_adj_i = min(1, m * p_i)``. Reject ``H_i`` when ``p_adj_i <= alpha``."""
    alpha = _check_alpha(alpha)
    p = _clean_p_values(p_values)
    adjusted = np.minimum(1.0, p * p.size)
    return AdjustedPValues(
        method="bonferroni",
        alpha=alpha,
        p_values=tuple(float(v) for v in p),
        adjusted=tuple(float(v) for v in adjusted),
        reject=tuple(bool(v <= alpha) for v in adjusted),
    )


def holm_correction(p_values: Iterable[float], alpha: float = 0.05) -> AdjustedPValues:
    """Holm (1979) step-down adjustment. It controls the family-wise error rate at ``alpha``.

    Sort the ``m`` p-values in ascending order: ``p_(1) <= ... <= p_(m)``. Then
    ``p_adj_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))``. The adjusted values
    are returned in input order. Reject ``H_i`` when ``p_adj_i <= alpha``. This
    gives the same decisions as the sequential procedure: stop at the first
    ``p_(i) > alpha / (m - i + 1)``. Holm is never less powerful than Bonferroni.
    """
    alpha = _check_alpha(alpha)
    p = _clean_p_values(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    stepped = np.minimum(1.0, np.maximum.accumulate(scaled)) if m else scaled
    adjusted = np.empty(m, dtype=float)
    adjusted[order] = stepped
    return AdjustedPValues(
        method="holm",
        alpha=alpha,
        p_values=tuple(float(v) for v in p),
        adjusted=tuple(float(v) for v in adjusted),
        reject=tuple(bool(v <= alpha) for v in adjusted),
    )


def adjust_p_values(
    p_values: Iterable[float], method: Correction = "holm", alpha: float = 0.05
) -> AdjustedPValues:
    """Apply :func:`holm_correction` or :func:`bonferroni_correction`, chosen by ``method``."""
    if method == "holm":
        return holm_correction(p_values, alpha)
    if method == "bonferroni":
        return bonferroni_correction(p_values, alpha)
    raise ValueError(f"method must be 'holm' or 'bonferroni', got {method!r}")


# --------------------------------------------------------------------------- sample ratio


@dataclass(frozen=True)
class SampleRatioMismatch:
    """Result of :func:`sample_ratio_mismatch`. ``expected`` holds counts, not weights."""

    statistic: float
    df: int
    p_value: float
    alpha: float
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]
    observed_share: dict[str, float]
    expected_share: dict[str, float]


def sample_ratio_mismatch(
    observed_counts: Mapping[str, int],
    expected_weights: Mapping[str, float],
    alpha: float = 0.001,
) -> SampleRatioMismatch:
    """Chi-square goodness-of-fit test of the assignment split (sample ratio mismatch).

    ``expected_weights`` are relative; they are scaled to sum to 1. The expected
    count of arm ``k`` is ``N * w_k``. The test uses
    ``X^2 = sum_k (O_k - E_k)^2 / E_k`` with ``K - 1`` degrees of freedom, the
    same as ``scipy.stats.chisquare(observed, expected)``. ``mismatch`` is
    ``p_value < alpha``. The default ``alpha`` of 0.001 is strict on purpose:
    the check runs on every experiment, and a true SRM usually gives a tiny
    p-value.

    An arm that is in ``expected_weights`` but missing from ``observed_counts``
    counts as 0 units. An arm that is observed but not expected, fewer than 2
    arms, a weight that is not positive, or a total of 0 units raises
    ``ValueError``.
    """
    alpha = _check_alpha(alpha)
    unknown = set(observed_counts) - set(expected_weights)
    if unknown:
        raise ValueError(f"observed arms without an expected weight: {sorted(map(str, unknown))}")
    if len(expected_weights) < 2:
        raise ValueError("sample_ratio_mismatch needs at least 2 arms")
    arms = list(expected_weights)
    weights = np.array([float(expected_weights[k]) for k in arms])
    if not np.isfinite(weights).all() or (weights <= 0).any():
        raise ValueError(
            f"expected weights must be positive and finite, got {dict(expected_weights)}"
        )
    observed = np.array([_count(observed_counts.get(k, 0), f"count[{k}]") for k in arms])
    total = int(observed.sum())
    if total == 0:
        raise ValueError("sample_ratio_mismatch needs at least one assigned unit")
    shares = weights / weights.sum()
    expected = total * shares
    statistic = float(((observed - expected) ** 2 / expected).sum())
    df = len(arms) - 1
    p_value = float(_sps().chi2.sf(statistic, df))
    return SampleRatioMismatch(
        statistic=statistic,
        df=df,
        p_value=p_value,
        alpha=alpha,
        mismatch=p_value < alpha,
        observed={k: int(o) for k, o in zip(arms, observed, strict=True)},
        expected={k: float(e) for k, e in zip(arms, expected, strict=True)},
        observed_share={k: float(o / total) for k, o in zip(arms, observed, strict=True)},
        expected_share={k: float(s) for k, s in zip(arms, shares, strict=True)},
    )


# --------------------------------------------------------------------------- power


def _treatment_rate(p_baseline: float, min_detectable_lift: float, lift_type: LiftType) -> float:
    p1 = float(p_baseline)
    if not (0.0 < p1 < 1.0):
        raise ValueError(f"p_baseline must be strictly between 0 and 1, got {p_baseline!r}")
    lift = float(min_detectable_lift)
    if not math.isfinite(lift) or lift == 0:
        raise ValueError(f"min_detectable_lift must be finite and non-zero, got {lift!r}")
    if lift_type == "relative":
        p2 = p1 * (1.0 + lift)
    elif lift_type == "absolute":
        p2 = p1 + lift
    else:
        raise ValueError(f"lift_type must be 'relative' or 'absolute', got {lift_type!r}")
    if not (0.0 < p2 < 1.0):
        raise ValueError(
            f"treatment rate {p2:g} ({lift_type} lift {lift:g} on {p1:g}) is outside (0, 1)"
        )
    return p2


def required_sample_size(
    p_baseline: float,
    min_detectable_lift: float,
    *,
    lift_type: LiftType = "relative",
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Recipients needed *per arm* (equal allocation) to detect a change between two proportions.

    ``min_detectable_lift`` is **relative** by default: 0.10 means
    ``p2 = p1 * 1.10``. With ``lift_type="absolute"`` it is a difference in
    rates: 0.02 means ``p2 = p1 + 0.02``.

    Formula: Fleiss, Levin & Paik, *Statistical Methods for Rates and
    Proportions* (3rd ed., 2003), eq. 4.14, without continuity correction. It is
    a two-sided test at level ``alpha``, with the pooled variance under H0 (as in
    :func:`two_proportion_test`) and the unpooled variance under H1::

        n = ( z_{1-alpha/2} * sqrt(2 * pbar * (1 - pbar))
              + z_{power}   * sqrt(p1 (1 - p1) + p2 (1 - p2)) )^2 / (p2 - p1)^2,
        pbar = (p1 + p2) / 2

    The result is rounded up. Worked example: ``p1 = 0.10`` and ``p2 = 0.12``
    (a relative lift of 0.20, or an absolute lift of 0.02), ``alpha = 0.05``,
    ``power = 0.8``. Then ``pbar = 0.11``, and
    ``(1.959964 * 0.442493 + 0.841621 * 0.442267)^2 / 0.0004 = 3840.8``, so the
    answer is **3841** per arm. This matches Evan Miller's online calculator.
    """
    alpha = _check_alpha(alpha)
    power = _check_alpha(power, "power")
    p1 = float(p_baseline)
    p2 = _treatment_rate(p1, min_detectable_lift, lift_type)
    pbar = (p1 + p2) / 2.0
    z_a = _z_two_sided(alpha)
    z_b = float(_sps().norm.ppf(power))
    numerator = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    n = numerator**2 / (p2 - p1) ** 2
    # Guard against float error turning an exact integer into one more unit.
    return int(math.ceil(n - 1e-9))


def achieved_power(
    p_baseline: float,
    min_detectable_lift: float,
    n_control: int,
    n_treatment: int | None = None,
    *,
    lift_type: LiftType = "relative",
    alpha: float = 0.05,
) -> float:
    """Power of the two-sided pooled z test to detect ``min_detectable_lift`` at these sizes.

    This inverts :func:`required_sample_size` (same lift convention, same
    Fleiss normal approximation) and allows unequal arms, as with a small
    holdout. ``n_treatment`` defaults to ``n_control``. With ``d = p2 - p1``::

        pbar = (n_c p1 + n_t p2) / (n_c + n_t)
        se0  = sqrt(pbar (1 - pbar) (1/n_c + 1/n_t))       # under H0
        se1  = sqrt(p1 (1 - p1)/n_c + p2 (1 - p2)/n_t)     # under H1
        power = Phi((|d| - z se0) / se1) + Phi((-|d| - z se0) / se1)

    This is *design* power for a stated minimum effect. It is not "observed
    power" computed from the measured effect, which tells you nothing new.
    """
    alpha = _check_alpha(alpha)
    n_c = _count(n_control, "n_control")
    n_t = n_c if n_treatment is None else _count(n_treatment, "n_treatment")
    if n_c == 0 or n_t == 0:
        raise ValueError(f"achieved_power needs positive group sizes, got {n_c} and {n_t}")
    p1 = float(p_baseline)
    p2 = _treatment_rate(p1, min_detectable_lift, lift_type)
    delta = abs(p2 - p1)
    pbar = (n_c * p1 + n_t * p2) / (n_c + n_t)
    se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_c + 1 / n_t))
    se1 = math.sqrt(p1 * (1 - p1) / n_c + p2 * (1 - p2) / n_t)
    z = _z_two_sided(alpha)
    return float(
        _sps().norm.cdf((delta - z * se0) / se1) + _sps().norm.cdf((-delta - z * se0) / se1)
    )


# --------------------------------------------------------------------------- per-variant table


@dataclass(frozen=True)
class _Metric:
    count: str  # output count column
    source: str  # input column, one row per recipient
    rate: str  # output rate column
    denominator: str  # output count column used as the denominator
    kind: Literal["proportion", "mean"]


METRICS: dict[str, _Metric] = {
    "opens": _Metric("opens", "opened", "open_rate", "delivered", "proportion"),
    "clicks": _Metric("clicks", "clicked", "ctr", "delivered", "proportion"),
    "conversions": _Metric(
        "conversions", "converted", "conversion_rate", "recipients", "proportion"
    ),
    "revenue": _Metric("revenue", "revenue", "revenue_per_recipient", "recipients", "mean"),
}
"""Metric name -> (count column, input column, rate column, denominator, kind)."""

_BINARY_INPUTS = ("sent", "delivered", "opened", "clicked", "converted")


def _validate_frame(frame: pd.DataFrame, variant_column: str, metrics: Sequence[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    needed = [variant_column, "sent", "delivered", *(METRICS[m].source for m in metrics)]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame is missing columns {missing}")
    if frame.empty:
        raise ValueError("frame has no rows (n = 0): nothing to analyse")
    if frame[variant_column].isna().any():
        raise ValueError(f"{variant_column!r} has missing values; every recipient needs an arm")
    for column in dict.fromkeys(needed[1:]):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any():
            raise ValueError(f"column {column!r} has missing or non-numeric values")
        if column in _BINARY_INPUTS and not values.isin([0, 1]).all():
            raise ValueError(f"column {column!r} must be 0/1")
        if column == "revenue" and not np.isfinite(values.to_numpy(dtype=float)).all():
            raise ValueError("column 'revenue' has infinite values")
    for column in ("opened", "clicked"):
        if column in frame.columns and column in needed:
            bad = int(((frame[column] == 1) & (frame["delivered"] == 0)).sum())
            if bad:
                raise ValueError(f"{bad} rows have {column}=1 but delivered=0")
    bad = int(((frame["delivered"] == 1) & (frame["sent"] == 0)).sum())
    if bad:
        raise ValueError(f"{bad} rows have delivered=1 but sent=0")


def analyze_variants(
    frame: pd.DataFrame,
    *,
    variant_column: str = "variant",
    control: str = "control",
    metrics: Sequence[str] = ("opens", "clicks", "conversions", "revenue"),
    alpha: float = 0.05,
    correction: Correction = "holm",
    ci_method: CiMethod = "newcombe",
    power_metric: str = "conversions",
    min_detectable_lift: float = 0.10,
    power: float = 0.8,
    expected_weights: Mapping[str, float] | None = None,
    srm_alpha: float = 0.001,
    by: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Compare every variant with ``control``. Returns one row per variant (control first).

    Input: one row per *assigned recipient*, with these columns:
    ``variant_column``, ``sent``, ``delivered`` (0/1), plus the input column of
    each requested metric: ``opened``, ``clicked`` and ``converted`` (0/1),
    and ``revenue`` (float, 0 for non-buyers, refunds may be negative). Rows must
    satisfy ``delivered <= sent``, ``opened <= delivered`` and
    ``clicked <= delivered``. A click without a recorded open is allowed, since
    image blocking hides opens.

    ``control`` is the reference arm. It can be the regular control email or the
    no-send *holdout*.

    Denominators, chosen so that each rate means one thing:

    ========================= ================================ ============================
    column                    definition                       comparable with a holdout?
    ========================= ================================ ============================
    ``recipients``            rows (units assigned to the arm) yes
    ``sends``                 ``sum(sent)``                    --
    ``delivered``             ``sum(delivered)``               --
    ``open_rate``             ``opens / delivered``            no (NaN: nothing delivered)
    ``ctr``                   ``clicks / delivered``           no (NaN: nothing delivered)
    ``conversion_rate``       ``conversions / recipients``     yes (intent-to-treat)
    ``revenue_per_recipient`` ``sum(revenue) / recipients``    yes (intent-to-treat)
    ========================= ================================ ============================

    A holdout receives no email, so its open rate and CTR are undefined (NaN,
    with a note). If the holdout is the ``control``, opens and clicks are not
    compared at all. Conversions and revenue use *all assigned recipients*, not
    the delivered ones. Filtering to delivered recipients would compare
    different populations and bias the lift against the holdout.

    For each requested rate column ``R`` (``open_rate``, ``ctr``,
    ``conversion_rate``, ``revenue_per_recipient``), the output has:

    * ``R_diff``, ``R_diff_ci_low``, ``R_diff_ci_high``: the absolute difference
      from control and its ``1 - alpha`` interval.
    * ``R_lift``, ``R_lift_ci_low``, ``R_lift_ci_high``: the relative lift
      (``diff / control``) and its delta-method interval.
    * ``R_p_value``: from the z test (:func:`two_proportion_test`) for rates, and
      from Welch's t test (:func:`welch_t_test`) for revenue.
    * ``R_p_adjusted`` and ``R_significant``: adjusted across the variants
      compared *within this metric* (Holm by default), and whether
      ``p_adjusted <= alpha``. Metrics are not adjusted jointly. Pick one
      primary metric before looking at the results.

    ``power`` is the design power of the z test on ``power_metric`` to detect a
    relative lift of ``min_detectable_lift`` from the control's observed rate.
    It uses the actual arm sizes (see :func:`achieved_power`). ``underpowered``
    is true when that power is below the target ``power``, and the ``note``
    column then gives roughly how many recipients per arm would be needed. The
    control row has NA in every comparison column.

    If ``expected_weights`` (arm -> planned share) is given, a sample-ratio check
    runs on ``recipients``. ``srm_p_value`` and ``srm_mismatch`` are repeated on
    every row, and a mismatch adds a warning to each row's note.

    ``by`` (a column or list of columns, e.g. ``"campaign_id"``) runs the
    analysis separately for each group and puts the results one after another,
    with the group columns first. Every group must contain ``control``.
    """
    metrics = list(dict.fromkeys(metrics))
    _validate_frame(frame, variant_column, metrics)
    alpha = _check_alpha(alpha)
    _check_alpha(power, "power")
    srm_alpha = _check_alpha(srm_alpha, "srm_alpha")
    if ci_method not in ("newcombe", "wald"):
        raise ValueError(f"ci_method must be 'newcombe' or 'wald', got {ci_method!r}")
    if correction not in ("holm", "bonferroni"):
        raise ValueError(f"correction must be 'holm' or 'bonferroni', got {correction!r}")
    if power_metric not in METRICS or METRICS[power_metric].kind != "proportion":
        raise ValueError(
            f"power_metric must be one of opens/clicks/conversions, not {power_metric}"
        )
    if power_metric not in metrics:
        raise ValueError(f"power_metric {power_metric!r} must be one of the requested metrics")
    if not (math.isfinite(min_detectable_lift) and min_detectable_lift > 0):
        raise ValueError("min_detectable_lift (relative) must be positive")

    options = dict(
        variant_column=variant_column,
        control=control,
        metrics=metrics,
        alpha=alpha,
        correction=correction,
        ci_method=ci_method,
        power_metric=power_metric,
        min_detectable_lift=float(min_detectable_lift),
        power=float(power),
        expected_weights=expected_weights,
        srm_alpha=srm_alpha,
    )
    if by is None:
        return _analyze_one(frame, **options)  # type: ignore[arg-type]

    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ValueError(f"frame is missing group columns {missing}")
    parts = []
    for key, group in frame.groupby(keys, sort=True, dropna=False):
        key_values = key if isinstance(key, tuple) else (key,)
        try:
            part = _analyze_one(group, **options)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"group {dict(zip(keys, key_values, strict=True))}: {exc}") from exc
        for position, (name, value) in enumerate(zip(keys, key_values, strict=True)):
            part.insert(position, name, value)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _analyze_one(
    frame: pd.DataFrame,
    *,
    variant_column: str,
    control: str,
    metrics: list[str],
    alpha: float,
    correction: Correction,
    ci_method: CiMethod,
    power_metric: str,
    min_detectable_lift: float,
    power: float,
    expected_weights: Mapping[str, float] | None,
    srm_alpha: float,
) -> pd.DataFrame:
    grouped = frame.groupby(variant_column, sort=False, observed=True)
    present = list(grouped.groups.keys())
    if control not in present:
        raise ValueError(f"control arm {control!r} not found in {variant_column!r}: {present}")
    variants = [control] + sorted((v for v in present if v != control), key=str)
    k = len(variants)

    # Columns are collected here and turned into a frame once (much faster than setitem).
    data: dict[str, object] = {
        variant_column: variants,
        "is_control": [v == control for v in variants],
        "recipients": grouped.size().reindex(variants).to_numpy().astype("int64"),
        "sends": grouped["sent"].sum().reindex(variants).to_numpy().astype("int64"),
        "delivered": grouped["delivered"].sum().reindex(variants).to_numpy().astype("int64"),
    }
    for name in metrics:
        spec = METRICS[name]
        dtype = float if spec.kind == "mean" else "int64"
        sums = grouped[spec.source].sum().reindex(variants).to_numpy()
        data[spec.count] = sums.astype(dtype)
    if "revenue" in metrics:
        revenue_var = grouped["revenue"].var(ddof=1).reindex(variants).to_numpy(dtype=float)

    notes: list[list[str]] = [[] for _ in variants]
    if any(m in metrics for m in ("opens", "clicks")):
        for i, delivered in enumerate(data["delivered"]):  # type: ignore[arg-type]
            if delivered == 0:
                notes[i].append("nothing delivered (holdout?): open rate and CTR undefined")

    for name in metrics:
        spec = METRICS[name]
        numerators = np.asarray(data[spec.count], dtype=float)
        denominators = np.asarray(data[spec.denominator], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            data[spec.rate] = np.where(denominators > 0, numerators / denominators, np.nan)

        suffixes = ("diff", "diff_ci_low", "diff_ci_high", "lift", "lift_ci_low", "lift_ci_high")
        cols = {suffix: np.full(k, np.nan) for suffix in (*suffixes, "p_value", "p_adjusted")}
        n_c = int(denominators[0])
        for i in range(1, k):
            n_v = int(denominators[i])
            try:
                if spec.kind == "proportion":
                    res: ProportionTest | WelchTest = two_proportion_test(
                        int(numerators[0]),
                        n_c,
                        int(numerators[i]),
                        n_v,
                        alpha,
                        ci_method=ci_method,
                    )
                else:
                    res = _welch_from_moments(
                        numerators[0] / n_c,
                        float(revenue_var[0]),
                        n_c,
                        numerators[i] / n_v,
                        float(revenue_var[i]),
                        n_v,
                        alpha,
                    )
            except ValueError as exc:
                if n_c == 0 or n_v == 0:
                    reason = f"{spec.denominator} is 0 in {'control' if n_c == 0 else 'this arm'}"
                else:
                    reason = str(exc)
                notes[i].append(f"{spec.rate} not compared: {reason}")
                continue
            cols["diff"][i] = res.difference
            cols["diff_ci_low"][i] = res.ci_low
            cols["diff_ci_high"][i] = res.ci_high
            cols["lift"][i] = np.nan if res.relative_lift is None else res.relative_lift
            cols["lift_ci_low"][i] = np.nan if res.lift_ci_low is None else res.lift_ci_low
            cols["lift_ci_high"][i] = np.nan if res.lift_ci_high is None else res.lift_ci_high
            cols["p_value"][i] = res.p_value
            notes[i].extend(f"{spec.rate}: {note}" for note in res.notes)

        tested = np.flatnonzero(~np.isnan(cols["p_value"]))
        significant: list[object] = [pd.NA] * k
        if tested.size:
            adj = adjust_p_values(cols["p_value"][tested], correction, alpha)
            cols["p_adjusted"][tested] = adj.adjusted
            for idx, flag in zip(tested, adj.reject, strict=True):
                significant[idx] = flag
        for suffix, values in cols.items():
            data[f"{spec.rate}_{suffix}"] = values
        data[f"{spec.rate}_significant"] = pd.array(significant, dtype="boolean")

    spec = METRICS[power_metric]
    powers, flags = _power_columns(
        np.asarray(data[spec.rate], dtype=float),
        np.asarray(data[spec.denominator], dtype=int),
        notes,
        spec,
        min_detectable_lift,
        power,
        alpha,
    )
    data["power"] = powers
    data["underpowered"] = flags

    if expected_weights is not None:
        counts = dict(zip(variants, (int(c) for c in data["recipients"]), strict=True))  # type: ignore[arg-type]
        srm = sample_ratio_mismatch(counts, expected_weights, srm_alpha)
        data["srm_p_value"] = np.full(k, srm.p_value)
        data["srm_mismatch"] = np.full(k, srm.mismatch)
        if srm.mismatch:
            observed = ", ".join(f"{a}={s:.3f}" for a, s in srm.observed_share.items())
            planned = ", ".join(f"{a}={s:.3f}" for a, s in srm.expected_share.items())
            warning = (
                f"SAMPLE RATIO MISMATCH (p={srm.p_value:.2g}; observed {observed} vs "
                f"planned {planned}): assignment is suspect, do not trust these results"
            )
            for row in notes:
                row.insert(0, warning)

    out = pd.DataFrame(data)
    out.insert(2, "note", ["; ".join(row) for row in notes])
    return out


def _power_columns(
    rates: np.ndarray,
    denominators: np.ndarray,
    notes: list[list[str]],
    spec: _Metric,
    min_detectable_lift: float,
    target_power: float,
    alpha: float,
) -> tuple[np.ndarray, pd.api.extensions.ExtensionArray]:
    k = len(rates)
    powers = np.full(k, np.nan)
    flags: list[object] = [pd.NA] * k
    baseline = float(rates[0])
    n_c = int(denominators[0])
    for i in range(1, k):
        n_v = int(denominators[i])
        if n_c == 0 or n_v == 0:
            notes[i].append(f"power not assessed: {spec.denominator} is 0 for {spec.rate}")
            continue
        if not (0.0 < baseline < 1.0) or not (0.0 < baseline * (1 + min_detectable_lift) < 1.0):
            flags[i] = True
            notes[i].append(
                f"under-powered: control {spec.rate} is {baseline:g}, so a "
                f"{min_detectable_lift:.0%} relative lift cannot be detected"
            )
            continue
        pw = achieved_power(baseline, min_detectable_lift, n_c, n_v, alpha=alpha)
        powers[i] = pw
        flags[i] = pw < target_power
        if pw < target_power:
            needed = required_sample_size(
                baseline, min_detectable_lift, alpha=alpha, power=target_power
            )
            notes[i].append(
                f"under-powered: {pw:.0%} power to detect a {min_detectable_lift:.0%} relative "
                f"lift in {spec.rate} (control {baseline:.2%}, n={n_c} vs {n_v}); about "
                f"{needed} per arm needed for {target_power:.0%}"
            )
    return powers, pd.array(flags, dtype="boolean")


# --------------------------------------------------------------------------- simulation


def _per_variant(value: float | Mapping[str, float], variants: Sequence[str], name: str) -> dict:
    if isinstance(value, Mapping):
        missing = [v for v in variants if v not in value]
        if missing:
            raise ValueError(f"{name} is missing variants {missing}")
        result = {v: float(value[v]) for v in variants}
    else:
        result = dict.fromkeys(variants, float(value))
    for v, rate in result.items():
        if not (0.0 <= rate <= 1.0):
            raise ValueError(f"{name}[{v!r}] must be in [0, 1], got {rate}")
    return result


def simulate_experiment(
    n: int,
    true_rates: Mapping[str, float],
    weights: Mapping[str, float] | None = None,
    seed: int | None = 0,
    *,
    holdout: Sequence[str] = ("holdout",),
    delivery_rate: float = 0.98,
    open_rates: float | Mapping[str, float] = 0.25,
    click_rates: float | Mapping[str, float] = 0.03,
    mean_order_value: float | Mapping[str, float] = 60.0,
    order_value_sigma: float = 0.6,
    variant_column: str = "variant",
) -> pd.DataFrame:
    """Simulate one email experiment, one row per assigned recipient, with known effects.

    * Each recipient is assigned at random to an arm, with probabilities
      ``weights`` (relative; equal if ``None``). The arm sizes are therefore
      multinomial, as in a real randomiser.
    * ``true_rates[v]`` is the true **conversion rate per recipient** of arm
      ``v``. It applies whether or not the email was delivered (intent-to-treat),
      so the true difference is ``true_rates[b] - true_rates[a]``.
    * Arms listed in ``holdout`` are sent nothing: ``sent = delivered = opened =
      clicked = 0``. Other arms get ``sent = 1``, and ``delivered`` is drawn with
      ``delivery_rate``.
    * ``opened`` and ``clicked`` are drawn independently among delivered
      recipients, with ``open_rates`` and ``click_rates`` (per delivered email;
      a float or a per-arm dict).
    * ``revenue`` is 0 for non-converters. For converters it is lognormal with
      mean ``mean_order_value[v]`` and log-sd ``order_value_sigma``. The true
      revenue per recipient is therefore ``true_rates[v] * mean_order_value[v]``.

    Columns: ``recipient_id``, ``variant_column``, ``sent``, ``delivered``,
    ``opened``, ``clicked``, ``converted`` (int8 0/1), and ``revenue`` (float).
    """
    n = _count(n, "n")
    if n == 0:
        raise ValueError("simulate_experiment needs n > 0")
    variants = list(true_rates)
    if not variants:
        raise ValueError("true_rates must name at least one variant")
    conversion = _per_variant(dict(true_rates), variants, "true_rates")
    opens = _per_variant(open_rates, variants, "open_rates")
    clicks = _per_variant(click_rates, variants, "click_rates")
    delivery = _per_variant(delivery_rate, variants, "delivery_rate")
    if isinstance(mean_order_value, Mapping):
        aov = {v: float(mean_order_value[v]) for v in variants}
    else:
        aov = dict.fromkeys(variants, float(mean_order_value))
    if any(not (a > 0) for a in aov.values()) or not (order_value_sigma >= 0):
        raise ValueError("mean_order_value must be positive and order_value_sigma >= 0")
    if weights is None:
        shares = np.full(len(variants), 1.0 / len(variants))
    else:
        if set(weights) != set(variants):
            raise ValueError("weights and true_rates must name the same variants")
        raw = np.array([float(weights[v]) for v in variants])
        if not np.isfinite(raw).all() or (raw < 0).any() or raw.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        shares = raw / raw.sum()

    rng = np.random.default_rng(seed)
    arm = rng.choice(len(variants), size=n, p=shares)
    is_holdout = np.isin(np.array(variants, dtype=object), list(holdout))[arm]

    def per_row(values: dict[str, float]) -> np.ndarray:
        return np.array([values[v] for v in variants])[arm]

    sent = ~is_holdout
    delivered = sent & (rng.random(n) < per_row(delivery))
    opened = delivered & (rng.random(n) < per_row(opens))
    clicked = delivered & (rng.random(n) < per_row(clicks))
    converted = rng.random(n) < per_row(conversion)
    mu = np.log(per_row(aov)) - order_value_sigma**2 / 2.0
    order_value = rng.lognormal(mean=mu, sigma=order_value_sigma)
    revenue = np.where(converted, np.round(order_value, 2), 0.0)

    return pd.DataFrame(
        {
            "recipient_id": np.arange(n, dtype=np.int64),
            variant_column: np.array(variants, dtype=object)[arm],
            "sent": sent.astype(np.int8),
            "delivered": delivered.astype(np.int8),
            "opened": opened.astype(np.int8),
            "clicked": clicked.astype(np.int8),
            "converted": converted.astype(np.int8),
            "revenue": revenue.astype(float),
        }
    )
