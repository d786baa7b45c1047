"""Synthetic data with planted signal for the propensity and recommendation tests.

Both generators are vectorised so ``bench/models_bench.py`` reuses them at 1M customers.

Propensity (``make_propensity_frame``): each customer signs up, buys as a Poisson
process at a latent rate, and silently drops out (dies) at an exponential time. Email
opens collapse after drop-out and site sessions rise in the week before a purchase, so
features beyond recency/frequency carry real information the baselines ignore:

* churn (no purchase in the next 30 days): baseline = recency rule;
* purchase within 7 days: baseline = historical purchase rate.

Recommendations (``make_interactions``): items belong to categories with a Zipf
popularity inside each; each user has one primary (and sometimes a secondary) category
affinity, so a user's future purchases are predictable from their past categories,
which ALS picks up and global popularity cannot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

EPOCH = pd.Timestamp("2024-01-01")
PROPENSITY_FEATURES = [
    "recency_days",
    "frequency_90d",
    "frequency_total",
    "tenure_days",
    "opens_30d",
    "sessions_7d",
]
CHURN_HORIZON_DAYS = 30
PURCHASE_HORIZON_DAYS = 7


def _recency_rule(recency: np.ndarray, horizon: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        prob = np.exp(-horizon / np.maximum(recency, 0.0))
    return np.where(np.isnan(recency), 1.0, prob)


def _rate_rule(count: np.ndarray, window: np.ndarray, horizon: float) -> np.ndarray:
    rate = np.where(window > 0, count / np.maximum(window, 1e-9), 0.0)
    return 1.0 - np.exp(-rate * horizon)


def make_propensity_frame(
    n_customers: int = 4000,
    *,
    as_of_days: tuple[int, ...] = (200, 230, 260, 290, 320, 350),
    seed: int = 0,
) -> pd.DataFrame:
    """Point-in-time rows (customer, as_of) with features, labels and baseline scores.

    Baselines are computed with the same formulas as ``propensity.recency_baseline`` /
    ``historical_rate_baseline`` (duplicated here so the fixture does not depend on the
    code under test).
    """
    rng = np.random.default_rng(seed)
    n = n_customers
    end = max(as_of_days) + CHURN_HORIZON_DAYS + 1
    signup = rng.uniform(0, 180, n)
    rate = rng.gamma(shape=2.0, scale=0.025, size=n)  # purchases/day, mean 0.05
    death = signup + rng.exponential(500, n)
    alive_end = np.minimum(death, end)
    life = np.maximum(alive_end - signup, 0.0)
    counts = rng.poisson(rate * life)
    owner = np.repeat(np.arange(n), counts)
    times = signup[owner] + rng.uniform(0, 1, counts.sum()) * life[owner]
    keys = owner * 10_000.0 + times
    order = np.argsort(keys, kind="stable")
    keys, times = keys[order], times[order]
    start = np.searchsorted(keys, np.arange(n) * 10_000.0)
    stop = np.searchsorted(keys, np.arange(n) * 10_000.0 + end + 1)
    open_affinity = rng.beta(4, 3, n)

    frames = []
    cust = np.arange(n)
    for day in as_of_days:
        base = cust * 10_000.0
        pos = np.searchsorted(keys, base + day, side="right")  # first event after `day`
        count_total = pos - start
        count_90 = pos - np.searchsorted(keys, base + day - 90, side="right")
        has_prev = pos > start
        last = np.where(has_prev, times[np.maximum(pos - 1, 0)], np.nan)
        has_next = pos < stop
        nxt = np.where(has_next, times[np.minimum(pos, len(times) - 1)], np.inf)

        alive_30 = np.clip((np.minimum(death, day) - np.maximum(signup, day - 30)) / 30, 0, 1)
        alive_7 = np.clip((np.minimum(death, day) - np.maximum(signup, day - 7)) / 7, 0, 1)
        opens = rng.poisson(30 * (0.6 * open_affinity * alive_30 + 0.01))
        buys_soon = nxt <= day + PURCHASE_HORIZON_DAYS
        sessions = rng.poisson(7 * (0.03 + 1.5 * rate) * alive_7 + 0.6 * buys_soon)
        tenure = day - signup
        recency = day - last
        member = signup <= day
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": cust[member],
                    "as_of": EPOCH + pd.Timedelta(days=day),
                    "recency_days": recency[member],
                    "frequency_90d": count_90[member].astype(np.float64),
                    "frequency_total": count_total[member].astype(np.float64),
                    "tenure_days": tenure[member],
                    "opens_30d": opens[member].astype(np.float64),
                    "sessions_7d": sessions[member].astype(np.float64),
                    "churned_30d": (nxt > day + CHURN_HORIZON_DAYS)[member].astype(np.int8),
                    "purchased_7d": buys_soon[member].astype(np.int8),
                    "churn_baseline": _recency_rule(recency, CHURN_HORIZON_DAYS)[member],
                    "purchase_baseline": _rate_rule(count_total, tenure, PURCHASE_HORIZON_DAYS)[
                        member
                    ],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def make_catalog(n_items: int = 300, n_categories: int = 10, *, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    items = np.arange(n_items)
    return pd.DataFrame(
        {
            "product_id": [f"p{i:06d}" for i in items],
            "category": [f"cat{c:02d}" for c in items % n_categories],
            "in_stock": rng.random(n_items) > 0.05,
        }
    )


def make_interactions(
    n_users: int = 2000,
    n_items: int = 300,
    n_categories: int = 10,
    *,
    events_per_user: float = 30.0,
    days: int = 60,
    seed: int = 0,
    string_ids: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(interactions, catalog)`` with planted per-user category affinities."""
    rng = np.random.default_rng(seed)
    catalog = make_catalog(n_items, n_categories, seed=seed)
    item_cat = np.arange(n_items) % n_categories
    # Zipf-ish popularity within each category, plus a mild global tilt.
    within_rank = np.arange(n_items) // n_categories
    pop = 1.0 / (1.0 + within_rank) ** 0.9 * rng.lognormal(0, 0.3, n_items)
    cat_items = [np.flatnonzero(item_cat == c) for c in range(n_categories)]
    cat_cdf = [np.cumsum(pop[ix]) / pop[ix].sum() for ix in cat_items]

    primary = rng.integers(0, n_categories, n_users)
    secondary = np.where(rng.random(n_users) < 0.5, rng.integers(0, n_categories, n_users), primary)
    counts = rng.poisson(events_per_user, n_users) + 3
    user = np.repeat(np.arange(n_users), counts)
    total = len(user)
    u = rng.random(total)
    cat = np.where(
        u < 0.7,
        primary[user],
        np.where(u < 0.9, secondary[user], rng.integers(0, n_categories, total)),
    )
    item = np.empty(total, dtype=np.int64)
    draws = rng.random(total)
    for c in range(n_categories):
        mask = cat == c
        pick = np.searchsorted(cat_cdf[c], draws[mask], side="right")
        item[mask] = cat_items[c][np.minimum(pick, len(cat_items[c]) - 1)]
    kind = rng.choice(3, total, p=[0.6, 0.25, 0.15])
    event_type = np.array(["product_view", "add_to_cart", "purchase"])[kind]
    seconds = rng.integers(0, days * 86_400, total)
    interactions = pd.DataFrame(
        {
            "customer_key": (
                np.array([f"c{i:07d}" for i in range(n_users)], dtype=object)[user]
                if string_ids
                else user.astype(np.int64)
            ),
            "product_id": catalog["product_id"].to_numpy()[item],
            "event_type": pd.Categorical(event_type),
            "event_ts": EPOCH + pd.to_timedelta(seconds, unit="s"),
        }
    )
    return interactions, catalog


@pytest.fixture(scope="session")
def propensity_frame() -> pd.DataFrame:
    return make_propensity_frame()


@pytest.fixture(scope="session")
def interactions_and_catalog() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_interactions()


@pytest.fixture(scope="session")
def propensity_features() -> list[str]:
    return list(PROPENSITY_FEATURES)


@pytest.fixture(scope="session")
def epoch() -> pd.Timestamp:
    return EPOCH
