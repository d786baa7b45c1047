"""Attribution of email responses to sends, one row per (campaign, recipient). No Dagster imports.

Rules (documented in the README):
- a *send* is the first `email_send` event of a (campaign, customer); its variant is the send's;
- opens and clicks count once per recipient (duplicates collapse), only at or after the send;
  opens/clicks of campaigns with no recorded send to that customer are excluded and counted;
- a *conversion* is a purchase order within `window_days` after the recipient's first open or
  click of the campaign; revenue is the net value of those orders;
- bot-like bursts: a recipient with more than `max_clicks_per_minute` clicks of one campaign in a
  minute has their clicks excluded (counted), keeping their send in the denominator.

Holdout comparisons use the *assignment record* instead (`assignment_outcomes`): every assigned
customer, holdout included, with intent-to-treat outcomes (orders in the window after
`assigned_at`, whatever the email did). Only conversions and revenue are comparable with a
holdout; opens and clicks are structurally zero there.
"""

from __future__ import annotations

import duckdb
import pandas as pd


def recipient_outcomes(
    con: duckdb.DuckDBPyConnection, *, window_days: int, max_clicks_per_minute: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per (campaign_id, customer_id, variant) with sent/delivered/opened/clicked/converted/revenue."""
    frame = con.execute(
        f"""
        with {_sends_and_bursts_sql(max_clicks_per_minute)},
        responses as (
            select s.campaign_id, s.customer_id,
                   min(case when e.event_type = 'email_open' then e.event_ts end) as first_open,
                   min(case when e.event_type = 'email_click'
                            and not exists (select 1 from bursts b where b.campaign_id = s.campaign_id
                                            and b.customer_id = s.customer_id)
                            then e.event_ts end) as first_click
            from sends s
            join main.fct_events e
              on e.campaign_id = s.campaign_id and e.customer_id = s.customer_id
             and e.event_type in ('email_open', 'email_click') and e.event_ts >= s.sent_at
            group by all
        ),
        conversions as (
            select r.campaign_id, r.customer_id, count(o.order_id) as orders, sum(o.net_amount_base) as revenue
            from responses r
            join main.fct_orders o
              on o.customer_id = r.customer_id and not o.is_cancellation
             and o.ordered_at >= least(coalesce(r.first_open, r.first_click), coalesce(r.first_click, r.first_open))
             and o.ordered_at < least(coalesce(r.first_open, r.first_click), coalesce(r.first_click, r.first_open))
                 + interval {int(window_days)} day
            group by all
        )
        select s.campaign_id, s.customer_id, coalesce(s.variant, 'none') as variant,
               1 as sent, 1 as delivered,
               (r.first_open is not null or r.first_click is not null)::int as opened,
               (r.first_click is not null)::int as clicked,
               (coalesce(c.orders, 0) > 0)::int as converted,
               coalesce(c.revenue, 0.0) as revenue
        from sends s
        left join responses r using (campaign_id, customer_id)
        left join conversions c using (campaign_id, customer_id)
        order by 1, 2
        """
    ).df()
    excluded = con.execute(
        """
        select
            (select count(*) from main.fct_events e where e.event_type in ('email_open', 'email_click')
               and not exists (select 1 from main.fct_events s where s.event_type = 'email_send'
                               and s.campaign_id = e.campaign_id and s.customer_id = e.customer_id
                               and s.event_ts <= e.event_ts)) as responses_without_send
        """
    ).fetchall()[0]
    return frame, {"responses_without_prior_send": int(excluded[0])}


HOLDOUT = "holdout"
ASSIGNMENTS_MODEL = "main.stg_experiments__assignments"
DECISIONS_TABLE = "campaigns.campaign_decisions"


def _table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    schema, name = qualified.split(".")
    rows = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchall()
    return rows[0][0] > 0


def _has_column(con: duckdb.DuckDBPyConnection, qualified: str, column: str) -> bool:
    schema, name = qualified.split(".")
    rows = con.execute(
        "select count(*) from information_schema.columns "
        "where table_schema = ? and table_name = ? and column_name = ?",
        [schema, name, column],
    ).fetchall()
    return rows[0][0] > 0


def _assignment_rows_sql(con: duckdb.DuckDBPyConnection) -> str:
    """Both sources of the assignment record, as (campaign, customer, arm, assigned_at, share, source)."""
    parts = []
    if _table_exists(con, ASSIGNMENTS_MODEL):
        parts.append(
            f"""select campaign_id, customer_id, variant as arm, assigned_at, planned_share,
                       'landing' as source
                from {ASSIGNMENTS_MODEL} where reject_reason is null"""
        )
    if _table_exists(con, DECISIONS_TABLE):
        share = "planned_share" if _has_column(con, DECISIONS_TABLE, "planned_share") else "null"
        parts.append(
            f"""select campaign_id, customer_id,
                       case when status = 'holdout' then '{HOLDOUT}' else variant end as arm,
                       clock as assigned_at, cast({share} as double) as planned_share,
                       'engine' as source
                from {DECISIONS_TABLE} where status in ('send', 'capped', 'holdout')"""
        )
    if not parts:
        return (
            "select null::varchar as campaign_id, null::varchar as customer_id, "
            "null::varchar as arm, null::timestamp as assigned_at, null::double as planned_share, "
            "null::varchar as source where false"
        )
    return "\nunion all\n".join(parts)


def assignment_outcomes(
    con: duckdb.DuckDBPyConnection, *, window_days: int, max_clicks_per_minute: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per assigned (campaign_id, customer_id): arm, sends/opens/clicks and ITT outcomes.

    The *assignment record* is the union of the landing export `experiments/assignments*.csv`
    (staged by dbt, bad rows quarantined) and the engine's own `campaign_decisions` (statuses
    send, capped and holdout; assigned at the decision clock). A customer's first assignment to
    a campaign is the one that counts. Outcomes are intent-to-treat: `converted`/`revenue`
    count non-cancelled orders in `[assigned_at, assigned_at + window_days)` whatever the
    email did, for every arm alike, so the holdout (which received nothing) is comparable.
    `sent`/`opened`/`clicked` follow the send rules of `recipient_outcomes` and are zero for a
    clean holdout. Rows whose window has not closed by the latest observed event or order carry
    `window_complete = false` (the asset leaves them out and counts them).
    """
    window = int(window_days)
    frame = con.execute(
        f"""
        with assignment_rows as ({_assignment_rows_sql(con)}),
        assignments as (
            select campaign_id, customer_id,
                   arg_min(arm, assigned_at) as arm, min(assigned_at) as assigned_at,
                   arg_min(planned_share, assigned_at) as planned_share,
                   arg_min(source, assigned_at) as source
            from assignment_rows group by campaign_id, customer_id
        ),
        {_sends_and_bursts_sql(max_clicks_per_minute)},
        responses as (
            select s.campaign_id, s.customer_id,
                   min(case when e.event_type = 'email_open' then e.event_ts end) as first_open,
                   min(case when e.event_type = 'email_click' and b.customer_id is null
                            then e.event_ts end) as first_click
            from sends s
            join main.fct_events e
              on e.campaign_id = s.campaign_id and e.customer_id = s.customer_id
             and e.event_type in ('email_open', 'email_click') and e.event_ts >= s.sent_at
            left join bursts b
              on b.campaign_id = s.campaign_id and b.customer_id = s.customer_id
            group by all
        ),
        itt as (
            select a.campaign_id, a.customer_id, count(o.order_id) as orders,
                   sum(o.net_amount_base) as revenue
            from assignments a
            join main.fct_orders o
              on o.customer_id = a.customer_id and not o.is_cancellation
             and o.ordered_at >= a.assigned_at
             and o.ordered_at < a.assigned_at + interval {window} day
            group by all
        ),
        horizon as (
            select greatest(
                (select max(event_ts) from main.fct_events),
                (select max(ordered_at) from main.fct_orders)) as observed_until
        )
        select a.campaign_id, a.customer_id, a.arm as variant, a.assigned_at, a.planned_share,
               a.source,
               (s.sent_at is not null)::int as sent,
               (s.sent_at is not null)::int as delivered,
               (r.first_open is not null or r.first_click is not null)::int as opened,
               (r.first_click is not null)::int as clicked,
               (coalesce(i.orders, 0) > 0)::int as converted,
               coalesce(i.revenue, 0.0) as revenue,
               coalesce(a.assigned_at + interval {window} day <= h.observed_until, false)
                   as window_complete,
               s.variant as sent_variant
        from assignments a
        cross join horizon h
        left join sends s using (campaign_id, customer_id)
        left join responses r using (campaign_id, customer_id)
        left join itt i using (campaign_id, customer_id)
        order by 1, 2
        """
    ).df()
    unassigned = con.execute(
        f"""
        with assigned_campaigns as (
            select distinct campaign_id from ({_assignment_rows_sql(con)})
        ),
        assignments as (select distinct campaign_id, customer_id from ({_assignment_rows_sql(con)}))
        select count(distinct (e.campaign_id, e.customer_id))
        from main.fct_events e
        join assigned_campaigns using (campaign_id)
        left join assignments a using (campaign_id, customer_id)
        where e.event_type = 'email_send' and a.customer_id is null
        """
    ).fetchall()[0][0]
    holdout = frame["variant"] == HOLDOUT
    counts = {
        "sends_without_assignment": int(unassigned),
        "holdout_members_sent_an_email": int((holdout & (frame["sent"] == 1)).sum()),
        "sends_in_another_variant": int(
            (
                ~holdout
                & frame["sent_variant"].notna()
                & (frame["sent_variant"] != frame["variant"])
            ).sum()
        ),
        "assignments_window_open": int((~frame["window_complete"].astype(bool)).sum()),
    }
    return frame, counts


def _sends_and_bursts_sql(max_clicks_per_minute: int) -> str:
    """The `sends` and `bursts` CTEs both analyses share: a send is the first `email_send` of a
    (campaign, customer), carrying its variant; a burst is more than `max_clicks_per_minute`
    clicks of one campaign by one recipient within a minute (a bot)."""
    return f"""sends as (
            select campaign_id, customer_id, min(event_ts) as sent_at,
                   arg_min(variant, event_ts) as variant
            from main.fct_events where event_type = 'email_send' and campaign_id is not null
            group by all
        ),
        bursts as (
            select distinct campaign_id, customer_id
            from main.fct_events where event_type = 'email_click'
            group by campaign_id, customer_id, date_trunc('minute', event_ts)
            having count(*) > {int(max_clicks_per_minute)}
        )"""
