"""Validate one event against the landing contract, with the warehouse's reason codes.

The rules and codes are those of `dbt_project/models/staging/stg_raw__event_lines.sql`, so an
event the collector rejects would have been quarantined for the same reason downstream
(`contracts/event.schema.json` is the contract). The collector is stricter in one respect: a
value of the wrong JSON type (a number where the schema says string, a string amount) is
`wrong_type` here, where dbt would cast it. Catalog checks (`unknown_product_id`) and
duplicates stay in the warehouse: they need the global view. No framework imports.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from personalization_assets.contract import EVENT_TYPES

# The dbt var `event_types` accepts these as well; they are added here until
# `contract.EVENT_TYPES` (the sample generator's list) carries them.
EDGE_EVENT_TYPES = ("preference_update",)
ACCEPTED_EVENT_TYPES = frozenset(EVENT_TYPES) | frozenset(EDGE_EVENT_TYPES)
PRODUCT_EVENT_TYPES = frozenset({"product_view", "add_to_cart", "purchase"})
REQUIRED_STRINGS = ("event_id", "user_id", "event_type", "timestamp")
OPTIONAL_STRINGS = (
    "product_id",
    "category",
    "currency",
    "session_id",
    "device",
    "campaign_id",
    "variant",
)


@dataclass
class Verdict:
    """Reasons (first one is *the* reason, as in the warehouse) and the fields they name."""

    reasons: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    event_ts: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons

    def add(self, reason: str, name: str | None = None) -> None:
        self.reasons.append(reason)
        if name and name not in self.fields:
            self.fields.append(name)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reasons[0], "reasons": self.reasons, "fields": self.fields}


def _clean_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value or None


def parse_timestamp(text: str) -> dt.datetime | None:
    """ISO 8601 to aware UTC; no offset means UTC (as DuckDB's timestamptz cast does)."""
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def latest_allowed(now: dt.datetime, future_tolerance_hours: int) -> dt.datetime:
    """The end of the UTC landing day `now` falls in, plus the tolerance (dbt's rule)."""
    day_start = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
    return day_start + dt.timedelta(hours=24 + future_tolerance_hours)


def validate_event(
    event: Any,
    *,
    now: dt.datetime,
    future_tolerance_hours: int = 24,
    max_properties_chars: int = 4096,
) -> Verdict:
    """Every reason `event` (a parsed JSON value) breaks the contract; empty when valid."""
    verdict = Verdict()
    if not isinstance(event, dict):
        verdict.add("invalid_json")
        return verdict
    for name in REQUIRED_STRINGS + OPTIONAL_STRINGS:
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            verdict.add("wrong_type", name)
    amount = event.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
        verdict.add("wrong_type", "amount")
        amount = None
    if _clean_id(event.get("event_id")) is None:
        verdict.add("missing_event_id", "event_id")
    if _clean_id(event.get("user_id")) is None:
        verdict.add("missing_user_id", "user_id")
    event_type = _clean_id(event.get("event_type"))
    if event_type not in ACCEPTED_EVENT_TYPES:
        verdict.add("unknown_event_type", "event_type")
    timestamp = event.get("timestamp")
    verdict.event_ts = parse_timestamp(timestamp) if isinstance(timestamp, str) else None
    if verdict.event_ts is None:
        verdict.add("invalid_timestamp", "timestamp")
    elif verdict.event_ts > latest_allowed(now, future_tolerance_hours):
        verdict.add("future_timestamp", "timestamp")
    if isinstance(amount, float) and not math.isfinite(amount):
        verdict.add("invalid_amount", "amount")
    elif amount is not None and amount < 0:
        verdict.add("negative_amount", "amount")
    if event_type == "purchase" and event.get("amount") is None:
        verdict.add("missing_amount", "amount")
    if event_type in PRODUCT_EVENT_TYPES and _clean_id(event.get("product_id")) is None:
        verdict.add("missing_product_id", "product_id")
    properties = event.get("properties")
    if properties is not None:
        if len(json.dumps(properties, separators=(",", ":"))) > max_properties_chars:
            verdict.add("oversize_properties", "properties")
        if not isinstance(properties, dict):
            verdict.add("invalid_properties", "properties")
    return verdict


def customer_key(event: dict[str, Any]) -> str | None:
    """The warehouse's customer id for an event (trimmed, lower-cased)."""
    return _clean_id(event.get("user_id"))
