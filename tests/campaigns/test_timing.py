"""Recipient-local send times: fixed clocks across zones, DST days, quiet hours, zone fallback."""

import zoneinfo
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from personalization_assets.defs.campaigns.timing import (
    QuietHours,
    ScheduleSpec,
    compute_send_at,
    load_country_default_zones,
    resolve_zones,
    schedule_sends,
)

QUIET = QuietHours(start="21:00", end="08:00")


def utc(*args: int) -> pd.Timestamp:
    return pd.Timestamp(datetime(*args, tzinfo=UTC))


def send_at(zone, clock, **spec) -> pd.Timestamp:
    out = compute_send_at(pd.DataFrame({"timezone": [zone]}), clock, ScheduleSpec(**spec))
    return out["send_at"].iloc[0]


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        # clock 2026-01-15 12:00 UTC; each line: the next 10:00 local, in UTC
        ("America/New_York", utc(2026, 1, 15, 15)),  # 07:00 EST now -> 10:00 EST today
        ("Europe/Berlin", utc(2026, 1, 16, 9)),  # 13:00 CET now -> tomorrow
        ("Asia/Kolkata", utc(2026, 1, 16, 4, 30)),  # 17:30 IST (+5:30) now -> tomorrow
        ("Australia/Lord_Howe", utc(2026, 1, 15, 23)),  # 23:00 (+11 summer) -> 10:00 tomorrow
        ("Pacific/Apia", utc(2026, 1, 15, 21)),  # 01:00 on the 16th (+13) -> 10:00 the same day
    ],
)
def test_ten_local_lands_on_the_right_utc_instant_per_zone(zone, expected):
    assert send_at(zone, utc(2026, 1, 15, 12), at_local="10:00") == expected


def test_same_local_hour_moves_one_utc_hour_across_spring_forward():
    before = send_at("America/New_York", utc(2026, 3, 7, 0), at_local="10:00")
    after = send_at("America/New_York", utc(2026, 3, 9, 0), at_local="10:00")
    assert before == utc(2026, 3, 7, 15)  # EST, UTC-5
    assert after == utc(2026, 3, 9, 14)  # EDT, UTC-4


@pytest.mark.parametrize(
    ("zone", "clock", "at_local", "expected", "local"),
    [
        # 02:30 does not exist on these days: sent at the end of the gap
        ("America/New_York", utc(2026, 3, 8, 5), "02:30", utc(2026, 3, 8, 7), "03:00"),
        ("Europe/Berlin", utc(2026, 3, 28, 23), "02:30", utc(2026, 3, 29, 1), "03:00"),
        # Lord Howe springs forward by 30 minutes, 02:00 -> 02:30
        ("Australia/Lord_Howe", utc(2026, 10, 3, 12), "02:15", utc(2026, 10, 3, 15, 30), "02:30"),
    ],
)
def test_nonexistent_spring_forward_time_moves_to_end_of_gap(
    zone, clock, at_local, expected, local
):
    out = compute_send_at(
        pd.DataFrame({"timezone": [zone]}), clock, ScheduleSpec(at_local=at_local)
    )
    assert out["send_at"].iloc[0] == expected
    assert out["local_send_at"].iloc[0].strftime("%H:%M") == local


@pytest.mark.parametrize(
    ("zone", "clock", "at_local", "expected"),
    [
        # 01:30 happens twice; the first (daylight-time) occurrence is used
        ("America/New_York", utc(2026, 11, 1, 4), "01:30", utc(2026, 11, 1, 5, 30)),
        ("Europe/Berlin", utc(2026, 10, 24, 23), "02:30", utc(2026, 10, 25, 0, 30)),
        # Lord Howe falls back 02:00 -> 01:30, so 01:45 repeats; first is at +11
        ("Australia/Lord_Howe", utc(2026, 4, 4, 12), "01:45", utc(2026, 4, 4, 14, 45)),
    ],
)
def test_ambiguous_fall_back_time_takes_first_occurrence(zone, clock, at_local, expected):
    assert send_at(zone, clock, at_local=at_local) == expected


def test_apia_skipped_day_moves_to_the_next_existing_instant():
    # Samoa skipped 2011-12-30: 10:00 that day does not exist, the gap ends at 31st 00:00 (+14)
    out = compute_send_at(
        pd.DataFrame({"timezone": ["Pacific/Apia"]}),
        utc(2011, 12, 29, 21),
        ScheduleSpec(at_local="10:00"),
    )
    assert out["send_at"].iloc[0] == utc(2011, 12, 30, 10)
    assert out["local_send_at"].iloc[0] == pd.Timestamp("2011-12-31 00:00")


@pytest.mark.parametrize(
    ("clock", "expected", "shifted"),
    [
        (utc(2026, 1, 15, 22), utc(2026, 1, 16, 7), True),  # 23:00 Berlin -> 08:00 next day
        (utc(2026, 1, 15, 1), utc(2026, 1, 15, 7), True),  # 02:00 Berlin -> 08:00 same day
        (utc(2026, 1, 15, 6, 59), utc(2026, 1, 15, 7), True),  # 07:59 -> 08:00
        (utc(2026, 1, 15, 7), utc(2026, 1, 15, 7), False),  # 08:00 is outside [21:00, 08:00)
        (utc(2026, 1, 15, 11), utc(2026, 1, 15, 11), False),  # noon: send now
        (utc(2026, 1, 15, 20), utc(2026, 1, 16, 7), True),  # 21:00 exactly is quiet
    ],
)
def test_quiet_hours_wrapping_midnight_hold_for_asap_sends(clock, expected, shifted):
    out = compute_send_at(
        pd.DataFrame({"timezone": ["Europe/Berlin"]}), clock, ScheduleSpec(quiet_hours=QUIET)
    )
    assert out["send_at"].iloc[0] == expected
    assert bool(out["quiet_hours_shifted"].iloc[0]) is shifted


def test_quiet_hours_push_a_late_best_hour_to_the_morning_and_non_wrapping_windows_work():
    frame = pd.DataFrame({"timezone": ["Europe/Berlin"] * 2, "best_local_hour": [22, 12]})
    clock = utc(2026, 1, 15, 6)
    wrapping = compute_send_at(frame, clock, ScheduleSpec(at_best_hour=True, quiet_hours=QUIET))
    assert wrapping["send_at"].tolist() == [utc(2026, 1, 16, 7), utc(2026, 1, 15, 11)]
    lunch = QuietHours(start="12:00", end="14:00")
    day = compute_send_at(frame, clock, ScheduleSpec(at_best_hour=True, quiet_hours=lunch))
    assert day["send_at"].tolist() == [utc(2026, 1, 15, 21), utc(2026, 1, 15, 13)]
    assert day["quiet_hours_shifted"].tolist() == [False, True]


def test_best_hour_per_row_with_at_local_fallback_for_missing_hours():
    frame = pd.DataFrame({"timezone": ["America/New_York"] * 3, "best_local_hour": [19, None, 31]})
    out = compute_send_at(
        frame, utc(2026, 1, 15, 12), ScheduleSpec(at_best_hour=True, at_local="09:00")
    )
    assert out["send_at"].tolist() == [
        utc(2026, 1, 16, 0),  # 19:00 EST
        utc(2026, 1, 15, 14),  # 09:00 EST today (07:00 now)
        utc(2026, 1, 15, 14),
    ]
    assert out["hour_source"].tolist() == ["best_hour", "at_local", "at_local"]


def test_not_before_utc_delays_the_decision_clock():
    at = send_at(
        "America/New_York",
        utc(2026, 1, 15, 12),
        at_local="10:00",
        not_before_utc=datetime(2026, 1, 15, 16),  # naive = UTC
    )
    assert at == utc(2026, 1, 16, 15)


def test_invalid_or_unknown_zones_fall_back_to_country_then_default():
    frame = pd.DataFrame(
        {
            "timezone": ["Asia/Kolkata", "Mars/Olympus", "", None, "europe/berlin", "Bad"],
            "country": ["IN", "DE", "JP", "XX", "FR", None],
        }
    )
    out = compute_send_at(
        frame, utc(2026, 1, 15, 12), ScheduleSpec(at_local="10:00", default_zone="Europe/London")
    )
    assert out["timezone_used"].tolist() == [
        "Asia/Kolkata",
        "Europe/Berlin",
        "Asia/Tokyo",
        "Europe/London",
        "Europe/Paris",
        "Europe/London",
    ]
    assert out["timezone_source"].tolist() == [
        "recipient",
        "country_default",
        "country_default",
        "default",
        "country_default",
        "default",
    ]
    assert out["send_at"].iloc[1] == utc(2026, 1, 16, 9)  # 10:00 Berlin


def test_country_defaults_come_from_the_dbt_seed():
    defaults = load_country_default_zones()
    assert defaults["DE"] == "Europe/Berlin"
    assert defaults["US"] == "America/New_York"
    resolved = resolve_zones(pd.Series(["nope"]), pd.Series([" us "]))
    assert resolved.iloc[0].tolist() == ["America/New_York", "country_default"]


@pytest.mark.parametrize(
    "spec",
    [
        {"at_local": "25:00"},
        {"at_local": "9:00"},
        {"quiet_hours": {"start": "08:00", "end": "08:00"}},
        {"default_zone": "Nowhere/City"},
        {"at_local": "10:00", "unknown": 1},
    ],
)
def test_invalid_schedule_specs_are_rejected_with_a_message(spec):
    with pytest.raises(ValidationError):
        ScheduleSpec.model_validate(spec)


def _reference(zone: str, clock: datetime, hour: int, minute: int) -> datetime | None:
    """Scalar zoneinfo: the first existing local hh:mm at or after clock (None on gap days)."""
    tz = zoneinfo.ZoneInfo(zone)
    day = clock.astimezone(tz).date()
    for offset in range(3):
        d = day + timedelta(days=offset)
        wall = datetime(d.year, d.month, d.day, hour, minute)
        instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) != wall:
            return None  # nonexistent local time: covered by the DST tests above
        if instant >= clock:  # fold=0 is the first occurrence of an ambiguous time
            return instant
    return None


def test_vectorised_result_matches_scalar_zoneinfo_on_random_rows():
    rng = np.random.default_rng(7)
    zones = sorted(z for z in zoneinfo.available_timezones() if "/" in z and "Etc" not in z)
    picked = rng.choice(zones, 3000)
    hours = rng.integers(0, 24, 3000)
    frame = pd.DataFrame({"timezone": picked, "best_local_hour": hours})
    clock = datetime(2026, 3, 29, 0, 40, tzinfo=UTC)  # a Sunday of European DST change
    out = compute_send_at(frame, clock, ScheduleSpec(at_best_hour=True))
    checked = 0
    for zone, hour, got in zip(picked, hours, out["send_at"], strict=True):
        expected = _reference(zone, clock, int(hour), 0)
        assert got >= pd.Timestamp(clock)
        if expected is not None:
            assert got == pd.Timestamp(expected), (zone, hour)
            checked += 1
    assert checked > 2900


def test_schedule_sends_applies_each_campaigns_spec_and_leaves_unscheduled_rows_due_now():
    rows = pd.DataFrame(
        {
            "campaign_id": ["weekly", "weekly", "cart", "other"],
            "timezone": ["Europe/Berlin", "America/New_York", "Europe/Berlin", "Asia/Tokyo"],
            "best_local_hour": [None, None, 19, 7],
        },
        index=[10, 11, 12, 13],
    )
    send_at = schedule_sends(
        rows,
        {
            "weekly": ScheduleSpec(at_local="10:00", quiet_hours=QUIET),
            "cart": ScheduleSpec(at_best_hour=True),
            "other": None,
        },
        utc(2026, 1, 15, 12),
    )
    assert list(send_at.index) == [10, 11, 12, 13]
    assert send_at.loc[10] == pd.Timestamp("2026-01-16 09:00")  # naive UTC, as the ledger stores
    assert send_at.loc[11] == pd.Timestamp("2026-01-15 15:00")
    assert send_at.loc[12] == pd.Timestamp("2026-01-15 18:00")  # 19:00 CET
    assert pd.isna(send_at.loc[13])
