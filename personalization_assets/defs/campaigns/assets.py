"""Campaigns group: decisions (who, which rule, which variant, or why not) and rendered payloads."""

import datetime as dt
import hashlib

import dagster as dg

from personalization_assets import paths
from personalization_assets.defs.campaigns import decisions, payloads
from personalization_assets.defs.campaigns.config import (
    CampaignsConfig,
    group_purpose,
    load_campaigns_config,
    validate_campaigns,
)
from personalization_assets.defs.campaigns.rendering import EmailRenderer, RendererConfig
from personalization_assets.defs.campaigns.spark_render import SparkEmailRenderer
from personalization_assets.defs.privacy.config import load_privacy_config
from personalization_assets.defs.privacy.masking import Contact, mask_contact
from personalization_assets.defs.segments.config import load_segment_files, manifest_feature_schema
from personalization_assets.defs.warehouse.project import dbt_project
from personalization_assets.defs.warehouse.resources import (
    WAREHOUSE_POOL,
    ProjectConfigResource,
    WarehouseResource,
)
from personalization_assets.defs.warehouse.summary import table_exists
from personalization_assets.heap import retain_freed_heap
from personalization_assets.settings import load_pipeline_settings
from personalization_assets.spark_session import engine_spark_session

GROUP = "campaigns"
OWNERS = ["team:crm-marketing"]
TEMPLATES_DIR = paths.PROJECT_ROOT / "templates"
DECISIONS_KEY = dg.AssetKey(["campaigns", "campaign_decisions"])
PAYLOADS_KEY = dg.AssetKey(["campaigns", "email_payloads"])


def load_validated_campaigns(config_dir, schema) -> CampaignsConfig:
    """campaigns.yaml validated against features, segment names and the templates folder."""
    segment_files = load_segment_files(config_dir, schema)
    known = {s.name for s in segment_files.rfm.segments} | {
        s.name for s in segment_files.segments.segments
    }
    config = load_campaigns_config(config_dir / "campaigns.yaml")
    validate_campaigns(
        config,
        schema=schema,
        known_segments=known,
        template_exists=lambda name: (TEMPLATES_DIR / "campaigns" / f"{name}.html.j2").exists(),
    )
    return config


# Fail at load time, in the UI, when the shipped campaign file is invalid.
load_validated_campaigns(paths.config_dir(), manifest_feature_schema(dbt_project.manifest_path))


def _template_version() -> str:
    """A hash of every template source: editing a template re-renders its payloads."""
    digest = hashlib.sha256()
    for path in sorted(TEMPLATES_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(TEMPLATES_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class CampaignRunConfig(dg.Config):
    """The explicit clock of a campaign run (ISO timestamps, UTC); empty = the features' as-of."""

    clock: str = ""
    send_date: str = ""


def _clock(con, config: CampaignRunConfig) -> tuple[dt.datetime, dt.date]:
    clock = (
        dt.datetime.fromisoformat(config.clock).replace(tzinfo=None)
        if config.clock
        else con.execute("select as_of from main.feature_as_of").fetchone()[0]
    )
    send_date = dt.date.fromisoformat(config.send_date) if config.send_date else clock.date()
    return clock, send_date


@dg.asset(
    key=DECISIONS_KEY,
    deps=[
        dg.AssetKey(["features", "customer_features"]),
        dg.AssetKey(["segments", "customer_segments"]),
        dg.AssetKey(["warehouse", "fct_events"]),
        dg.AssetKey(["warehouse", "dim_customer_contacts"]),
        dg.AssetKey(["warehouse", "customer_keys"]),
        dg.AssetKey(["models", "customer_lifecycle"]),
        dg.AssetKey(["warehouse", "dim_consent"]),
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "no_send_to_opted_out",
            asset=DECISIONS_KEY,
            blocking=True,
            description="No `send` decision for a customer without consent, unsubscribed or suppressed.",
        ),
        dg.AssetCheckSpec(
            "frequency_cap_respected",
            asset=DECISIONS_KEY,
            blocking=True,
            description="No customer gets more sends than the cap within its window.",
        ),
    ],
)
def campaign_decisions(
    context: dg.AssetExecutionContext,
    config: CampaignRunConfig,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Every candidate of every campaign with its outcome: send, holdout, excluded, capped, no_rule.

    Triggers, eligibility, first-match decision rules and hash-based A/B/holdout assignment, at an
    explicit clock so a past day can be re-run and gives the same answer.
    """
    with warehouse.connect() as con:
        from personalization_assets.defs.segments.membership import feature_schema

        campaigns = load_validated_campaigns(project_config.path, feature_schema(con))
        clock, send_date = _clock(con, config)
        summary = decisions.build_decisions(
            con,
            campaigns,
            send_date=send_date,
            clock=clock,
            measurement=load_pipeline_settings(project_config.path).measurement,
        )
        rollouts = con.execute(
            "select campaign_id, winner, reason, decided_at from campaigns.rollout_decisions "
            "order by campaign_id"
        ).fetchall()
        opted_out = _opted_out_sends(con, send_date, campaigns)
        over_cap = _over_cap(con, send_date, campaigns)
    statuses = sorted({status for _, status in summary.counts})
    table = ["| campaign | " + " | ".join(statuses) + " |", "|---|" + "---:|" * len(statuses)]
    for campaign in campaigns.enabled:
        cells = [str(summary.counts.get((campaign.id, s), 0)) for s in statuses]
        table.append(f"| {campaign.id} | " + " | ".join(cells) + " |")
    yield dg.MaterializeResult(
        metadata={
            "send_date": str(send_date),
            "clock": str(clock),
            "decisions": dg.MetadataValue.md("\n".join(table)),
            "rollout_decisions": dg.MetadataValue.md(
                "\n".join(
                    ["| campaign | winner | reason | decided at |", "|---|---|---|---|"]
                    + [f"| {c} | {w} | {r} | {d} |" for c, w, r, d in rollouts]
                )
                if rollouts
                else "no test-then-winner decision yet"
            ),
            "sends": sum(n for (_, s), n in summary.counts.items() if s == "send"),
            "dagster/row_count": sum(summary.counts.values()),
        }
    )
    yield dg.AssetCheckResult(
        check_name="no_send_to_opted_out",
        passed=opted_out == 0,
        metadata={"violations": opted_out},
    )
    yield dg.AssetCheckResult(
        check_name="frequency_cap_respected",
        passed=over_cap == 0,
        metadata={"customers_over_cap": over_cap},
    )


def _opted_out_sends(con, send_date: dt.date, campaigns: CampaignsConfig) -> int:
    """Checked against the warehouse directly, not against the decision's own reasons: consent,
    unsubscribes, suppressions and the campaign's subscription group in the consent ledger."""
    groups = " ".join(
        f"when '{c.id}' then '{group_purpose(campaigns.group_of(c))}'" for c in campaigns.campaigns
    )
    group_opt_out = (
        f"""or exists (select 1 from main.dim_consent g
                  where g.customer_id = d.customer_id and not g.granted
                    and g.purpose = case d.campaign_id {groups} end)"""
        if groups and table_exists(con, "main", "dim_consent")
        else ""
    )
    return con.execute(
        f"""
        select count(*) from campaigns.campaign_decisions d
        join main.dim_customers c using (customer_id)
        left join main.customer_keys k using (customer_id)
        left join main.customer_features f on f.customer_key = k.customer_key
        where d.send_date = ? and d.status = 'send'
          and (not c.email_consent or c.unsubscribed or coalesce(f.is_unsubscribed, false)
               or exists (select 1 from campaigns.suppressions s where s.customer_id = d.customer_id)
               {group_opt_out})
        """,
        [send_date],
    ).fetchone()[0]


def _over_cap(con, send_date: dt.date, campaigns: CampaignsConfig) -> int:
    cap = campaigns.defaults.frequency_cap
    return con.execute(
        f"""
        select count(*) from (
            select customer_id, count(*) as sends from campaigns.campaign_decisions
            where status = 'send' and send_date <= ?
              and send_date > ? - interval {int(cap.per_days)} day
            group by customer_id having count(*) > {int(cap.max_emails)}
        )
        """,
        [send_date, send_date],
    ).fetchone()[0]


@dg.asset(
    key=PAYLOADS_KEY,
    deps=[
        DECISIONS_KEY,
        dg.AssetKey(["models", "product_recommendations"]),
        dg.AssetKey(["models", "send_time_preferences"]),
    ],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "python"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "one_payload_per_decision",
            asset=PAYLOADS_KEY,
            blocking=True,
            description="Exactly one payload per `send` decision (idempotency key), none for other states.",
        ),
    ],
)
def email_payloads(
    context: dg.AssetExecutionContext,
    config: CampaignRunConfig,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """Personalized emails (subject, preheader, inlined HTML, text, List-Unsubscribe headers).

    Written to `campaigns.email_payloads` and, ESP-ready, to `<output>/payloads/send_date=*/<campaign>.jsonl`.
    A template error fails only that template's payloads (status `render_failed`, error recorded).
    """
    campaigns = load_campaigns_config(project_config.path / "campaigns.yaml")
    defaults = campaigns.defaults
    renderer_config = RendererConfig(
        templates_dir=TEMPLATES_DIR,
        brand=defaults.brand,
        base_url=defaults.base_url,
        cache_dir=paths.template_cache_dir(),
    )
    settings = load_pipeline_settings(project_config.path).rendering
    heap_retained = retain_freed_heap(settings.retain_heap_mb)
    with engine_spark_session("personalization-payloads") as spark, warehouse.connect() as con:
        renderer = (
            SparkEmailRenderer(spark, renderer_config) if spark else EmailRenderer(renderer_config)
        )
        clock, send_date = _clock(con, config)
        versions = _model_versions(con)
        summary = payloads.render_payloads(
            con,
            renderer,
            send_date=send_date,
            base_url=defaults.base_url,
            campaign_names={c.id: c.name for c in campaigns.campaigns},
            output_dir=paths.output_dir(),
            model_versions=versions,
            template_version=_template_version(),
            clock=clock,
            schedules={c.id: c.schedule for c in campaigns.campaigns},
            batch_size=settings.batch_size,
        )
        mismatched = con.execute(
            """
            select count(*) from campaigns.campaign_decisions d
            full outer join campaigns.email_payloads p using (idempotency_key)
            where coalesce(d.send_date, p.send_date) = ?
              and ((d.status = 'send') != (p.idempotency_key is not null)
                   or d.idempotency_key is null)
            """,
            [send_date],
        ).fetchone()[0]
    for template, error in summary.errors.items():
        context.log.error(f"template {template} failed: {error}")
    # Rendering's own throughput (thread CPU in the renderer); on Spark it runs on the executors.
    render_rate = (
        {}
        if spark or not summary.render_cpu_s
        else {
            "render_cpu_s": round(summary.render_cpu_s, 2),
            "rendered_per_cpu_s": round(summary.rendered / summary.render_cpu_s),
        }
    )
    per_variant = ["| campaign | variant | payloads |", "|---|---|---:|"] + [
        f"| {c} | {v} | {n} |" for (c, v), n in sorted(summary.per_campaign.items())
    ]
    yield dg.MaterializeResult(
        metadata={
            **render_rate,
            "send_date": str(send_date),
            "rendered": summary.rendered,
            "unchanged_kept": summary.reused,
            "render_failed": summary.failed,
            "per_variant": dg.MetadataValue.md("\n".join(per_variant)),
            "jsonl": dg.MetadataValue.md(
                "\n".join(f"- `{p}`" for p in summary.jsonl_files) or "none"
            ),
            "model_versions": dg.MetadataValue.json(versions),
            "render_batch_size": settings.batch_size,
            "freed_heap_retained_mb": settings.retain_heap_mb if heap_retained else 0,
            "engine": "spark (mapInPandas)" if spark else "duckdb (in-process)",
            "dagster/row_count": summary.rendered + summary.reused + summary.failed,
        }
    )
    yield dg.AssetCheckResult(
        check_name="one_payload_per_decision",
        passed=mismatched == 0,
        metadata={"mismatched_keys": mismatched},
    )


def _model_versions(con) -> dict[str, str]:
    if not table_exists(con, "models", "model_registry"):
        return {}
    return dict(
        con.execute(
            "select model_name, model_version from models.model_registry where is_current"
        ).fetchall()
    )


@dg.asset(
    key=["campaigns", "payload_previews"],
    deps=[PAYLOADS_KEY],
    group_name=GROUP,
    owners=OWNERS,
    kinds={"html"},
)
def payload_previews(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project_config: ProjectConfigResource,
):
    """A few rendered emails per campaign and variant as HTML files, to open in a browser.

    The recipient's address and names are masked in the files (`j***@example.com`) unless the
    address is in `privacy.unmasked_test_addresses`; the metadata shows only paths and rules.
    """
    unmasked = load_privacy_config(project_config.path / "privacy.yaml").unmasked_test_addresses
    folder = paths.output_dir() / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.html"):
        stale.unlink()
    with warehouse.connect(read_only=True) as con:
        contacts = (
            "left join main.dim_customer_contacts c using (customer_id)"
            if table_exists(con, "main", "dim_customer_contacts")
            else "left join (select null::varchar as customer_id, null::varchar as first_name, "
            "null::varchar as last_name) c using (customer_id)"
        )
        rows = con.execute(
            f"""
            select p.campaign_id, p.variant, p.rule, p.idempotency_key, p.html, p.to_address,
                   c.first_name, c.last_name
            from (
                select *, row_number() over (partition by campaign_id, variant order by idempotency_key) as n
                from campaigns.email_payloads where status = 'rendered'
                  and send_date = (select max(send_date) from campaigns.email_payloads)
            ) p {contacts}
            where n <= 3 order by p.campaign_id, p.variant, n
            """
        ).fetchall()
    lines = ["| campaign | variant | rule | preview |", "|---|---|---|---|"]
    for campaign_id, variant, rule, key, html, to_address, first_name, last_name in rows:
        path = folder / f"{campaign_id}__{variant}__{key[:10]}.html"
        contact = Contact(email=to_address, first_name=first_name, last_name=last_name)
        path.write_text(mask_contact(html, contact, unmasked), encoding="utf-8")
        lines.append(f"| {campaign_id} | {variant} | {rule} | [{path.name}](file://{path}) |")
    return dg.MaterializeResult(
        metadata={
            "previews": dg.MetadataValue.md("\n".join(lines)),
            "files": len(rows),
            "folder": dg.MetadataValue.path(str(folder)),
            "recipients_masked": len(rows)
            - sum(1 for r in rows if r[5] and r[5].strip().lower() in unmasked),
        }
    )
