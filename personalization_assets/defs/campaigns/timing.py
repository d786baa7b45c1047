"""Recipient-local send times: "at 10:00 local", "at the customer's best hour", quiet hours.

Pure logic (pandas + the standard ``zoneinfo`` database, no Dagster). Given a decision clock
(UTC), each recipient's IANA zone and a :class:`ScheduleSpec`, :func:`compute_send_at` returns
the UTC instant to send at: the first instant at or after ``max(clock, not_before_utc)`` whose
local wall time is the requested time, then pushed to the end of quiet hours if it falls inside.

Time zones
    A recipient's zone is used when it is a valid IANA name. Otherwise (blank, unknown,
    misspelt) the country's default zone from ``dbt_project/seeds/country_defaults.csv`` is
    used, else the configured ``default_zone``. ``timezone_source`` says which:
    ``recipient``, ``country_default`` or ``default``.

Daylight-saving transitions (via ``zoneinfo``)
    * A local time that does not exist (spring forward, or Pacific/Apia's skipped
      2011-12-30) moves forward to the first instant after the gap: 02:30 on New York's
      spring-forward day is sent at 03:00 EDT.
    * A local time that occurs twice (fall back) takes the first occurrence (the
      daylight-time instant): 01:30 on New York's fall-back day is sent at 01:30 EDT.

Vectorised: rows are grouped by zone and each group is localised with one pandas call
(``tz_localize``/``tz_convert`` over zoneinfo): about 450k rows/s on one core
(``bench/timing_bench.py``).
"""

from __future__ import annotations

import csv
import functools
import re
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from personalization_assets import paths

COUNTRY_DEFAULTS_CSV = paths.DBT_PROJECT_DIR / "seeds" / "country_defaults.csv"
ZoneSource = Literal["recipient", "country_default", "default"]
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MINUTE = pd.Timedelta(minutes=1)
_DAY = pd.Timedelta(days=1)


def _minutes(value: str, name: str) -> int:
    match = _HHMM.match(value)
    if not match:
        raise ValueError(f"{name} must be a 24-hour 'HH:MM' time, got {value!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(_Strict):
    """Local hours in which nothing is sent: ``[start, end)``; wraps midnight when end < start."""

    start: str = "21:00"
    end: str = "08:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str, info) -> str:
        _minutes(value, f"quiet_hours.{info.field_name}")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError(
                f"quiet_hours start and end are both {self.start}; leave quiet_hours out instead"
            )
        return self

    @property
    def start_minute(self) -> int:
        return _minutes(self.start, "quiet_hours.start")

    @property
    def end_minute(self) -> int:
        return _minutes(self.end, "quiet_hours.end")

    def contains(self, minute_of_day: np.ndarray) -> np.ndarray:
        """True where a local minute-of-day lies inside the quiet window."""
        lo, hi = self.start_minute, self.end_minute
        if lo < hi:
            return (minute_of_day >= lo) & (minute_of_day < hi)
        return (minute_of_day >= lo) | (minute_of_day < hi)


class ScheduleSpec(_Strict):
    """When a campaign or journey step sends, in each recipient's local time.

    * ``at_local: "10:00"``: the next 10:00 local time.
    * ``at_best_hour: true``: the next start of the customer's best hour (send-time
      optimisation); customers without one use ``at_local`` (default ``"10:00"``).
    * Neither: as soon as possible (the clock), still subject to quiet hours.
    * ``quiet_hours``: never inside this local window; a send is moved to its end.
    * ``not_before_utc``: never before this UTC instant (e.g. a campaign launch time).
    * ``default_zone``: the zone of last resort for recipients with no usable zone.
    """

    at_local: str | None = None
    at_best_hour: bool = False
    quiet_hours: QuietHours | None = None
    not_before_utc: datetime | None = None
    default_zone: str = "UTC"

    @field_validator("at_local")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None:
            _minutes(value, "at_local")
        return value

    @field_validator("default_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in _available_zones():
            raise ValueError(f"default_zone {value!r} is not an IANA time zone")
        return value

    @field_validator("not_before_utc")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def fallback_minute(self) -> int | None:
        """Minute of day used when a row has no best hour (or best hour is not requested)."""
        if self.at_local is not None:
            return _minutes(self.at_local, "at_local")
        return 10 * 60 if self.at_best_hour else None


@functools.cache
def _available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_valid_zone(name: object) -> bool:
    """True for an IANA zone name known to the system's zoneinfo database."""
    return isinstance(name, str) and name in _available_zones()


@functools.cache
def load_country_default_zones(path: Path = COUNTRY_DEFAULTS_CSV) -> dict[str, str]:
    """``{country code: default zone}`` from the dbt seed (the same table dim_customers uses)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            row["country"].strip().upper(): row["default_timezone"].strip()
            for row in csv.DictReader(handle)
            if is_valid_zone(row["default_timezone"].strip())
        }


def resolve_zones(
    zones: pd.Series,
    countries: pd.Series | None = None,
    *,
    default_zone: str = "UTC",
    country_defaults: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Each row's usable zone and where it came from (``recipient``/``country_default``/``default``).

    Invalid or unknown names never raise: they fall back to the country's default zone, then
    to ``default_zone``.
    """
    if not is_valid_zone(default_zone):
        raise ValueError(f"default_zone {default_zone!r} is not an IANA time zone")
    defaults = load_country_default_zones() if country_defaults is None else country_defaults
    zone_codes, zone_names = pd.factorize(np.asarray(zones, dtype=object), use_na_sentinel=True)
    if countries is None:
        country_codes, country_names = np.full(len(zone_codes), -1), np.array([], dtype=object)
    else:
        country_codes, country_names = pd.factorize(
            np.asarray(countries, dtype=object), use_na_sentinel=True
        )
    # Resolve each distinct (zone, country) pair once, then broadcast back to the rows.
    pair = (zone_codes + 1) * (len(country_names) + 1) + (country_codes + 1)
    pair_codes, pairs = pd.factorize(pair)
    width = len(country_names) + 1
    resolved = [
        _resolve_one(
            zone_names[key // width - 1] if key // width else None,
            country_names[key % width - 1] if key % width else None,
            defaults,
            default_zone,
        )
        for key in pairs.tolist()
    ]
    zone_out = [zone for zone, _ in resolved]
    source_out = [source for _, source in resolved]
    return pd.DataFrame(
        {
            "timezone": np.array(zone_out, dtype=object)[pair_codes],
            "timezone_source": np.array(source_out, dtype=object)[pair_codes],
        }
    )


def _resolve_one(
    zone: object, country: object, defaults: dict[str, str], default_zone: str
) -> tuple[str, str]:
    name = zone.strip() if isinstance(zone, str) else None
    if is_valid_zone(name):
        return name, "recipient"
    by_country = defaults.get(country.strip().upper()) if isinstance(country, str) else None
    if by_country is not None:
        return by_country, "country_default"
    return default_zone, "default"


def localize_wall_times(local: pd.DatetimeIndex, zone: str) -> pd.DatetimeIndex:
    """Naive local wall times in ``zone`` -> UTC, with this module's DST rules.

    Nonexistent times move forward to the end of the gap (the transition instant; pandas'
    own ``shift_forward`` assumes one-hour gaps, wrong for Lord Howe's 30 minutes or Apia's
    skipped day); ambiguous times take the first (daylight-time) occurrence.
    """
    tz = zoneinfo.ZoneInfo(zone)
    aware = local.tz_localize(tz, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT")
    result = aware.tz_convert("UTC")
    gaps = np.asarray(result.isna())
    if not gaps.any():
        return result
    ends = [_gap_end(stamp.to_pydatetime(), tz) for stamp in local[gaps]]
    return _replace(result, gaps, pd.DatetimeIndex(ends).tz_convert("UTC"))


@functools.lru_cache(maxsize=4096)
def _gap_end(wall: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    """The UTC transition instant that skips over nonexistent local time ``wall``."""
    late = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)  # read with the pre-gap offset
    early = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)  # read with the post-gap offset
    lo, hi = min(early, late), max(early, late)
    after = hi.astimezone(tz).utcoffset()
    while (hi - lo).total_seconds() > 1:
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def _as_utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _next_at(start: pd.Timestamp, zone: str, minute: np.ndarray) -> pd.DatetimeIndex:
    """First UTC instant >= ``start`` at local minute-of-day ``minute`` (per row) in ``zone``."""
    day = start.tz_convert(zoneinfo.ZoneInfo(zone)).tz_localize(None).normalize()
    offset = pd.to_timedelta(minute, unit="m")
    result = localize_wall_times(pd.DatetimeIndex(day + offset), zone)
    # A day or two later always lands after `start`; a skipped day (Apia 2011) needs the second.
    for extra in (1, 2):
        late = np.asarray(result < start)
        if not late.any():
            break
        retry = localize_wall_times(pd.DatetimeIndex(day + extra * _DAY + offset[late]), zone)
        result = _replace(result, late, retry)
    return result


def _replace(base: pd.DatetimeIndex, where: np.ndarray, new: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """``base`` (UTC) with the rows ``where`` replaced by ``new`` (UTC), at ns resolution."""
    values = base.as_unit("ns").asi8.copy()
    values[where] = new.as_unit("ns").asi8
    return pd.DatetimeIndex(values.view("datetime64[ns]")).tz_localize("UTC")


def _out_of_quiet_hours(send: pd.DatetimeIndex, zone: str, quiet: QuietHours):
    """Move instants inside the local quiet window to its end; also return which moved."""
    local = send.tz_convert(zoneinfo.ZoneInfo(zone)).tz_localize(None)
    minute = np.asarray(local.hour * 60 + local.minute)
    inside = quiet.contains(minute)
    if not inside.any():
        return send, inside
    wraps = quiet.start_minute > quiet.end_minute
    next_day = wraps & (minute >= quiet.start_minute)
    day = local.normalize()[inside] + pd.to_timedelta(next_day[inside].astype(int), unit="D")
    moved = localize_wall_times(pd.DatetimeIndex(day + quiet.end_minute * _MINUTE), zone)
    return _replace(send, inside, moved), inside


def compute_send_at(
    recipients: pd.DataFrame,
    clock: datetime | pd.Timestamp,
    spec: ScheduleSpec,
    *,
    country_defaults: dict[str, str] | None = None,
) -> pd.DataFrame:
    """``send_at`` (UTC) per recipient for ``spec`` at decision time ``clock``.

    ``recipients`` needs ``timezone``; optional ``country`` (zone fallback) and
    ``best_local_hour`` (0-23, used with ``at_best_hour``; missing -> ``at_local``).
    Returns the input columns plus ``timezone_used``, ``timezone_source``, ``send_at``
    (tz-aware UTC), ``local_send_at`` (naive local wall time), ``hour_source``
    (``best_hour``/``at_local``/``asap``) and ``quiet_hours_shifted``.
    """
    start = _as_utc(clock)
    if spec.not_before_utc is not None:
        start = max(start, _as_utc(spec.not_before_utc))
    frame = recipients.reset_index(drop=True)
    resolved = resolve_zones(
        frame["timezone"],
        frame.get("country"),
        default_zone=spec.default_zone,
        country_defaults=country_defaults,
    )
    minute, hour_source = _requested_minutes(frame, spec)
    send = np.empty(len(frame), dtype="datetime64[ns]")
    shifted = np.zeros(len(frame), dtype=bool)
    local = np.empty(len(frame), dtype="datetime64[ns]")
    for zone, rows in resolved.groupby("timezone", sort=False).indices.items():
        if np.isnan(minute[rows]).all():
            at = pd.DatetimeIndex(np.full(len(rows), start.as_unit("ns").to_datetime64()))
            at = at.tz_localize("UTC")
        else:
            at = _next_at(start, zone, minute[rows].astype(np.int64))
        if spec.quiet_hours is not None:
            at, moved = _out_of_quiet_hours(at, zone, spec.quiet_hours)
            shifted[rows] = moved
        send[rows] = at.tz_localize(None).as_unit("ns").to_numpy()
        wall = at.tz_convert(zoneinfo.ZoneInfo(zone)).tz_localize(None)
        local[rows] = wall.as_unit("ns").to_numpy()
    out = frame.copy()
    out["timezone_used"] = resolved["timezone"].to_numpy()
    out["timezone_source"] = resolved["timezone_source"].to_numpy()
    out["send_at"] = pd.DatetimeIndex(send).tz_localize("UTC")
    out["local_send_at"] = pd.DatetimeIndex(local)
    out["hour_source"] = hour_source
    out["quiet_hours_shifted"] = shifted
    return out


def _requested_minutes(frame: pd.DataFrame, spec: ScheduleSpec) -> tuple[np.ndarray, np.ndarray]:
    """Local minute-of-day per row (NaN = as soon as possible) and where it came from."""
    n = len(frame)
    fallback = spec.fallback_minute()
    minute = np.full(n, np.nan if fallback is None else float(fallback))
    source = np.full(n, "asap" if fallback is None else "at_local", dtype=object)
    if spec.at_best_hour and "best_local_hour" in frame:
        best = pd.to_numeric(frame["best_local_hour"], errors="coerce").to_numpy(dtype=float)
        usable = np.isfinite(best) & (best >= 0) & (best < 24)
        minute[usable] = np.floor(best[usable]) * 60
        source[usable] = "best_hour"
    return minute, source


def schedule_sends(
    rows: pd.DataFrame,
    schedules: dict[str, ScheduleSpec | None],
    clock: datetime | pd.Timestamp,
    *,
    key: str = "campaign_id",
) -> pd.Series:
    """Naive-UTC ``send_at`` per row (the ledger's convention), from each row's schedule.

    ``rows`` has ``key`` (campaign or journey-step id), ``timezone`` and optionally ``country``
    and ``best_local_hour``. Rows whose ``key`` has no schedule get NaT (= due now). The
    result is aligned with ``rows``' index, so it can be assigned as a column.
    """
    result = pd.Series(pd.NaT, index=rows.index, dtype="datetime64[ns]")
    for name, spec in schedules.items():
        mask = (rows[key] == name).to_numpy()
        if spec is None or not mask.any():
            continue
        planned = compute_send_at(rows[mask], clock, spec)
        result.loc[mask] = planned["send_at"].dt.tz_localize(None).to_numpy()
    return result


def zone_offset_hours(zone: str, at: datetime) -> float:
    """UTC offset of ``zone`` at instant ``at`` in hours (for previews and docs)."""
    moment = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    offset = moment.astimezone(zoneinfo.ZoneInfo(zone)).utcoffset()
    return 0.0 if offset is None else offset.total_seconds() / 3600


__all__ = [
    "COUNTRY_DEFAULTS_CSV",
    "QuietHours",
    "ScheduleSpec",
    "compute_send_at",
    "is_valid_zone",
    "load_country_default_zones",
    "localize_wall_times",
    "resolve_zones",
    "schedule_sends",
    "zone_offset_hours",
]
