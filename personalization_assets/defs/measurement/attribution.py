"""Attribution of email responses to sends, one row per (campaign, recipient). No Dagster imports.

Rules (documented in the README):
- a *send* is the first `email_send` event of a (campaign, customer); its variant is the send's;
- opens and clicks count once per recipient (duplicates collapse), only at or after the send;
  opens/clicks of campaigns with no recorded send to that customer are excluded and counted;
- a *conversion* is a purchase order within `window_days` after the recipient's first open or
  click of the campaign; revenue is the net value of those orders;
- bot-like bursts: a recipient with more than `max_clicks_per_minute` clicks of one campaign in a
  minute has their clicks excluded (counted), keeping their send in the denominator.
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
        with sends as (
            select campaign_id, customer_id, min(event_ts) as sent_at, arg_min(variant, event_ts) as variant
            from main.fct_events where event_type = 'email_send' and campaign_id is not null
            group by all
        ),
        bursts as (
            select campaign_id, customer_id
            from main.fct_events where event_type = 'email_click'
            group by campaign_id, customer_id, date_trunc('minute', event_ts)
            having count(*) > {int(max_clicks_per_minute)}
        ),
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
