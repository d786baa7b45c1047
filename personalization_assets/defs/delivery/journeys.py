"""Journeys: multi-step email sequences, advanced at an explicit clock. No Dagster imports.

Each customer's place in a journey is one row of `delivery.journey_state` (an *instance*: journey,
customer, entry key = the trigger that started it, e.g. the abandoned cart's event id), with every
move logged in `delivery.journey_history`. `advance_journeys(clock)` does, per enabled journey:

1. **Goal**: an active instance whose customer did the goal event after entering (up to `clock`)
   ends `converted`; nothing more is sent to it. This runs first, every time.
2. **Entry**: the entry trigger (the campaign trigger kinds, at `clock`) starts new instances,
   subject to the audience and the re-entry policy: the same trigger never enters twice;
   `after_exit` lets a new trigger enter once the customer has no active instance and
   `cooldown_hours` have passed since their last entry; `never` allows one instance per customer.
3. **Steps**, repeated until nothing moves. Each instance carries `step_at`, the moment it reached
   its step; times derive from it, not from when the schedule happened to run, so a run every 15
   minutes gives the same history as one exactly on time:
   - `send` renders the template for the customer (same renderer and context as campaigns) into
     `delivery.journey_payloads` with `send_at = step_at` (or, with a `schedule`, the next
     recipient-local slot after it) and moves on; delivery sends it.
     A customer no longer eligible (consent, unsubscribed, opted out of the journey's
     subscription group, suppressed, no address) exits `ineligible`.
   - `wait` moves on at `step_at + delay` once the clock has reached it.
   - `wait_for` moves to `then` at the event's time if the customer did the event within the
     timeout, else to `timeout_then` at `step_at + timeout`.
   - `branch` takes the first case that holds at `step_at` (segment membership now, an event since
     entering or within `within_hours`, a feature rule), else `otherwise`.
   Reaching `exit` (or the end of the list) ends the instance `completed`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from personalization_assets.defs.campaigns import decisions, timing
from personalization_assets.defs.campaigns.config import (
    EXIT,
    CampaignsConfig,
    Journey,
    JourneyStep,
    group_purpose,
)
from personalization_assets.defs.campaigns.decisions import _audience_sql, trigger_sql
from personalization_assets.defs.campaigns.payloads import build_context, product_lists_sql
from personalization_assets.defs.campaigns.rendering import EmailRenderer, TemplateRenderError
from personalization_assets.defs.campaigns.timing import ScheduleSpec
from personalization_assets.defs.delivery import ledger
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.segments import rules
from personalization_assets.defs.warehouse.summary import table_exists

STATE = f"{ledger.SCHEMA}.journey_state"
HISTORY = f"{ledger.SCHEMA}.journey_history"
EVENTS = "main.fct_events"
STATE_DDL = f"""
create table if not exists {STATE} (
    journey_id varchar, customer_id varchar, entry_key varchar, trigger_product_id varchar,
    entered_at timestamp, current_step varchar, step_at timestamp, status varchar,
    exit_reason varchar, exited_at timestamp, updated_at timestamp)
"""
HISTORY_DDL = f"""
create table if not exists {HISTORY} (
    journey_id varchar, customer_id varchar, entry_key varchar, step_id varchar, action varchar,
    target varchar, happened_at timestamp, idempotency_key varchar, recorded_at timestamp)
"""


@dataclass
class JourneySummary:
    clock: dt.datetime
    entered: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    sends: dict[tuple[str, str], int] = field(default_factory=dict)  # (journey, step) → payloads
    render_errors: dict[str, str] = field(default_factory=dict)
    states: dict[tuple[str, str], int] = field(default_factory=dict)  # (journey, status) → n


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    ledger.ensure_tables(con)
    con.execute(STATE_DDL)
    con.execute(HISTORY_DDL)


def advance_journeys(
    con: duckdb.DuckDBPyConnection,
    config: CampaignsConfig,
    renderer: EmailRenderer,
    *,
    clock: dt.datetime,
) -> JourneySummary:
    ensure_tables(con)
    summary = JourneySummary(clock=clock)
    for journey in (j for j in config.journeys if j.enabled):
        runner = _JourneyRunner(con, journey, clock, renderer, config.defaults.base_url, summary)
        if table_exists(con, "main", "dim_consent"):
            runner.group_purpose = group_purpose(config.group_of(journey))
        runner.goal_exits()
        runner.enter()
        runner.advance()
    summary.states = {
        (j, s): n
        for j, s, n in con.execute(
            f"select journey_id, status, count(*) from {STATE} group by all"
        ).fetchall()
    }
    return summary


class _JourneyRunner:
    def __init__(self, con, journey: Journey, clock, renderer, base_url, summary) -> None:
        self.con = con
        self.journey = journey
        self.clock = clock
        self.renderer = renderer
        self.base_url = base_url
        self.summary = summary
        self.params = {"journey": journey.id, "clock": clock}
        self.group_purpose: str | None = None  # the consent ledger's row for the journey's group

    def goal_exits(self) -> None:
        if self.journey.goal is None:
            return
        event = _literal(self.journey.goal.event)
        converted_at = (
            f"(select min(e.event_ts) from {EVENTS} e where e.customer_id = s.customer_id "
            f"and e.event_type = {event} and e.event_ts > s.entered_at and e.event_ts <= $clock)"
        )
        self._log(
            "s.current_step", "'converted'", "null", converted_at, f"{converted_at} is not null"
        )
        self.summary.converted[self.journey.id] = self._update(
            f"status = 'converted', exit_reason = 'goal: ' || {event}, exited_at = {converted_at}",
            f"{converted_at} is not null",
        )

    def enter(self) -> None:
        journey = self.journey
        first = journey.steps[0].id
        spec = SimpleNamespace(trigger=journey.entry, audience=journey.audience)
        policy = journey.re_entry
        # Triggers read `decisions.FEATURES`, which decisions may prepare as a view first.
        prepare = getattr(decisions, "ensure_customer_profile", None)
        if prepare is not None:
            prepare(self.con)
        earlier = f"from {STATE} p where p.journey_id = $journey and p.customer_id = c.customer_id"
        clauses = [
            f"not exists (select 1 {earlier} and p.entry_key = c.trigger_key)",
            f"not exists (select 1 {earlier} and p.status = 'active')",
        ]
        if policy.policy == "never":
            clauses.append(f"not exists (select 1 {earlier})")
        if policy.cooldown_hours:
            clauses.append(
                f"not exists (select 1 {earlier} and p.entered_at > "
                f"$clock - interval {int(policy.cooldown_hours)} hour)"
            )
        entry_sql = f"""
            insert into {STATE}
            select $journey, c.customer_id, c.trigger_key, c.trigger_product_id, $clock,
                   {_literal(first)}, $clock, 'active', null, null, $clock
            from ({trigger_sql(spec)}) as c
            where {_audience_sql(spec)} and {" and ".join(clauses)}
            """
        self.summary.entered[journey.id] = self.con.execute(
            entry_sql,
            _used({**self.params, "send_date": self.clock.date()}, entry_sql),
        ).fetchall()[0][0]
        self.con.execute(
            f"""
            insert into {HISTORY}
            select journey_id, customer_id, entry_key, null, 'entered', current_step, entered_at,
                   null, $clock
            from {STATE} where journey_id = $journey and entered_at = $clock and status = 'active'
              and not exists (select 1 from {HISTORY} h where h.journey_id = {STATE}.journey_id
                              and h.customer_id = {STATE}.customer_id
                              and h.entry_key = {STATE}.entry_key and h.action = 'entered')
            """,
            self.params,
        )

    def advance(self) -> None:
        for _ in range(2 * len(self.journey.steps) + 2):
            moved = sum(self._step(step) for step in self.journey.steps)
            self._finish()
            if not moved:
                return

    def _step(self, step: JourneyStep) -> int:
        here = f"s.current_step = {_literal(step.id)}"
        following = self.journey.following(step.id)
        if step.wait is not None:
            due = f"s.step_at + interval {step.wait.total_minutes} minute"
            return self._move(step, "waited", following, due, f"{here} and {due} <= $clock")
        if step.wait_for is not None:
            wait = step.wait_for
            deadline = f"s.step_at + interval {wait.timeout.total_minutes} minute"
            happened = (
                f"(select min(e.event_ts) from {EVENTS} e where e.customer_id = s.customer_id "
                f"and e.event_type = {_literal(wait.event)} and e.event_ts > s.step_at "
                f"and e.event_ts <= least($clock, {deadline}))"
            )
            moved = self._move(
                step,
                "event",
                wait.then or following,
                happened,
                f"{here} and {happened} is not null",
            )
            return moved + self._move(
                step,
                "timeout",
                wait.timeout_then or following,
                deadline,
                f"{here} and {deadline} <= $clock",
            )
        if step.branch is not None:
            moved = 0
            for number, case in enumerate(step.branch, start=1):
                moved += self._move(
                    step, f"case {number}", case.goto, "s.step_at", f"{here} and {self._case(case)}"
                )
            return moved + self._move(
                step, "otherwise", step.otherwise or following, "s.step_at", here
            )
        return self._send(step, following)

    def _case(self, case) -> str:
        if case.segment is not None:
            return (
                "exists (select 1 from segments.customer_segments seg "
                f"join {pseudonym.KEYS_TABLE} k using (customer_key) "
                f"where k.customer_id = s.customer_id and seg.segment = {_literal(case.segment)})"
            )
        if case.event is not None:
            since = (
                f"s.step_at - interval {int(case.within_hours)} hour"
                if case.within_hours
                else "s.entered_at"
            )
            return (
                f"exists (select 1 from {EVENTS} e where e.customer_id = s.customer_id and "
                f"e.event_type = {_literal(case.event)} and e.event_ts > {since} "
                "and e.event_ts <= s.step_at)"
            )
        condition = rules.compile_rule(
            rules.parse_rule(case.rule),
            events_relation=EVENTS,
            features_alias="f",
            as_of_param="s.step_at",
            key_column="customer_id",
        )
        return (
            f"exists (select 1 from {pseudonym.reidentified_sql('main.customer_features')} f "
            f"where f.customer_id = s.customer_id and {condition})"
        )

    def _send(self, step: JourneyStep, following: str) -> int:
        here = f"s.current_step = {_literal(step.id)}"
        reason = _ineligible_sql(self.group_purpose)
        self._log(
            _literal(step.id),
            "'ineligible'",
            "null",
            "s.step_at",
            f"{here} and {reason} is not null",
        )
        self._update(
            f"status = 'exited', exit_reason = 'ineligible: ' || {reason}, exited_at = s.step_at",
            f"{here} and {reason} is not null",
        )
        rows = self._send_rows(step)
        if not rows:
            return 0
        template = step.send.template
        contexts = [
            build_context(
                r, base_url=self.base_url, campaign_names={self.journey.id: self.journey.name}
            )
            for r in rows
        ]
        _schedule_rows(rows, step.send.schedule)
        records = []
        for row, result in zip(rows, self.renderer.render_many(template, contexts), strict=True):
            records.append(self._record(row, step, result))
            if isinstance(result, TemplateRenderError):
                self.summary.render_errors.setdefault(template, str(result))
        self.con.register("_journey_records", pa.Table.from_pylist(records))
        self.con.execute(
            f"insert into {ledger.JOURNEY_PAYLOADS} select * from _journey_records "
            "on conflict do nothing"
        )
        self.con.unregister("_journey_records")
        key = self._key_sql(step)
        moved = self._move(step, "sent", following, "s.step_at", here, idempotency_key=key)
        self.summary.sends[(self.journey.id, step.id)] = (
            self.summary.sends.get((self.journey.id, step.id), 0) + moved
        )
        return moved

    def _send_rows(self, step: JourneyStep) -> list[dict[str, Any]]:
        recs, similar = product_lists_sql(
            self.con, customer_key="keys.customer_key", product="s.trigger_product_id"
        )
        best_hour = (
            """(select p.best_local_hour from models.send_time_preferences p
                 where p.customer_key = keys.customer_key)"""
            if table_exists(self.con, "models", "send_time_preferences")
            else "null"
        )
        return (
            self.con.sql(
                f"""
                select {self._key_sql(step)} as idempotency_key, s.journey_id as campaign_id,
                       s.customer_id, 'A' as variant, {_literal(step.id)} as rule,
                       contacts.email, contacts.first_name, f.tracking_consent as behavioral_allowed,
                       case when s.trigger_product_id is not null then {similar} else {recs} end
                           as recommendations,
                       (select struct_pack(product_id := p.product_id, name := p.product_name,
                                           price := p.price, currency := p.currency,
                                           category := p.category)
                        from main.dim_products p where p.product_id = s.trigger_product_id)
                           as cart_product,
                       (select struct_pack(product_id := p.product_id, name := p.product_name)
                        from main.fct_order_lines l join main.dim_products p using (product_id)
                        where l.customer_id = s.customer_id and not l.is_cancellation
                        order by l.ordered_at desc limit 1) as recent_purchase,
                       s.step_at, customers.timezone, customers.country,
                       {best_hour} as best_local_hour
                from {STATE} s
                join {pseudonym.KEYS_TABLE} keys on keys.customer_id = s.customer_id
                join main.customer_features f on f.customer_key = keys.customer_key
                join main.dim_customer_contacts contacts on contacts.customer_id = s.customer_id
                left join main.dim_customers customers on customers.customer_id = s.customer_id
                where s.journey_id = $journey and s.status = 'active'
                  and s.current_step = {_literal(step.id)}
                order by s.customer_id
                """,
                params={"journey": self.journey.id},
            )
            .to_arrow_table()
            .to_pylist()
        )

    def _key_sql(self, step: JourneyStep) -> str:
        return f"md5(s.journey_id || '|' || s.customer_id || '|' || s.entry_key || '|' || {_literal(step.id)})"

    def _record(self, row: dict[str, Any], step: JourneyStep, result) -> dict[str, Any]:
        failed = isinstance(result, TemplateRenderError)
        return {
            "idempotency_key": row["idempotency_key"],
            "send_date": row["step_at"].date(),
            "campaign_id": self.journey.id,
            "customer_id": row["customer_id"],
            "variant": "A",
            "rule": step.id,
            "template": step.send.template,
            "to_address": row["email"],
            "subject": None if failed else result.subject,
            "preheader": None if failed else result.preheader,
            "html": None if failed else result.html,
            "text": None if failed else result.text,
            "headers": None if failed else json.dumps(result.headers, sort_keys=True),
            "model_versions": "{}",
            "status": "render_failed" if failed else "rendered",
            "error": str(result) if failed else None,
            "rendered_at": self.clock,
            "journey_id": self.journey.id,
            "step_id": step.id,
            "send_at": row["send_at"],
        }

    def _move(self, step, action, target, at_sql, condition, idempotency_key="null") -> int:
        self._log(
            _literal(step.id),
            _literal(action),
            _literal(target),
            at_sql,
            condition,
            idempotency_key,
        )
        return self._update(f"current_step = {_literal(target)}, step_at = {at_sql}", condition)

    def _finish(self) -> None:
        self._update(
            "status = 'completed', exit_reason = 'completed', exited_at = s.step_at",
            f"s.current_step = {_literal(EXIT)}",
        )

    def _log(self, step_sql, action_sql, target_sql, at_sql, condition, key_sql="null") -> None:
        self.con.execute(
            f"""
            insert into {HISTORY}
            select s.journey_id, s.customer_id, s.entry_key, {step_sql}, {action_sql},
                   {target_sql}, {at_sql}, {key_sql}, $clock
            from {STATE} s
            where s.journey_id = $journey and s.status = 'active' and ({condition})
            """,
            self.params,
        )

    def _update(self, assignments: str, condition: str) -> int:
        return self.con.execute(
            f"""
            update {STATE} as s set {assignments}, updated_at = $clock
            where s.journey_id = $journey and s.status = 'active' and ({condition})
            """,
            self.params,
        ).fetchall()[0][0]


def _schedule_rows(rows: list[dict[str, Any]], spec: ScheduleSpec | None) -> None:
    """Each row's `send_at`: the step's time, or the next local slot of the step's schedule
    after it (recipient zone, best hour, quiet hours; see campaigns/timing.py)."""
    if spec is None:
        for row in rows:
            row["send_at"] = row["step_at"]
        return
    frame = pd.DataFrame(rows).assign(campaign_id="step")
    for step_at, index in frame.groupby("step_at").groups.items():
        planned = timing.schedule_sends(frame.loc[index], {"step": spec}, step_at)
        for i, send_at in zip(index, planned, strict=True):
            rows[i]["send_at"] = send_at.to_pydatetime()


def _ineligible_sql(purpose: str | None = None) -> str:
    """Why the instance's customer may not be emailed now (null = eligible); as in decisions.
    `purpose`: a revoking ledger row for it (the journey's subscription group) excludes."""
    group = (
        f"""when exists (select 1 from main.dim_consent g where g.customer_id = s.customer_id
                     and g.purpose = {_literal(purpose)} and not g.granted) then 'group_opt_out'"""
        if purpose
        else ""
    )
    features = pseudonym.reidentified_sql("main.customer_features")
    return f"""(case
        when not coalesce((select f.email_consent from {features} f
                           where f.customer_id = s.customer_id), false) then 'no_email_consent'
        when coalesce((select f.is_unsubscribed from {features} f
                       where f.customer_id = s.customer_id), false) then 'unsubscribed'
        {group}
        when exists (select 1 from campaigns.suppressions sup
                     left join main.dim_customer_contacts c on c.customer_id = s.customer_id
                     where sup.customer_id = s.customer_id or sup.email = c.email) then 'suppressed'
        when (select c.email from main.dim_customer_contacts c
              where c.customer_id = s.customer_id) is null then 'no_email_address'
    end)"""


def _used(params: dict[str, Any], sql: str) -> dict[str, Any]:
    """DuckDB rejects named parameters a statement does not use."""
    return {k: v for k, v in params.items() if f"${k}" in sql}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
