"""Timing benchmarks: recipient-local send_at, send-time optimisation, test-then-winner split.

    .venv/bin/python bench/timing_bench.py --rows 100000 1000000

Prints a markdown table (seconds and rows/s, best of ``--rounds``).
"""

import argparse
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from personalization_assets.defs.campaigns.rollout import split_audience
from personalization_assets.defs.campaigns.timing import QuietHours, ScheduleSpec, compute_send_at
from personalization_assets.defs.models.send_time import (
    SendTimeParams,
    evaluate_time_split,
    fit_send_times,
    local_hours,
    simulate_hour_preferences,
)

ZONES = np.array(
    [
        "America/New_York",
        "America/Los_Angeles",
        "Europe/Berlin",
        "Europe/London",
        "Asia/Kolkata",
        "Asia/Tokyo",
        "Australia/Lord_Howe",
        "Australia/Sydney",
        "Pacific/Apia",
        "Not/AZone",
    ],
    dtype=object,
)
CLOCK = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # a DST Sunday in Europe


def _best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _recipients(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i:08d}" for i in range(n)],
            "timezone": rng.choice(ZONES, n),
            "country": rng.choice(np.array(["DE", "US", "JP", None], dtype=object), n),
            "best_local_hour": rng.integers(0, 24, n),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    quiet = QuietHours(start="21:00", end="08:00")
    cases = {
        "send_at, at_local 10:00 + quiet hours": ScheduleSpec(at_local="10:00", quiet_hours=quiet),
        "send_at, best hour + quiet hours": ScheduleSpec(at_best_hour=True, quiet_hours=quiet),
    }
    print("| step | rows | seconds | rows/s |")
    print("|---|---:|---:|---:|")
    for n in args.rows:
        frame = _recipients(n)
        for name, spec in cases.items():
            seconds = _best(lambda f=frame, s=spec: compute_send_at(f, CLOCK, s), args.rounds)
            print(f"| {name} | {n:,} | {seconds:.2f} | {n / seconds:,.0f} |")
        ids = frame["customer_id"]
        seconds = _best(lambda ids=ids: split_audience("spring_sale", ids, 0.2), 1)
        print(f"| rollout split_audience (md5) | {n:,} | {seconds:.2f} | {n / seconds:,.0f} |")
    for customers in (10_000, 100_000):
        events, people = simulate_hour_preferences(customers, seed=0)
        params = SendTimeParams()
        seconds = _best(lambda e=events, p=people: local_hours(e, p), 1)
        print(
            f"| STO local_hours ({customers:,} customers) | {len(events):,} events | "
            f"{seconds:.2f} | {len(events) / seconds:,.0f} |"
        )
        local = local_hours(events, people)
        seconds = _best(lambda e=local, p=people, s=params: fit_send_times(e, p, s), 1)
        print(
            f"| STO fit (auto prior) | {customers:,} customers | {seconds:.2f} | "
            f"{customers / seconds:,.0f} |"
        )
        start = time.perf_counter()
        evaluation = evaluate_time_split(local, people, params)
        seconds = time.perf_counter() - start
        print(
            f"| STO time-split evaluation (lift {evaluation.hit_rate_lift:+.3f}) | "
            f"{customers:,} customers | {seconds:.2f} | {customers / seconds:,.0f} |"
        )


if __name__ == "__main__":
    main()
