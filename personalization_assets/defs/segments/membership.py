"""Segment membership and history in the warehouse: RFM map plus rule segments. No Dagster imports.

Pseudonymized like every analytics layer: rows are keyed by `customer_key` (the keyed hash of
the customer id); rules' `events(...)` read `main.fct_events` through the restricted
`customer_keys` mapping, and no customer id is written.

Tables (schema `segments`):
- `customer_segments(customer_key, segment, segment_type, as_of)`: current members; RFM segments
  are exclusive (one per purchaser), rule segments may overlap unless they share an
  `exclusive_group`.
- `segment_history(customer_key, segment, change, as_of, previous_as_of)`: who entered or exited
  each segment between the previous as-of and this one. Re-running the same as-of replaces that
  as-of's rows, so history never duplicates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from personalization_assets.defs.models.lifecycle import PROFILE_VIEW, ensure_customer_profile
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.segments import rules
from personalization_assets.defs.segments.rfm import RfmConfig, rfm_segment_sql

SCHEMA = "segments"
FEATURES = PROFILE_VIEW  # customer_features + lifecycle predictions
# fct_events keyed by customer_key, as a temporary view on the building connection.
EVENTS = "segment_events"


@dataclass(frozen=True)
class MembershipSummary:
    as_of: dt.datetime
    sizes: dict[tuple[str, str], int]
    entered: dict[str, int]
    exited: dict[str, int]
    previous_as_of: dt.datetime | None


def feature_schema(con: duckdb.DuckDBPyConnection) -> rules.FeatureSchema:
    """Rule-language field types from the live customer profile (features + lifecycle)."""
    ensure_customer_profile(con)
    return rules.feature_schema_from_duckdb(
        [(row[0], row[1]) for row in con.execute(f"describe {FEATURES}").fetchall()]
    )


def build_membership(
    con: duckdb.DuckDBPyConnection, rfm: RfmConfig, segments: rules.SegmentsConfig
) -> MembershipSummary:
    """Recompute `customer_segments` for the features' as-of and append the history delta."""
    con.execute(f"create schema if not exists {SCHEMA}")
    ensure_customer_profile(con)
    con.execute(
        f"create or replace temp view {EVENTS} as "
        f"select * from {pseudonym.keyed_relation_sql('main.fct_events')}"
    )
    as_of = con.execute(f"select max(as_of) from {FEATURES}").fetchone()[0]
    rule_sql = rules.segment_membership_sql(
        segments, feature_schema(con), features_relation=FEATURES, events_relation=EVENTS
    )
    con.execute(
        f"""
        create or replace table {SCHEMA}.customer_segments as
        select customer_key, {rfm_segment_sql(rfm)} as segment, 'rfm' as segment_type,
               cast($as_of as timestamp) as as_of
        from {FEATURES}
        where r_score is not null
        union all
        select customer_key, segment, 'rule' as segment_type, cast($as_of as timestamp) as as_of
        from ({rule_sql}) as rule_members
        """,
        {"as_of": as_of},
    )
    previous_as_of = _record_history(con, as_of)
    return MembershipSummary(
        as_of=as_of,
        sizes=_sizes(con, rfm, segments),
        entered=_changes(con, as_of, "entered"),
        exited=_changes(con, as_of, "exited"),
        previous_as_of=previous_as_of,
    )


def _record_history(con: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> dt.datetime | None:
    for table in ("segment_snapshots", "segment_history"):
        pseudonym.rekey_legacy_table(con, f"{SCHEMA}.{table}")
    con.execute(
        f"""
        create table if not exists {SCHEMA}.segment_snapshots (
            customer_key varchar, segment varchar, segment_type varchar, as_of timestamp)
        """
    )
    con.execute(
        f"""
        create table if not exists {SCHEMA}.segment_history (
            customer_key varchar, segment varchar, segment_type varchar, change varchar,
            as_of timestamp, previous_as_of timestamp)
        """
    )
    con.execute(f"delete from {SCHEMA}.segment_snapshots where as_of = ?", [as_of])
    con.execute(f"delete from {SCHEMA}.segment_history where as_of = ?", [as_of])
    con.execute(f"insert into {SCHEMA}.segment_snapshots select * from {SCHEMA}.customer_segments")
    previous = con.execute(
        f"select max(as_of) from {SCHEMA}.segment_snapshots where as_of < ?", [as_of]
    ).fetchone()[0]
    if previous is None:
        return None
    con.execute(
        f"""
        insert into {SCHEMA}.segment_history
        with now as (select * from {SCHEMA}.segment_snapshots where as_of = $as_of),
             before as (select * from {SCHEMA}.segment_snapshots where as_of = $previous)
        select customer_key, segment, segment_type, 'entered', $as_of, $previous
        from (select customer_key, segment, segment_type from now
              except select customer_key, segment, segment_type from before)
        union all
        select customer_key, segment, segment_type, 'exited', $as_of, $previous
        from (select customer_key, segment, segment_type from before
              except select customer_key, segment, segment_type from now)
        """,
        {"as_of": as_of, "previous": previous},
    )
    return previous


def _sizes(
    con: duckdb.DuckDBPyConnection, rfm: RfmConfig, segments: rules.SegmentsConfig
) -> dict[tuple[str, str], int]:
    counted = dict(
        ((segment_type, segment), n)
        for segment_type, segment, n in con.execute(
            f"select segment_type, segment, count(*) from {SCHEMA}.customer_segments group by all"
        ).fetchall()
    )
    configured = [("rfm", s.name) for s in rfm.segments] + [
        ("rule", s.name) for s in segments.segments
    ]
    return {key: counted.get(key, 0) for key in configured}


def _changes(con: duckdb.DuckDBPyConnection, as_of: dt.datetime, change: str) -> dict[str, int]:
    return dict(
        con.execute(
            f"select segment, count(*) from {SCHEMA}.segment_history "
            "where as_of = ? and change = ? group by segment",
            [as_of, change],
        ).fetchall()
    )


def rfm_distribution(con: duckdb.DuckDBPyConnection) -> list[tuple[int, int, int]]:
    """(r_score, f_score, customers) over purchasers, for the R×F heat table."""
    return con.execute(
        f"""
        select cast(r_score as int), cast(f_score as int), count(*)
        from {FEATURES} where r_score is not null group by all order by 1 desc, 2
        """
    ).fetchall()


def purchasers_without_one_rfm_segment(con: duckdb.DuckDBPyConnection) -> int:
    """Purchasers (frequency > 0) with zero or several RFM segments: must be 0."""
    return con.execute(
        f"""
        select count(*) from (
            select f.customer_key, count(s.segment) as n
            from {FEATURES} f
            left join {SCHEMA}.customer_segments s
                on s.customer_key = f.customer_key and s.segment_type = 'rfm'
            where f.frequency > 0
            group by f.customer_key
        ) where n != 1
        """
    ).fetchone()[0]
