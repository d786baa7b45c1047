"""Delivery group: send rendered payloads exactly once, take bounce/complaint feedback, run journeys."""

import datetime as dt

import dagster as dg

from personalization_assets import paths
from personalization_assets.defs.campaigns.rendering import EmailRenderer, RendererConfig
from personalization_assets.defs.delivery import delivery, feedback, journeys, ledger
from personalization_assets.defs.delivery.config import DeliveryConfig, load_delivery_config
from personalization_assets.defs.delivery.resources import SenderResource
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    LandingZoneResource,
    ProjectConfigResource,
    WarehouseResource,
)

GROUP = "delivery"
OWNERS = ["team:crm-marketing"]
DELIVERIES_KEY = dg.AssetKey(["delivery", "email_deliveries"])
FEEDBACK_KEY = dg.AssetKey(["delivery", "delivery_feedback"])
JOURNEYS_KEY = dg.AssetKey(["delivery", "journey_progress"])
PAYLOADS_KEY = dg.AssetKey(["campaigns", "email_payloads"])

# Fail at load time, in the UI, when the shipped delivery file is invalid.
load_delivery_config(paths.config_dir() / "delivery.yaml")


class DeliveryRunConfig(dg.Config):
    """The run's clock (ISO timestamp, UTC; empty = now) and an optional cap on messages."""

    clock: str = ""
    max_messages: int = 0


def run_clock(config_clock: str) -> delivery.Clock:
    if not config_clock:
        return delivery.Clock()
    start = dt.datetime.fromisoformat(config_clock)
    if start.tzinfo is not None:
        start = start.astimezone(dt.UTC).replace(tzinfo=None)
    return delivery.Clock(start)


def _delivery_config(project_config: ProjectConfigResource) -> DeliveryConfig:
    return load_delivery_config(project_config.path / "delivery.yaml")


@dg.asset(
    key=FEEDBACK_KEY,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
)
def delivery_feedback(
    context: dg.AssetExecutionContext,
    config: DeliveryRunConfig,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
    landing_zone: LandingZoneResource,
):
    """Bounces, complaints and unsubscribes reported by the email service, as delivery events.

    Hard bounces and complaints suppress the address, so eligibility excludes it next time.
    """
    settings = _delivery_config(project_config)
    folder = (
        paths.PROJECT_ROOT / settings.feedback_dir
        if settings.feedback_dir
        else landing_zone.path / "delivery_feedback"
    )
    with warehouse.connect() as con:
        summary = feedback.apply_feedback(con, folder, run_clock(config.clock).now())
        suppressions = con.execute("select count(*) from campaigns.suppressions").fetchall()[0][0]
    for problem in summary.invalid_lines:
        context.log.warning(f"feedback line skipped: {problem}")
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(folder)),
            "files": summary.files,
            "new_events": summary.new_events,
            "new_suppressions": summary.suppressed,
            "invalid_lines": len(summary.invalid_lines),
            "suppressions_total": suppressions,
        }
    )


@dg.asset(
    key=DELIVERIES_KEY,
    deps=[PAYLOADS_KEY, FEEDBACK_KEY, JOURNEYS_KEY],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "python", "email"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "nothing_sent_early_or_to_suppressed",
            asset=DELIVERIES_KEY,
            description="No ledger row sent before its send_at or after its address was suppressed.",
        )
    ],
)
def email_deliveries(
    context: dg.AssetExecutionContext,
    config: DeliveryRunConfig,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
    sender: SenderResource,
):
    """Every rendered payload handed to the email service once, recorded in `delivery.send_ledger`.

    Claim-before-send with at-most-once recovery, a rate limit and retries with backoff; a dry run
    (the default) records what would be sent and sends nothing.
    """
    settings = _delivery_config(project_config)
    mode = sender.resolved_mode
    with warehouse.connect() as con:
        summary = delivery.deliver(
            con,
            sender.build(),
            settings,
            run_id=context.run_id,
            mode=mode,
            clock=run_clock(config.clock),
            max_messages=config.max_messages,
        )
        violations = _violations(con)
        per_campaign = con.execute(
            f"select campaign_id, status, count(*) from {ledger.LEDGER} group by all order by 1, 2"
        ).fetchall()
    table = ["| campaign | status | messages |", "|---|---|---:|"] + [
        f"| {c} | {s} | {n} |" for c, s, n in per_campaign
    ]
    outcomes = summary.outcomes
    yield dg.MaterializeResult(
        metadata={
            "mode": mode,
            "sent": outcomes.get("sent", 0),
            "dry_run": outcomes.get("dry_run", 0),
            "failed": outcomes.get("failed", 0),
            "bounced": outcomes.get("bounced", 0),
            "unknown": outcomes.get("unknown", 0) + summary.recovered_unknown,
            "retry_pending": summary.retries_left,
            "skipped": sum(summary.settled.values()),
            "skipped_by_reason": dg.MetadataValue.json(summary.settled),
            "newly_queued": summary.enqueued,
            "attempts": summary.attempts,
            "seconds": round(summary.seconds, 2),
            "rate_limit_per_second": settings.rate_limit_per_second,
            "ledger": dg.MetadataValue.md("\n".join(table)),
            "dagster/row_count": sum(summary.ledger.values()),
        }
    )
    yield dg.AssetCheckResult(
        check_name="nothing_sent_early_or_to_suppressed",
        passed=violations == 0,
        metadata={"violations": violations},
    )


class JourneyRunConfig(dg.Config):
    """The clock journeys are advanced to (ISO timestamp, UTC); empty = the features' as-of."""

    clock: str = ""


@dg.asset(
    key=JOURNEYS_KEY,
    deps=[
        dg.AssetKey(["features", "customer_features"]),
        dg.AssetKey(["segments", "customer_segments"]),
        dg.AssetKey(["warehouse", "fct_events"]),
        dg.AssetKey(["warehouse", "dim_customer_contacts"]),
        dg.AssetKey(["models", "product_recommendations"]),
        # read when a send step renders (best local hour) and for eligibility / re-identification
        dg.AssetKey(["models", "send_time_preferences"]),
        dg.AssetKey(["warehouse", "dim_consent"]),
        dg.AssetKey(["warehouse", "customer_keys"]),
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
)
def journey_progress(
    context: dg.AssetExecutionContext,
    config: JourneyRunConfig,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Each customer's place in each journey (`delivery.journey_state`), advanced to the clock.

    Goals end journeys first, triggers start new ones, then waits, branches and sends move on;
    send steps render into `delivery.journey_payloads` for `email_deliveries`, and ESP-ready to
    `<output>/payloads/send_date=*/journey__<journey>.jsonl` (what "view in browser" serves).
    """
    from personalization_assets.defs.campaigns import payloads
    from personalization_assets.defs.campaigns.assets import TEMPLATES_DIR, load_validated_campaigns
    from personalization_assets.defs.segments.membership import feature_schema

    with warehouse.connect() as con:
        campaigns = load_validated_campaigns(project_config.path, feature_schema(con))
        clock = (
            run_clock(config.clock).start
            if config.clock
            else con.execute("select as_of from main.feature_as_of").fetchall()[0][0]
        )
        renderer = EmailRenderer(
            RendererConfig(
                templates_dir=TEMPLATES_DIR,
                brand=campaigns.defaults.brand,
                base_url=campaigns.defaults.base_url,
                cache_dir=paths.template_cache_dir(),
            )
        )
        summary = journeys.advance_journeys(con, campaigns, renderer, clock=clock)
        jsonl = payloads.write_journey_jsonl(con, paths.output_dir(), clock)
    for template, error in summary.render_errors.items():
        context.log.error(f"journey template {template} failed: {error}")
    statuses = sorted({s for _, s in summary.states})
    table = ["| journey | entered now | converted now | " + " | ".join(statuses) + " |"]
    table.append("|---|---:|---:|" + "---:|" * len(statuses))
    for journey in (j for j in campaigns.journeys if j.enabled):
        cells = [str(summary.states.get((journey.id, s), 0)) for s in statuses]
        table.append(
            f"| {journey.id} | {summary.entered.get(journey.id, 0)} | "
            f"{summary.converted.get(journey.id, 0)} | " + " | ".join(cells) + " |"
        )
    return dg.MaterializeResult(
        metadata={
            "clock": str(clock),
            "journeys": dg.MetadataValue.md("\n".join(table)),
            "sends": dg.MetadataValue.json(
                {f"{j}/{s}": n for (j, s), n in sorted(summary.sends.items())}
            ),
            "active": sum(n for (_, s), n in summary.states.items() if s == "active"),
            "jsonl_files": len(jsonl),
            "dagster/row_count": sum(summary.states.values()),
        }
    )


def _violations(con) -> int:
    return con.execute(
        f"""
        select count(*) from {ledger.LEDGER} l
        where l.status = 'sent'
          and (l.sent_at < l.send_at
               or exists (select 1 from campaigns.suppressions s
                          where (s.customer_id = l.customer_id or lower(s.email) = lower(l.to_address))
                            and s.suppressed_at < l.claimed_at))
        """
    ).fetchall()[0][0]


delivery_job = dg.define_asset_job(
    name="email_delivery",
    selection=dg.AssetSelection.groups(GROUP),
    description="Advance journeys, take feedback, send due payloads (mode from the `sender` resource).",
    executor_def=dg.in_process_executor,
)
