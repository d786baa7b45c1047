"""Campaign definitions from `config/campaigns.yaml`, validated before any run. No Dagster imports.

Validation collects every problem (unknown segment, unknown or mistyped field in a rule, variant
weights not summing to 1, a template that does not exist, duplicate ids) and reports them all
with the campaign and rule named.

Subscription groups (`subscription_groups:`) are what a customer can opt out of one by one in the
preference centre; every campaign and journey belongs to one through its `category`. A campaign
or journey without `category` belongs to the first declared group; a file without
`subscription_groups` has the single group `marketing`. An unknown category fails at load time
with the campaign or journey named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from personalization_assets.contract import EVENT_TYPES
from personalization_assets.defs.campaigns.rollout import RolloutSpec
from personalization_assets.defs.campaigns.timing import ScheduleSpec
from personalization_assets.defs.segments import rules

TriggerType = Literal["batch", "cart_abandonment", "birthday", "win_back", "dormant"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trigger(_Strict):
    """When a campaign fires. Thresholds apply only to their trigger type."""

    type: TriggerType = "batch"
    wait_minutes: int = Field(60, ge=0, description="cart_abandonment: quiet time after the cart")
    lookback_hours: int = Field(48, gt=0, description="cart_abandonment: oldest cart considered")
    days_since_purchase: int = Field(180, gt=0, description="win_back: days without a purchase")
    dormant_days: int = Field(30, gt=0, description="dormant: days without an email open")


class Audience(_Strict):
    include_segments: list[str] = Field(default_factory=list)
    exclude_segments: list[str] = Field(default_factory=list)


class Variant(_Strict):
    name: str
    weight: float = Field(gt=0, le=1)


class DecisionRule(_Strict):
    name: str
    when: str
    template: str
    behavioral: bool = False


class SubscriptionGroup(_Strict):
    """A kind of email a customer can opt out of on its own (preference centre)."""

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    description: str = ""


DEFAULT_GROUPS = (SubscriptionGroup(id="marketing", name="Marketing emails"),)
GROUP_PURPOSE_PREFIX = "email_group:"


def group_purpose(group_id: str) -> str:
    """The consent ledger's purpose for one subscription group (`dim_consent.purpose`)."""
    return GROUP_PURPOSE_PREFIX + group_id


class Campaign(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    # Subscription group; None = the first group of `subscription_groups`.
    category: str | None = None
    priority: int = 100
    enabled: bool = True
    trigger: Trigger = Trigger()
    audience: Audience = Audience()
    holdout_fraction: float = Field(0.0, ge=0, lt=1)
    variants: list[Variant] = Field(min_length=1)
    decision_rules: list[DecisionRule] = Field(min_length=1)
    # When to deliver (recipient-local time, quiet hours, best hour); None = due at decision time.
    schedule: ScheduleSpec | None = None
    # A/B test-then-winner: variants to a test share, then the winner to everyone else.
    rollout: RolloutSpec | None = None


class FrequencyCap(_Strict):
    max_emails: int = Field(3, ge=1)
    per_days: int = Field(7, ge=1)


class Defaults(_Strict):
    frequency_cap: FrequencyCap = FrequencyCap()
    base_url: str = "https://shop.example.com"
    brand: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- journeys
# Multi-step sequences (`journeys:`); semantics in `defs/delivery/journeys.py`.

EXIT = "exit"
_STEP_ID = r"^[a-z0-9_]+$"


class Delay(_Strict):
    minutes: int = Field(0, ge=0)
    hours: int = Field(0, ge=0)
    days: int = Field(0, ge=0)

    @property
    def total_minutes(self) -> int:
        return self.minutes + 60 * self.hours + 1440 * self.days


class JourneySend(_Strict):
    template: str
    # Deliver at a recipient-local time / best hour, outside quiet hours; None = when reached.
    schedule: ScheduleSpec | None = None


class JourneyWaitFor(_Strict):
    """Wait until the customer does `event` (→ `then`), at most `timeout` (→ `timeout_then`)."""

    event: str
    timeout: Delay
    then: str | None = None
    timeout_then: str | None = None


class JourneyCase(_Strict):
    """One branch: exactly one of `segment` (member now), `event` (since entering, or within
    the last `within_hours`) or `rule` (rule language over customer features)."""

    segment: str | None = None
    event: str | None = None
    within_hours: int | None = Field(None, gt=0)
    rule: str | None = None
    goto: str


class JourneyStep(_Strict):
    """Exactly one of `send`, `wait`, `wait_for`, `branch`; then `next` (default: the step
    below; `exit` ends the journey)."""

    id: str = Field(pattern=_STEP_ID)
    send: JourneySend | None = None
    wait: Delay | None = None
    wait_for: JourneyWaitFor | None = None
    branch: list[JourneyCase] | None = None
    otherwise: str | None = None
    next: str | None = None

    @property
    def kind(self) -> str:
        given = [k for k in ("send", "wait", "wait_for", "branch") if getattr(self, k) is not None]
        return given[0] if len(given) == 1 else ""


class JourneyGoal(_Strict):
    event: str = "purchase"


class ReEntry(_Strict):
    """`never`: at most one journey per customer, ever. `after_exit`: a new entry (a new
    trigger, e.g. another abandoned cart) only once the previous one ended and `cooldown_hours`
    after the previous entry. The same trigger never enters twice."""

    policy: Literal["never", "after_exit"] = "after_exit"
    cooldown_hours: int = Field(0, ge=0)


class Journey(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    # Subscription group; None = the first group of `subscription_groups`.
    category: str | None = None
    enabled: bool = True
    entry: Trigger
    audience: Audience = Audience()
    goal: JourneyGoal | None = None
    re_entry: ReEntry = ReEntry()
    steps: list[JourneyStep] = Field(min_length=1)

    def step(self, step_id: str) -> JourneyStep:
        return next(s for s in self.steps if s.id == step_id)

    def following(self, step_id: str) -> str:
        """Where a step goes by default: its `next`, else the step below, else exit."""
        index = [s.id for s in self.steps].index(step_id)
        step = self.steps[index]
        if step.next:
            return step.next
        return self.steps[index + 1].id if index + 1 < len(self.steps) else EXIT


def journey_problems(
    journeys: list[Journey],
    *,
    schema: rules.FeatureSchema,
    known_segments: set[str],
    template_exists: Callable[[str], bool],
    event_types: Iterable[str],
    campaign_ids: Iterable[str] = (),
) -> list[str]:
    """Every problem in the journeys: shapes, targets, templates, segments, events, rules and
    loops that never wait (they would spin forever inside one run)."""
    problems: list[str] = []
    events = set(event_types)
    seen = set(campaign_ids)
    for journey in journeys:
        where = f"journey '{journey.id}'"
        if journey.id in seen:
            problems.append(f"{where}: id already used by a campaign or journey")
        seen.add(journey.id)
        ids = [s.id for s in journey.steps]
        if len(set(ids)) != len(ids):
            problems.append(f"{where}: duplicate step ids")
        if journey.goal and journey.goal.event not in events:
            problems.append(f"{where}: goal event '{journey.goal.event}' is not an event type")
        for segment in journey.audience.include_segments + journey.audience.exclude_segments:
            if segment not in known_segments:
                problems.append(f"{where}: unknown segment '{segment}'")
        targets = set(ids) | {EXIT}
        for step in journey.steps:
            problems += _step_problems(
                step,
                f"{where}, step '{step.id}'",
                targets,
                events,
                known_segments,
                schema,
                template_exists,
            )
        if not problems:
            problems += _instant_loops(journey, where)
    return problems


def _step_problems(step, where, targets, events, known_segments, schema, template_exists):
    problems = []
    if not step.kind:
        return [f"{where}: give exactly one of send, wait, wait_for, branch"]
    named = [step.next, step.otherwise]
    if step.send and not template_exists(step.send.template):
        problems.append(f"{where}: template '{step.send.template}' does not exist")
    if step.wait and step.wait.total_minutes == 0:
        problems.append(f"{where}: wait of zero")
    if step.wait_for:
        named += [step.wait_for.then, step.wait_for.timeout_then]
        if step.wait_for.event not in events:
            problems.append(f"{where}: unknown event '{step.wait_for.event}'")
        if step.wait_for.timeout.total_minutes == 0:
            problems.append(f"{where}: wait_for needs a timeout above zero")
    for case in step.branch or []:
        named.append(case.goto)
        given = [x for x in (case.segment, case.event, case.rule) if x is not None]
        if len(given) != 1:
            problems.append(f"{where}: a branch needs exactly one of segment, event, rule")
        if case.segment is not None and case.segment not in known_segments:
            problems.append(f"{where}: unknown segment '{case.segment}'")
        if case.event is not None and case.event not in events:
            problems.append(f"{where}: unknown event '{case.event}'")
        if case.rule is not None:
            for error in rules.check_rule(case.rule, schema, segment=where):
                problems.append(f"{where}: {error.message} (rule: {case.rule})")
    for target in named:
        if target is not None and target not in targets:
            problems.append(f"{where}: goes to unknown step '{target}'")
    return problems


def _instant_loops(journey: Journey, where: str) -> list[str]:
    """Edges between steps that take no time (send, branch) must not form a cycle."""
    edges: dict[str, set[str]] = {}
    for step in journey.steps:
        if step.kind in ("send", "branch"):
            out = {journey.following(step.id)}
            if step.kind == "branch":
                out |= {c.goto for c in step.branch or []} | {step.otherwise or ""}
            edges[step.id] = {t for t in out if t and t != EXIT}
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        if state.get(node) == 1:
            return True
        if state.get(node) == 2 or node not in edges:
            return False
        state[node] = 1
        found = any(visit(t) for t in edges[node])
        state[node] = 2
        return found

    if any(visit(n) for n in list(edges)):
        return [f"{where}: steps loop without a wait (add a wait or wait_for to the loop)"]
    return []


class CampaignsConfig(_Strict):
    defaults: Defaults = Defaults()
    subscription_groups: list[SubscriptionGroup] = Field(
        default_factory=lambda: list(DEFAULT_GROUPS), min_length=1
    )
    campaigns: list[Campaign] = Field(default_factory=list)
    journeys: list[Journey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_categories(self) -> CampaignsConfig:
        ids = [g.id for g in self.subscription_groups]
        problems = [
            f"subscription group '{g}' declared twice" for g in sorted(set(ids)) if ids.count(g) > 1
        ]
        for kind, items in (("campaign", self.campaigns), ("journey", self.journeys)):
            for item in items:
                if item.category is not None and item.category not in ids:
                    problems.append(
                        f"{kind} '{item.id}': category '{item.category}' is not a subscription "
                        f"group (known: {ids})"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def enabled(self) -> list[Campaign]:
        return sorted((c for c in self.campaigns if c.enabled), key=lambda c: (c.priority, c.id))

    def group_of(self, item: Campaign | Journey) -> str:
        """The subscription group a campaign or journey belongs to."""
        return item.category or self.subscription_groups[0].id


class CampaignConfigError(ValueError):
    """Every problem found in the campaign configuration."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the campaign configuration:\n- "
            + "\n- ".join(self.problems)
        )


def load_campaigns_config(path: Path) -> CampaignsConfig:
    """Parse the YAML (structure only; see `validate_campaigns` for meaning)."""
    try:
        return CampaignsConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValueError) as error:
        raise CampaignConfigError([f"{path}: {error}"]) from error


def validate_campaigns(
    config: CampaignsConfig,
    *,
    schema: rules.FeatureSchema,
    known_segments: set[str],
    template_exists: Callable[[str], bool],
) -> None:
    """Raise `CampaignConfigError` listing every problem; return None when all is well."""
    problems: list[str] = []
    seen: set[str] = set()
    for campaign in config.campaigns:
        where = f"campaign '{campaign.id}'"
        if campaign.id in seen:
            problems.append(f"{where}: duplicate campaign id")
        seen.add(campaign.id)
        total = sum(v.weight for v in campaign.variants)
        if abs(total - 1.0) > 1e-6:
            problems.append(f"{where}: variant weights sum to {total:g}, not 1")
        if len({v.name for v in campaign.variants}) != len(campaign.variants):
            problems.append(f"{where}: duplicate variant names")
        if campaign.rollout and campaign.rollout.default_variant not in {
            v.name for v in campaign.variants
        }:
            problems.append(
                f"{where}: rollout default_variant '{campaign.rollout.default_variant}' is not "
                "one of its variants"
            )
        for segment in campaign.audience.include_segments + campaign.audience.exclude_segments:
            if segment not in known_segments:
                problems.append(
                    f"{where}: unknown segment '{segment}' (known: {sorted(known_segments)})"
                )
        for rule in campaign.decision_rules:
            for error in rules.check_rule(rule.when, schema, segment=f"{campaign.id}/{rule.name}"):
                problems.append(f"{where}, rule '{rule.name}': {error.message} (when: {rule.when})")
            if not template_exists(rule.template):
                problems.append(
                    f"{where}, rule '{rule.name}': template '{rule.template}' does not exist"
                )
    problems += journey_problems(
        config.journeys,
        schema=schema,
        known_segments=known_segments,
        template_exists=template_exists,
        event_types=EVENT_TYPES,
        campaign_ids=seen,
    )
    if problems:
        raise CampaignConfigError(problems)
