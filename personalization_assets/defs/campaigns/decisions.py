"""Who gets which campaign, with which content and variant — or why not. No Dagster imports.

For one send date and an explicit clock (so runs are testable and backfillable), every
candidate a trigger produces ends in exactly one recorded state in `campaigns.campaign_decisions`:

    send          eligible, a decision rule matched, assigned a variant, within the frequency cap
    holdout       eligible and matched, but in the campaign's holdout: recorded, never emailed
    excluded      no email consent, unsubscribed, opted out of the campaign's subscription group
                  (`group_opt_out`), suppressed, or no valid email address
    capped        would exceed the cross-campaign frequency cap (campaigns by priority)
    no_rule       no decision rule matched
    already_sent  this trigger (e.g. this abandoned cart) was already emailed on an earlier date

Assignment is a deterministic hash of (campaign, customer): stable across reruns and backfills.
Re-running a send date replaces that date's rows, so decisions never duplicate.

This is the layer that re-identifies: features, segments and scores are keyed by the
pseudonymous `customer_key`; decisions join them to customer ids through the restricted
`main.customer_keys` (ledger, consent and links need the id), and contacts only at render time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from personalization_assets.defs.campaigns import rollout
from personalization_assets.defs.campaigns.config import Campaign, CampaignsConfig, group_purpose
from personalization_assets.defs.campaigns.rollout import rollout_bucket_sql
from personalization_assets.defs.models.lifecycle import PROFILE_VIEW, ensure_customer_profile
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.segments import rules
from personalization_assets.defs.warehouse.summary import table_exists
from personalization_assets.settings import MeasurementSettings

SCHEMA = "campaigns"
# customer_features + lifecycle predictions, keyed by customer_key in the analytics layers and
# re-identified here (the campaign layer decides per customer id) through `customer_keys`.
FEATURES = pseudonym.reidentified_sql(PROFILE_VIEW)
EVENTS = "main.fct_events"
DECISIONS_DDL = f"""
create table if not exists {SCHEMA}.campaign_decisions (
    send_date date, campaign_id varchar, customer_id varchar, status varchar, reason varchar,
    rule varchar, template varchar, variant varchar, trigger_key varchar, trigger_product_id varchar,
    idempotency_key varchar, clock timestamp, decided_at timestamp, planned_share double)
"""
SUPPRESSIONS_DDL = f"""
create table if not exists {SCHEMA}.suppressions (
    customer_id varchar, email varchar, reason varchar, suppressed_at timestamp)
"""


@dataclass(frozen=True)
class DecisionSummary:
    send_date: dt.date
    clock: dt.datetime
    counts: dict[tuple[str, str], int]  # (campaign_id, status) → customers


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"create schema if not exists {SCHEMA}")
    con.execute(DECISIONS_DDL)
    con.execute(ROLLOUT_DDL)
    # Warehouses built before planned shares were recorded (the SRM check of the holdout needs them).
    con.execute(
        f"alter table {SCHEMA}.campaign_decisions add column if not exists planned_share double"
    )
    con.execute(SUPPRESSIONS_DDL)


def bucket_sql(key_sql: str) -> str:
    """A stable pseudo-uniform number in [0, 1) from a text key (md5, not DuckDB's `hash`)."""
    return f"((md5_number({key_sql}) % 1000000) / 1000000.0)"


def trigger_sql(campaign: Campaign) -> str:
    """Candidates `(customer_id, trigger_key, trigger_product_id)` for a campaign at `$clock`."""
    trigger = campaign.trigger
    if trigger.type == "batch":
        # A test-then-winner campaign is one send per customer, whatever the day.
        key = _literal(campaign.id) if campaign.rollout else "cast($send_date as varchar)"
        return (
            f"select customer_id, {key} as trigger_key, null as trigger_product_id from {FEATURES}"
        )
    if trigger.type == "cart_abandonment":
        return f"""
            select carts.customer_id,
                   arg_max(carts.event_id, carts.event_ts) as trigger_key,
                   arg_max(carts.product_id, carts.event_ts) as trigger_product_id
            from {EVENTS} as carts
            where carts.event_type = 'add_to_cart'
              and carts.event_ts <= $clock - interval {int(trigger.wait_minutes)} minute
              and carts.event_ts > $clock - interval {int(trigger.lookback_hours)} hour
              and not exists (
                  select 1 from {EVENTS} as later
                  where later.customer_id = carts.customer_id
                    and later.event_type in ('checkout', 'purchase')
                    and later.event_ts > carts.event_ts and later.event_ts <= $clock)
            group by carts.customer_id
        """
    if trigger.type == "birthday":
        return f"""
            select customer_id, cast(year($clock) as varchar) as trigger_key, null as trigger_product_id
            from {FEATURES}
            where birthday_month = month(timezone(timezone, cast($clock as timestamptz)))
              and birthday_day = day(timezone(timezone, cast($clock as timestamptz)))
        """
    if trigger.type == "win_back":
        return f"""
            select customer_id, cast(last_purchase_at as varchar) as trigger_key, null as trigger_product_id
            from {FEATURES}
            where recency_days >= {int(trigger.days_since_purchase)}
        """
    return f"""
        select customer_id,
               coalesce(cast(round(days_since_last_open) as varchar), 'never') || ':' || cast($send_date as varchar)
                   as trigger_key,
               null as trigger_product_id
        from {FEATURES}
        where emails_sent_90d > 0
          and (days_since_last_open > {int(trigger.dormant_days)} or days_since_last_open is null)
    """


# Segments are keyed by customer_key: membership of a candidate (by id) goes through the mapping.
_SEGMENT_MEMBERS = (
    f"from segments.customer_segments s join {pseudonym.KEYS_TABLE} k using (customer_key)"
)


def _audience_sql(campaign: Campaign) -> str:
    clauses = []
    for name in campaign.audience.include_segments:
        clauses.append(
            f"exists (select 1 {_SEGMENT_MEMBERS} where k.customer_id = c.customer_id "
            f"and s.segment = {_literal(name)})"
        )
    for name in campaign.audience.exclude_segments:
        clauses.append(
            f"not exists (select 1 {_SEGMENT_MEMBERS} where k.customer_id = c.customer_id "
            f"and s.segment = {_literal(name)})"
        )
    return " and ".join(clauses) or "true"


def _rule_case(campaign: Campaign) -> tuple[str, str]:
    """CASE expressions naming the first matching rule and its template."""
    rule_branches, template_branches = [], []
    for rule in campaign.decision_rules:
        condition = rules.compile_rule(
            rules.parse_rule(rule.when),
            events_relation=EVENTS,
            features_alias="f",
            as_of_param="$clock",
            key_column="customer_id",
        )
        if rule.behavioral:
            condition = f"({condition}) and coalesce(f.tracking_consent, false)"
        rule_branches.append(f"when {condition} then {_literal(rule.name)}")
        template_branches.append(f"when {_literal(rule.name)} then {_literal(rule.template)}")
    return (
        "case " + " ".join(rule_branches) + " end",
        "case rule " + " ".join(template_branches) + " end",
    )


def _variant_case(campaign: Campaign, bucket: str) -> str:
    holdout = campaign.holdout_fraction
    branches = [f"when {bucket} < {holdout!r} then 'holdout'"] if holdout > 0 else []
    cumulative = holdout
    for variant in campaign.variants[:-1]:
        cumulative += (1 - holdout) * variant.weight
        branches.append(f"when {bucket} < {cumulative!r} then {_literal(variant.name)}")
    last = _literal(campaign.variants[-1].name)
    if not branches:
        return last
    return "case " + " ".join(branches) + f" else {last} end"


def _planned_share_case(campaign: Campaign, bucket: str) -> str:
    """The share of the audience the arm a customer falls in was planned to get."""
    holdout = campaign.holdout_fraction
    branches = [f"when 'holdout' then {holdout!r}"] + [
        f"when {_literal(v.name)} then {(1 - holdout) * v.weight!r}" for v in campaign.variants
    ]
    return f"case {_variant_case(campaign, bucket)} " + " ".join(branches) + " end"


def _rollout_variant_sql(campaign: Campaign, variant: str, winner: str | None) -> str:
    """Test phase: the A/B split; remainder: the winner once decided, else `awaiting_winner`."""
    spec = campaign.rollout
    in_test = (
        f"{rollout_bucket_sql(_literal(campaign.id), 'c.customer_id')} < {spec.test_fraction!r}"
    )
    remainder = _literal(winner) if winner else "'awaiting_winner'"
    return f"case when {in_test} then {variant} else {remainder} end"


def _campaign_candidates_sql(campaign: Campaign, winner: str | None = None) -> str:
    rule_case, template_case = _rule_case(campaign)
    key = f"{_literal(campaign.id + ':')} || c.customer_id"
    variant = _variant_case(campaign, bucket_sql(key))
    if campaign.rollout:
        variant = _rollout_variant_sql(campaign, variant, winner)
    return f"""
        select
            {_literal(campaign.id)} as campaign_id,
            {int(campaign.priority)} as priority,
            c.customer_id, c.trigger_key, c.trigger_product_id,
            rule, {template_case} as template,
            {variant} as variant,
            {_planned_share_case(campaign, bucket_sql(key))} as planned_share
        from (
            select c.*, {rule_case} as rule
            from ({trigger_sql(campaign)}) as c
            join {FEATURES} as f on f.customer_id = c.customer_id
            where {_audience_sql(campaign)}
        ) as c
    """


def build_decisions(
    con: duckdb.DuckDBPyConnection,
    config: CampaignsConfig,
    *,
    send_date: dt.date,
    clock: dt.datetime,
    measurement: MeasurementSettings | None = None,
) -> DecisionSummary:
    """Replace `campaign_decisions` rows of `send_date` with fresh decisions at `clock`."""
    ensure_tables(con)
    ensure_customer_profile(con)
    con.execute(f"delete from {SCHEMA}.campaign_decisions where send_date = ?", [send_date])
    campaigns = config.enabled
    if campaigns:
        cap = config.defaults.frequency_cap
        winners = decide_rollouts(
            con, campaigns, clock=clock, measurement=measurement or MeasurementSettings()
        )
        candidates = "\nunion all\n".join(
            _campaign_candidates_sql(c, winners.get(c.id)) for c in campaigns
        )
        con.execute(
            f"""
            insert into {SCHEMA}.campaign_decisions
            with candidates as ({candidates}),
            eligibility as (
                select
                    candidates.*,
                    case
                        {_consent_exclusion(con)}
                        when exists (select 1 from {SCHEMA}.suppressions s
                                     where s.customer_id = candidates.customer_id
                                        or s.email = contacts.email) then 'suppressed'
                        when contacts.email is null then 'no_email_address'
                    end as exclusion,
                    exists (
                        select 1 from {SCHEMA}.campaign_decisions earlier
                        where earlier.campaign_id = candidates.campaign_id
                          and earlier.customer_id = candidates.customer_id
                          and earlier.trigger_key = candidates.trigger_key
                          and earlier.status = 'send'
                          and earlier.send_date < $send_date
                    ) as already_sent
                from candidates
                join {FEATURES} f on f.customer_id = candidates.customer_id
                left join main.dim_customer_contacts contacts
                    on contacts.customer_id = candidates.customer_id
                {_consent_join(con, config, campaigns)}
            ),
            prior_sends as (
                select customer_id, count(*) as sends
                from (
                    select customer_id, send_date from {SCHEMA}.campaign_decisions
                    where status = 'send'
                    {_journey_sends(con)}
                ) as sent
                where send_date < $send_date
                  and send_date > $send_date - interval {int(cap.per_days)} day
                group by customer_id
            ),
            ranked as (
                select
                    eligibility.*,
                    case
                        when exclusion is null and not already_sent and rule is not null
                             and variant not in ('holdout', 'awaiting_winner')
                        then row_number() over (
                            partition by eligibility.customer_id,
                                exclusion is null and not already_sent and rule is not null
                                and variant not in ('holdout', 'awaiting_winner')
                            order by priority, campaign_id)
                    end as send_rank
                from eligibility
            )
            select
                $send_date as send_date,
                ranked.campaign_id,
                ranked.customer_id,
                case
                    when exclusion is not null then 'excluded'
                    when already_sent then 'already_sent'
                    when rule is null then 'no_rule'
                    when variant = 'holdout' then 'holdout'
                    when variant = 'awaiting_winner' then 'awaiting_winner'
                    when coalesce(prior_sends.sends, 0) + send_rank > {int(cap.max_emails)} then 'capped'
                    else 'send'
                end as status,
                exclusion as reason,
                rule,
                template,
                variant,
                trigger_key,
                trigger_product_id,
                md5(ranked.campaign_id || '|' || ranked.customer_id || '|' || cast($send_date as varchar))
                    as idempotency_key,
                $clock as clock,
                now()::timestamp as decided_at,
                ranked.planned_share
            from ranked
            left join prior_sends on prior_sends.customer_id = ranked.customer_id
            """,
            {"send_date": send_date, "clock": clock},
        )
    counts = {
        (campaign_id, status): n
        for campaign_id, status, n in con.execute(
            f"select campaign_id, status, count(*) from {SCHEMA}.campaign_decisions "
            "where send_date = ? group by all",
            [send_date],
        ).fetchall()
    }
    return DecisionSummary(send_date=send_date, clock=clock, counts=counts)


ROLLOUT_DDL = f"""
create table if not exists {SCHEMA}.rollout_decisions (
    campaign_id varchar primary key, winner varchar, reason varchar, decided_at timestamp,
    decision_json varchar)
"""


def decide_rollouts(
    con: duckdb.DuckDBPyConnection,
    campaigns: list[Campaign],
    *,
    clock: dt.datetime,
    measurement: MeasurementSettings,
) -> dict[str, str]:
    """campaign id → winner for every test-then-winner campaign decided by `clock`.

    The test phase starts with the campaign's first `send` decision. Once `wait_hours` have
    passed, the test recipients' responses (attribution rules of the measurement group) decide
    the winner (`rollout.decide_winner`), recorded once in `campaigns.rollout_decisions` and
    never re-decided: a rerun or backfill reads the recorded decision.
    """
    winners: dict[str, str] = {}
    for campaign in [c for c in campaigns if c.rollout]:
        recorded = con.execute(
            f"select decision_json from {SCHEMA}.rollout_decisions where campaign_id = ?",
            [campaign.id],
        ).fetchall()
        if recorded:
            winners[campaign.id] = rollout.RolloutDecision.from_json(recorded[0][0]).winner
            continue
        started = con.execute(
            f"""select min(clock) from {SCHEMA}.campaign_decisions
                where campaign_id = ? and status = 'send'""",
            [campaign.id],
        ).fetchall()[0][0]
        if started is None:
            continue
        decision = rollout.decide_winner(
            campaign.id,
            _test_phase_results(con, campaign, measurement),
            campaign.rollout,
            test_started=started,
            now=clock,
        )
        if decision is None:
            continue
        con.execute(
            f"insert into {SCHEMA}.rollout_decisions values (?, ?, ?, ?, ?) on conflict do nothing",
            [campaign.id, decision.winner, decision.reason, clock, decision.to_json()],
        )
        winners[campaign.id] = decision.winner
    return winners


def _test_phase_results(
    con: duckdb.DuckDBPyConnection, campaign: Campaign, measurement: MeasurementSettings
):
    """One row per test-phase recipient: variant, delivered, opened, clicked, converted, revenue."""
    from personalization_assets.defs.measurement.attribution import recipient_outcomes

    outcomes, _ = recipient_outcomes(
        con,
        window_days=measurement.attribution_window_days,
        max_clicks_per_minute=measurement.max_clicks_per_minute,
    )
    sent = {
        row[0]
        for row in con.execute(
            f"""select customer_id from {SCHEMA}.campaign_decisions
                where campaign_id = ? and status = 'send'""",
            [campaign.id],
        ).fetchall()
    }
    frame = outcomes[(outcomes["campaign_id"] == campaign.id) & outcomes["customer_id"].isin(sent)]
    return frame.reset_index(drop=True)


def _has_consent_ledger(con: duckdb.DuckDBPyConnection) -> bool:
    return table_exists(con, "main", "dim_consent")


def _consent_join(
    con: duckdb.DuckDBPyConnection, config: CampaignsConfig, campaigns: list[Campaign]
) -> str:
    """The ledger's email_marketing row and the row of the campaign's subscription group."""
    if not _has_consent_ledger(con):
        return ""
    purposes = " ".join(
        f"when {_literal(c.id)} then {_literal(group_purpose(config.group_of(c)))}"
        for c in campaigns
    )
    return f"""left join main.dim_consent consent
                    on consent.customer_id = candidates.customer_id
                   and consent.purpose = 'email_marketing'
                left join main.dim_consent group_consent
                    on group_consent.customer_id = candidates.customer_id
                   and group_consent.purpose = case candidates.campaign_id {purposes} end"""


def _consent_exclusion(con: duckdb.DuckDBPyConnection) -> str:
    """Email consent from the consent ledger (latest statement wins; none = no consent), then the
    campaign's subscription group (opt-out: only a revoking row excludes); or the CRM flags where
    the ledger is not built (hand-made warehouses)."""
    if not _has_consent_ledger(con):
        return """when not coalesce(f.email_consent, false) then 'no_email_consent'
                        when f.is_unsubscribed then 'unsubscribed'"""
    return """when not coalesce(consent.granted, false) then
                            case when consent.source = 'unsubscribe_event' or f.is_unsubscribed
                                 then 'unsubscribed' else 'no_email_consent' end
                        when not coalesce(group_consent.granted, true) then 'group_opt_out'"""


def _journey_sends(con: duckdb.DuckDBPyConnection) -> str:
    """Journey emails count towards the frequency cap like campaign sends (when journeys ran)."""
    if not table_exists(con, "delivery", "journey_payloads"):
        return ""
    return "union all select customer_id, send_date from delivery.journey_payloads"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
