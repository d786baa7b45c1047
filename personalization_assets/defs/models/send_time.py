"""Send-time optimisation: each customer's best local hour from their email opens and clicks.

Pure logic (numpy / scipy / pandas, no Dagster).

Estimator (empirical-Bayes Dirichlet-multinomial, two levels)
    Every open or click is turned into the customer's local hour ``h`` (their zone, with the
    fallbacks of ``campaigns.timing.resolve_zones``) and counted in a 24-bin histogram
    ``x_c`` (weights per event type, default 1). With ``n_c = sum(x_c)``:

    * global distribution ``g = (X + 1) / (N + 24)`` over all events (add-one);
    * segment distribution ``s = (X_seg + b g) / (N_seg + b)`` (``b`` =
      ``segment_prior_strength``) for the customer's RFM segment; ``g`` without one;
    * customer posterior mean ``p_c = (K x_c + a s) / (n_c + a)``, where ``K`` is a circular
      smoothing kernel (weight ``smoothing`` on each neighbouring hour, total kept), so one
      open at 19:xx also counts a little for 18 and 20.

    ``a`` is the Dirichlet prior strength: configured, or (``prior_strength: auto``) fitted by
    maximising the Dirichlet-multinomial marginal likelihood of the customers' raw histograms
    around their segment distributions over a log grid (0.1 .. 1000). A customer with few
    events stays near the segment; one with many follows their own hours. The best hour is
    ``argmax p_c``; ``concentration`` is ``max p_c``. ``source`` is ``customer`` when the
    customer has any event, else ``segment`` (a segment with events) or ``global``.

Evaluation (time split)
    Fit on events before ``cutoff = last event - holdout_days``; for customers with events in
    both periods, score each method by the share of holdout events within
    ``+-hit_window_hours`` (circular) of the predicted hour, averaged per customer, and by the
    mean log-likelihood of the holdout hours. Methods: the model, the customer's segment
    distribution alone, and the single global best hour (the baseline the model must beat).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import gammaln

from personalization_assets.defs.campaigns.timing import is_valid_zone, resolve_zones

HOURS = 24
PRIOR_GRID = np.logspace(-1, 3, 41)
Source = Literal["customer", "segment", "global"]


class SendTimeParams(BaseModel):
    """The ``send_time:`` section of ``config/models.yaml``."""

    model_config = ConfigDict(extra="forbid")

    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"email_open": 1.0, "email_click": 1.0}
    )
    prior_strength: float | Literal["auto"] = "auto"
    segment_prior_strength: float = Field(24.0, gt=0)
    smoothing: float = Field(0.2, ge=0, lt=0.5)
    holdout_days: int = Field(28, ge=1)
    hit_window_hours: int = Field(1, ge=0, le=11)
    min_lift: float = Field(0.0, ge=-1, le=1)
    default_zone: str = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> SendTimeParams:
        if isinstance(self.prior_strength, float) and self.prior_strength <= 0:
            raise ValueError("send_time.prior_strength must be positive or 'auto'")
        bad = {k: v for k, v in self.event_weights.items() if not v > 0}
        if bad or not self.event_weights:
            raise ValueError(f"send_time.event_weights must be positive and non-empty, got {bad}")
        if not is_valid_zone(self.default_zone):
            raise ValueError(f"send_time.default_zone {self.default_zone!r} is not an IANA zone")
        return self


# --------------------------------------------------------------------------- local hours


def _utc_index(timestamps: pd.Series) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(pd.to_datetime(timestamps))
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def local_hours(
    events: pd.DataFrame, customers: pd.DataFrame, default_zone: str = "UTC"
) -> pd.DataFrame:
    """``events`` (``customer_key``, ``event_ts`` UTC) with ``local_hour`` in the customer's zone.

    ``customers`` has ``customer_key``, ``timezone`` and optionally ``country``; invalid,
    missing or unknown zones fall back to the country default, then ``default_zone``.
    Naive timestamps are read as UTC. Converted per zone, so it is vectorised.
    """
    zones = customers[["customer_key"]].reset_index(drop=True)
    zones["zone"] = resolve_zones(
        customers["timezone"], customers.get("country"), default_zone=default_zone
    )["timezone"].to_numpy()
    frame = events.merge(zones, on="customer_key", how="left")
    frame["zone"] = frame["zone"].fillna(default_zone)
    stamps = _utc_index(frame["event_ts"])
    hour = np.zeros(len(frame), dtype=np.int64)
    for zone, rows in frame.groupby("zone", sort=False).indices.items():
        hour[rows] = stamps[rows].tz_convert(zoneinfo.ZoneInfo(zone)).hour
    return frame.drop(columns="zone").assign(local_hour=hour)


def hour_histograms(
    events: pd.DataFrame, customer_keys: np.ndarray, event_weights: dict[str, float]
) -> np.ndarray:
    """(customers x 24) weighted counts of ``local_hour`` per customer, rows in ``customer_keys``."""
    index = pd.Index(customer_keys)
    rows = index.get_indexer(events["customer_key"])
    weight = events["event_type"].map(event_weights).fillna(0.0).to_numpy(dtype=float)
    keep = (rows >= 0) & (weight > 0)
    counts = np.zeros((len(index), HOURS))
    np.add.at(counts, (rows[keep], events["local_hour"].to_numpy()[keep]), weight[keep])
    return counts


def circular_smooth(counts: np.ndarray, weight: float) -> np.ndarray:
    """Spread ``weight`` of each hour's mass to each neighbouring hour (23 wraps to 0)."""
    if weight == 0:
        return counts
    left = np.roll(counts, 1, axis=-1)
    right = np.roll(counts, -1, axis=-1)
    return (1 - 2 * weight) * counts + weight * (left + right)


# --------------------------------------------------------------------------- estimator


def dirichlet_multinomial_loglik(counts: np.ndarray, means: np.ndarray, strength: float) -> float:
    """Sum over rows of log DM(counts | strength * means), without the multinomial constant.

    Empty hours contribute ``lnG(a m) - lnG(a m) = 0``, so only non-zero cells are evaluated.
    """
    rows, cols = np.nonzero(counts)
    return _dm_loglik_sparse(counts.sum(axis=1), counts[rows, cols], means[rows, cols], strength)


def _dm_loglik_sparse(n: np.ndarray, x: np.ndarray, m: np.ndarray, strength: float) -> float:
    alpha = strength * m
    per_row = gammaln(strength) - gammaln(n + strength)
    return float(per_row.sum() + (gammaln(x + alpha) - gammaln(alpha)).sum())


def fit_prior_strength(
    counts: np.ndarray, means: np.ndarray, grid: np.ndarray = PRIOR_GRID
) -> float:
    """The grid value of ``a`` maximising the DM marginal likelihood (customers with >= 2 events).

    Returns the grid's middle value (10) when fewer than 5 customers have 2+ events.
    """
    usable = counts.sum(axis=1) >= 2
    if usable.sum() < 5:
        return float(grid[len(grid) // 2])
    c, m = counts[usable], np.clip(means[usable], 1e-9, None)
    rows, cols = np.nonzero(c)
    n, x, mm = c.sum(axis=1), c[rows, cols], m[rows, cols]
    scores = [_dm_loglik_sparse(n, x, mm, float(a)) for a in grid]
    return float(grid[int(np.argmax(scores))])


@dataclass(frozen=True)
class HourPreferences:
    """Per-customer posterior hour distributions and the priors behind them."""

    customer_keys: np.ndarray
    probabilities: np.ndarray  # customers x 24
    n_events: np.ndarray
    source: np.ndarray
    prior_strength: float
    global_distribution: np.ndarray
    segment_distributions: dict[str, np.ndarray]
    segment_prior: np.ndarray  # customers x 24: the prior each customer was shrunk towards

    @property
    def best_local_hour(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def concentration(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def global_best_hour(self) -> int:
        return int(self.global_distribution.argmax())

    def frame(self) -> pd.DataFrame:
        """One row per customer: the columns of ``models.send_time_preferences``."""
        return pd.DataFrame(
            {
                "customer_key": self.customer_keys,
                "best_local_hour": self.best_local_hour.astype(np.int32),
                "n_events": self.n_events,
                "source": self.source,
                "concentration": self.concentration,
                "hour_probabilities": np.round(self.probabilities, 5).tolist(),
            }
        )


def estimate_preferences(
    counts: np.ndarray,
    customer_keys: np.ndarray,
    segments: np.ndarray | None,
    params: SendTimeParams,
) -> HourPreferences:
    """Shrink each customer's hour histogram to their segment's, then the global distribution."""
    n = counts.sum(axis=1)
    total = counts.sum(axis=0)
    global_dist = circular_smooth((total + 1.0) / (total.sum() + HOURS), params.smoothing)
    labels = (
        np.full(len(counts), None, dtype=object)
        if segments is None
        else np.asarray(segments, dtype=object)
    )
    labels = np.where(pd.isna(labels), None, labels)
    prior = np.tile(global_dist, (len(counts), 1))
    seg_dists: dict[str, np.ndarray] = {}
    seg_has_events = np.zeros(len(counts), dtype=bool)
    for label in pd.unique(labels[labels != None]):  # noqa: E711 (elementwise on objects)
        members = labels == label
        seg_counts = circular_smooth(counts[members].sum(axis=0), params.smoothing)
        b = params.segment_prior_strength
        dist = (seg_counts + b * global_dist) / (seg_counts.sum() + b)
        seg_dists[str(label)] = dist
        prior[members] = dist
        seg_has_events[members] = seg_counts.sum() > 0
    a = (
        fit_prior_strength(counts, prior)
        if params.prior_strength == "auto"
        else float(params.prior_strength)
    )
    posterior = (circular_smooth(counts, params.smoothing) + a * prior) / (n + a)[:, None]
    source = np.where(n > 0, "customer", np.where(seg_has_events, "segment", "global"))
    return HourPreferences(
        customer_keys=np.asarray(customer_keys, dtype=object),
        probabilities=posterior,
        n_events=n,
        source=source.astype(object),
        prior_strength=a,
        global_distribution=global_dist,
        segment_distributions=seg_dists,
        segment_prior=prior,
    )


def fit_send_times(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    params: SendTimeParams,
) -> HourPreferences:
    """Preferences for every row of ``customers`` (``customer_key``, optional ``segment``).

    ``events`` must already carry ``local_hour`` (see :func:`local_hours`).
    """
    ids = customers["customer_key"].to_numpy(dtype=object)
    counts = hour_histograms(events, ids, params.event_weights)
    segments = customers["segment"].to_numpy(dtype=object) if "segment" in customers else None
    return estimate_preferences(counts, ids, segments, params)


# --------------------------------------------------------------------------- evaluation


def _circular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % HOURS
    return np.minimum(d, HOURS - d)


@dataclass(frozen=True)
class SplitEvaluation:
    """Time-split comparison of the model with the segment and global-hour baselines."""

    cutoff: pd.Timestamp
    customers: int
    holdout_events: int
    table: pd.DataFrame  # one row per method: hit_rate, top_hour_rate, mean_log_likelihood
    prior_strength: float

    def metric(self, method: str, column: str) -> float:
        return float(self.table.loc[self.table["method"] == method, column].iloc[0])

    @property
    def hit_rate_lift(self) -> float:
        """Model hit rate minus the global-best-hour hit rate (absolute)."""
        if self.customers == 0:
            return float("nan")
        return self.metric("model", "hit_rate") - self.metric("global_hour", "hit_rate")

    def beats_global(self, min_lift: float = 0.0) -> bool:
        return bool(self.customers > 0 and self.hit_rate_lift > min_lift)


def evaluate_time_split(
    events: pd.DataFrame,
    customers: pd.DataFrame,
    params: SendTimeParams,
    cutoff: pd.Timestamp | None = None,
) -> SplitEvaluation:
    """Fit before ``cutoff`` (default: last event - ``holdout_days``), score on the rest."""
    stamps = _utc_index(events["event_ts"])
    if cutoff is None:
        cutoff = (stamps.max() if len(stamps) else pd.Timestamp(0, tz="UTC")) - pd.Timedelta(
            days=params.holdout_days
        )
    cutoff = pd.Timestamp(cutoff)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    before = np.asarray(stamps < cutoff)
    weighted = events["event_type"].isin([k for k, v in params.event_weights.items() if v > 0])
    train, test = events[before], events[~before & weighted.to_numpy()]
    fitted = fit_send_times(train, customers, params)
    index = pd.Index(fitted.customer_keys)
    rows = index.get_indexer(test["customer_key"])
    in_train = fitted.n_events > 0
    keep = (rows >= 0) & in_train[np.maximum(rows, 0)]
    rows, hours = rows[keep], test["local_hour"].to_numpy()[keep]
    window = params.hit_window_hours
    predictions = {
        "model": fitted.probabilities,
        "segment": fitted.segment_prior,
        "global_hour": np.tile(fitted.global_distribution, (len(index), 1)),
    }
    records = []
    for method, probs in predictions.items():
        best = probs.argmax(axis=1)[rows]
        frame = pd.DataFrame(
            {
                "row": rows,
                "hit": _circular_distance(best, hours) <= window,
                "top": best == hours,
                "loglik": np.log(probs[rows, hours]),
            }
        )
        per_customer = frame.groupby("row")[["hit", "top", "loglik"]].mean()
        records.append(
            {
                "method": method,
                "hit_rate": float(per_customer["hit"].mean()) if len(frame) else float("nan"),
                "top_hour_rate": float(per_customer["top"].mean()) if len(frame) else float("nan"),
                "mean_log_likelihood": float(per_customer["loglik"].mean())
                if len(frame)
                else float("nan"),
            }
        )
    return SplitEvaluation(
        cutoff=cutoff,
        customers=int(len(np.unique(rows))),
        holdout_events=int(len(rows)),
        table=pd.DataFrame(records),
        prior_strength=fitted.prior_strength,
    )


# --------------------------------------------------------------------------- simulation


SIM_ZONES = ("America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Sydney", "UTC")
SIM_END = pd.Timestamp("2026-10-31", tz="UTC")
SIM_SEGMENT_HOURS = {"Champions": 8, "Loyal": 12, "At Risk": 19, "Hibernating": 21}


def simulate_hour_preferences(
    n_customers: int = 2000,
    *,
    seed: int = 0,
    days: int = 120,
    end: pd.Timestamp = SIM_END,
    mean_events: float = 8.0,
    on_preference: float = 0.7,
    spread_hours: float = 1.2,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Opens and clicks with planted per-customer preferred local hours (known truth).

    Each customer has a zone, an RFM-like segment and a planted hour = the segment's typical
    hour (``SIM_SEGMENT_HOURS``) plus a uniform offset of up to +-6 h. Events per customer are
    Poisson(``mean_events`` x a gamma activity factor; some have none); each lands at the
    planted hour plus normal noise (sd ``spread_hours``) with probability ``on_preference``,
    else at a uniformly random hour. One in five events is a click. Returns
    ``(events[customer_key, event_type, event_ts], customers[customer_key, timezone, segment,
    planted_hour])``.
    """
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:07d}" for i in range(n_customers)], dtype=object)
    zone = rng.choice(np.array(SIM_ZONES, dtype=object), n_customers)
    segment_names = np.array(list(SIM_SEGMENT_HOURS), dtype=object)
    segment = rng.choice(segment_names, n_customers)
    base = np.array([SIM_SEGMENT_HOURS[s] for s in segment])
    planted = (base + rng.integers(-6, 7, n_customers)) % HOURS
    activity = rng.gamma(1.5, 1 / 1.5, n_customers)
    n_events = rng.poisson(mean_events * activity)
    cust = np.repeat(np.arange(n_customers), n_events)
    on = rng.random(len(cust)) < on_preference
    hour_float = (
        np.where(
            on,
            planted[cust] + rng.normal(0, spread_hours, len(cust)),
            rng.uniform(0, 24, len(cust)),
        )
        % HOURS
    )
    day = rng.integers(0, days, len(cust))
    start = (end - pd.Timedelta(days=days)).tz_localize(None).normalize()
    wall = start + pd.to_timedelta(day, unit="D") + pd.to_timedelta(hour_float * 3600, unit="s")
    stamps = np.empty(len(cust), dtype="datetime64[ns]")
    wall_index = pd.DatetimeIndex(wall).as_unit("ns")
    for z in SIM_ZONES:
        rows = np.flatnonzero(zone[cust] == z)
        aware = wall_index[rows].tz_localize(
            zoneinfo.ZoneInfo(z), ambiguous=np.ones(len(rows), dtype=bool), nonexistent="NaT"
        )
        stamps[rows] = aware.tz_convert("UTC").tz_localize(None).to_numpy()
    events = pd.DataFrame(
        {
            "customer_key": ids[cust],
            "event_type": np.where(rng.random(len(cust)) < 0.2, "email_click", "email_open"),
            "event_ts": pd.DatetimeIndex(stamps).tz_localize("UTC"),
        }
    ).dropna(subset=["event_ts"])
    customers = pd.DataFrame(
        {"customer_key": ids, "timezone": zone, "segment": segment, "planted_hour": planted}
    )
    return events.sort_values("event_ts", ignore_index=True), customers
