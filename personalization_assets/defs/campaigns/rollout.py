"""A/B test-then-winner rollout: send the variants to a test share, then the winner to the rest.

Pure logic (numpy / pandas and ``measurement.stats``, no Dagster).

1. :func:`split_audience` puts each recipient in the ``test`` or the ``remainder`` phase from
   ``md5('rollout:' || campaign_id || ':' || customer_id)``, the same bucket construction as
   ``decisions.bucket_sql`` but a different key, so the phase is independent of the variant
   bucket. A recipient's phase never changes between reruns and backfills, and a larger
   ``test_fraction`` only moves recipients from remainder into test.
2. :func:`decide_winner` waits until ``test_started + wait``; then compares the leading variant
   (best point estimate of the configured metric) with every other variant, adjusts the
   p-values with Holm, and declares the leader the winner only if every comparison is
   significant. Otherwise the configured default wins (reason ``not_significant``), as it does
   when a variant has fewer than ``min_recipients_per_variant`` recipients or, for rate metrics,
   fewer than ``min_responses_per_variant`` responses (reason ``too_few_responses``).
3. An existing :class:`RolloutDecision` is returned unchanged: the decision is made once, and a
   rerun after it can neither re-decide nor change the winner.
4. :func:`remainder_variants` gives every remainder recipient the winner, so each recipient is
   in exactly one phase and gets at most one email of the campaign.

Metrics (one row per test recipient, as ``measurement.stats.analyze_variants`` takes them):
``open_rate`` = opened / delivered, ``click_rate`` = clicked / delivered, ``conversion_rate`` =
converted / recipients (two-proportion z test); ``revenue_per_recipient`` = mean revenue over
recipients, zeros included (Welch t test).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from personalization_assets.defs.measurement import stats

Metric = Literal["open_rate", "click_rate", "conversion_rate", "revenue_per_recipient"]
Phase = Literal["test", "remainder"]
_RATE_COLUMNS: dict[str, tuple[str, str | None]] = {
    "open_rate": ("opened", "delivered"),
    "click_rate": ("clicked", "delivered"),
    "conversion_rate": ("converted", None),
}
_BUCKETS = 1_000_000


class RolloutSpec(BaseModel):
    """A campaign's test-then-winner settings (the ``rollout:`` block of a campaign)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_fraction: float = Field(0.2, gt=0, lt=1)
    wait_hours: float = Field(24.0, gt=0)
    metric: Metric = "click_rate"
    default_variant: str
    alpha: float = Field(0.05, gt=0, lt=1)
    min_recipients_per_variant: int = Field(100, ge=2)
    min_responses_per_variant: int = Field(5, ge=0)

    @property
    def wait(self) -> timedelta:
        return timedelta(hours=self.wait_hours)


@dataclass(frozen=True)
class RolloutDecision:
    """The recorded outcome of a test phase (stored as JSON; shown in the UI)."""

    campaign_id: str
    winner: str
    reason: Literal["significant", "not_significant", "too_few_responses"]
    metric: str
    test_started: str
    decided_at: str
    alpha: float
    estimates: dict[str, float]
    recipients: dict[str, int]
    responses: dict[str, float]
    p_values: dict[str, float] = field(default_factory=dict)
    adjusted_p_values: dict[str, float] = field(default_factory=dict)
    leader: str | None = None
    default_variant: str | None = None
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutDecision:
        return cls(**json.loads(text))


def rollout_bucket(campaign_id: str, customer_id: str) -> float:
    """Stable number in [0, 1): the Python twin of :func:`rollout_bucket_sql`."""
    digest = hashlib.md5(f"rollout:{campaign_id}:{customer_id}".encode()).digest()
    return (int.from_bytes(digest, "little") % _BUCKETS) / _BUCKETS


def rollout_bucket_sql(campaign_sql: str, customer_sql: str) -> str:
    """DuckDB expression equal to :func:`rollout_bucket` (``md5_number`` is little-endian)."""
    key = f"('rollout:' || {campaign_sql} || ':' || {customer_sql})"
    return f"((md5_number({key}) % {_BUCKETS}) / {float(_BUCKETS)})"


def split_audience(campaign_id: str, customer_ids, test_fraction: float) -> pd.DataFrame:
    """``customer_id``, ``rollout_bucket``, ``phase`` (``test`` when bucket < fraction)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    ids = pd.Series(customer_ids, dtype="string").reset_index(drop=True)
    if ids.isna().any():
        raise ValueError("split_audience got a missing customer_id")
    bucket = np.fromiter((rollout_bucket(campaign_id, c) for c in ids), dtype=float, count=len(ids))
    phase = np.where(bucket < test_fraction, "test", "remainder").astype(object)
    return pd.DataFrame(
        {"customer_id": ids.astype(object), "rollout_bucket": bucket, "phase": phase}
    )


def _iso(moment: datetime) -> str:
    value = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return value.isoformat()


def _estimates(results: pd.DataFrame, metric: str, variants: list[str]):
    """Per variant: estimate, recipients (denominator) and responses (numerator / revenue)."""
    estimates, recipients, responses = {}, {}, {}
    for variant in variants:
        rows = results[results["variant"] == variant]
        if metric == "revenue_per_recipient":
            n, x = len(rows), float(rows["revenue"].sum())
        else:
            num, den = _RATE_COLUMNS[metric]
            n = int(rows[den].sum()) if den else len(rows)
            x = float(rows[num].sum())
        recipients[variant], responses[variant] = n, x
        estimates[variant] = x / n if n else float("nan")
    return estimates, recipients, responses


def _p_value(results: pd.DataFrame, metric: str, leader: str, other: str) -> float:
    a = results[results["variant"] == other]
    b = results[results["variant"] == leader]
    if metric == "revenue_per_recipient":
        return stats.welch_t_test(a["revenue"], b["revenue"]).p_value
    num, den = _RATE_COLUMNS[metric]
    n_a = int(a[den].sum()) if den else len(a)
    n_b = int(b[den].sum()) if den else len(b)
    return stats.two_proportion_test(int(a[num].sum()), n_a, int(b[num].sum()), n_b).p_value


def _validate_results(results: pd.DataFrame, metric: str, spec: RolloutSpec) -> list[str]:
    needed = {"variant"} | (
        {"revenue"}
        if metric == "revenue_per_recipient"
        else {c for c in _RATE_COLUMNS[metric] if c}
    )
    missing = needed - set(results.columns)
    if missing:
        raise ValueError(f"rollout results for metric {metric} lack columns {sorted(missing)}")
    variants = sorted(results["variant"].dropna().astype(str).unique())
    if spec.default_variant not in variants:
        variants.append(spec.default_variant)
    return variants


def decide_winner(
    campaign_id: str,
    results: pd.DataFrame,
    spec: RolloutSpec,
    *,
    test_started: datetime,
    now: datetime,
    existing: RolloutDecision | None = None,
) -> RolloutDecision | None:
    """The rollout decision at ``now``; ``None`` while the test is still running.

    ``results`` has one row per test-phase recipient: ``variant`` plus the metric's columns
    (``opened``/``clicked`` with ``delivered``, ``converted``, or ``revenue``). An ``existing``
    decision is returned as it is (no re-decision on reruns or backfills).
    """
    if existing is not None:
        return existing
    if _as_utc(now) < _as_utc(test_started) + spec.wait:
        return None
    metric = spec.metric
    variants = _validate_results(results, metric, spec)
    estimates, recipients, responses = _estimates(results, metric, variants)
    base = {
        "campaign_id": campaign_id,
        "metric": metric,
        "test_started": _iso(test_started),
        "decided_at": _iso(now),
        "alpha": spec.alpha,
        "estimates": estimates,
        "recipients": recipients,
        "responses": responses,
        "default_variant": spec.default_variant,
    }
    thin = _too_few(recipients, responses, metric, spec)
    if len(variants) < 2 or thin:
        note = thin or "fewer than two variants were tested"
        return RolloutDecision(
            winner=spec.default_variant, reason="too_few_responses", note=note, **base
        )
    leader = max(variants, key=lambda v: (estimates[v], v == spec.default_variant))
    others = [v for v in variants if v != leader]
    p_values = {v: float(_p_value(results, metric, leader, v)) for v in others}
    holm = stats.holm_correction([p_values[v] for v in others], alpha=spec.alpha)
    adjusted = dict(zip(others, holm.adjusted, strict=True))
    beats_all = all(holm.reject) and all(estimates[leader] > estimates[v] for v in others)
    return RolloutDecision(
        winner=leader if beats_all else spec.default_variant,
        reason="significant" if beats_all else "not_significant",
        p_values=p_values,
        adjusted_p_values=adjusted,
        leader=leader,
        note=(
            f"{leader} beats every other variant on {metric} (Holm, alpha {spec.alpha})"
            if beats_all
            else f"{leader} leads on {metric} but not significantly after Holm; "
            f"default {spec.default_variant} is sent"
        ),
        **base,
    )


def _too_few(recipients: dict, responses: dict, metric: str, spec: RolloutSpec) -> str:
    small = [v for v, n in recipients.items() if n < spec.min_recipients_per_variant]
    if small:
        return (
            f"variants {small} have fewer than {spec.min_recipients_per_variant} "
            f"recipients counted for {metric}"
        )
    if metric != "revenue_per_recipient":
        quiet = [v for v, x in responses.items() if x < spec.min_responses_per_variant]
        total = sum(responses.values())
        if total < spec.min_responses_per_variant * len(responses):
            return (
                f"only {total:g} responses in the test phase (variants below "
                f"{spec.min_responses_per_variant}: {quiet})"
            )
    return ""


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def remainder_variants(split: pd.DataFrame, decision: RolloutDecision | None) -> pd.DataFrame:
    """Remainder recipients with the winner as their variant; empty until a decision exists."""
    remainder = split[split["phase"] == "remainder"]
    if decision is None:
        return remainder.iloc[0:0].assign(variant=pd.Series(dtype=object))
    return remainder.assign(variant=decision.winner)


def simulate_test_phase(
    n: int,
    true_rates: dict[str, float],
    metric: Metric,
    seed: int,
) -> pd.DataFrame:
    """A test phase with known per-variant rates of ``metric`` (for tests and the demo).

    Uses ``stats.simulate_experiment``: ``true_rates`` are open, click or conversion rates
    (for ``revenue_per_recipient``, conversion rates with the same order value).
    """
    if metric == "open_rate":
        return stats.simulate_experiment(
            n, dict.fromkeys(true_rates, 0.02), seed=seed, open_rates=true_rates, holdout=()
        )
    if metric == "click_rate":
        return stats.simulate_experiment(
            n, dict.fromkeys(true_rates, 0.02), seed=seed, click_rates=true_rates, holdout=()
        )
    return stats.simulate_experiment(n, true_rates, seed=seed, holdout=())


__all__ = [
    "RolloutDecision",
    "RolloutSpec",
    "decide_winner",
    "remainder_variants",
    "rollout_bucket",
    "rollout_bucket_sql",
    "simulate_test_phase",
    "split_audience",
]
