"""The send-time personalization API: `GET /v1/customers/{id}/content?campaign=…[&render=true]`.

Answers from the serving snapshot (`snapshot.py`), never from the warehouse. The body has the
customer's personalization tokens, segments, the latest decision per campaign (or the one asked
for), recommendations and, with `render=true`, the subject / preheader / HTML / text rendered by
the project's `EmailRenderer` with the same context as the batch payloads.

- unknown customer → 404 `{"status": "not_found", "reason": "unknown_customer"}`;
- unknown campaign → 404 `{"status": "not_found", "reason": "unknown_campaign"}`;
- opted out (no email consent, unsubscribed or suppressed; or, with `campaign`, opted out of
  the campaign's subscription group when the snapshot carries group states: `group_opt_out`)
  → 200 `{"status": "opted_out", "reason": ..., "content": null}`: a definitive answer an email
  service must not retry, and no tokens, recommendations or rendering;
- otherwise 200 `{"status": "ok", ...}` with a `freshness` block saying what is fresher than
  the snapshot (see `freshness.py`: only recommendations can be).

`GET /view/<payload key>?t=<token>` serves the emails' signed "view in browser" links: the
rendered HTML of a campaign payload, read from the payload JSONL files the payloads asset writes
(`<output>/payloads`, see `defs/delivery/view.py`), never from the warehouse. An unknown key and a
wrong token get the same 404.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from personalization_assets import paths
from personalization_assets.defs.campaigns.config import load_campaigns_config
from personalization_assets.defs.campaigns.payloads import build_context
from personalization_assets.defs.campaigns.rendering import (
    EmailRenderer,
    RendererConfig,
    TemplateRenderError,
)
from personalization_assets.defs.delivery.view import PayloadFiles
from personalization_assets.defs.serving.export import TOKEN_COLUMNS
from personalization_assets.edge.freshness import EdgeAls, LandingJournal
from personalization_assets.edge.settings import EdgeSettings
from personalization_assets.edge.snapshot import CustomerView, ServingSnapshot, SnapshotReader

TEMPLATES_DIR = paths.PROJECT_ROOT / "templates"
# The snapshot's feature tokens, plus the name and the propensity scores it stores beside them.
TOKEN_FIELDS = ("first_name", "last_name", *TOKEN_COLUMNS, "churn_score", "purchase_score")
DECISION_FIELDS = (
    "status",
    "reason",
    "rule",
    "variant",
    "template",
    "send_date",
    "idempotency_key",
    "trigger_product_id",
)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, default=_plain, separators=(",", ":")).encode()


def opt_out_reason(customer: dict[str, Any]) -> str | None:
    if customer.get("unsubscribed"):
        return "unsubscribed"
    if customer.get("suppressed"):
        return "suppressed"
    if not customer.get("email_consent"):
        return "no_email_consent"
    return None


class SendTimeService:
    """Snapshot + landing journal + edge ALS + renderer, and a cache of finished answers."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        api = settings.api
        self.reader = SnapshotReader(
            settings.snapshot_path,
            check_interval_ms=api.reload_check_ms,
            cache_size=api.cache_max_customers,
        )
        self.journal = LandingJournal(settings.landing_dir)
        self._journal_of: ServingSnapshot | None = None
        self._journal_checked = -float("inf")
        self._als: EdgeAls | None = None
        self._answers: dict[tuple, tuple[int, bytes]] = {}
        campaigns = load_campaigns_config(settings.config_dir / "campaigns.yaml")
        self.base_url = campaigns.defaults.base_url
        self.groups = {
            c.id: campaigns.group_of(c) for c in campaigns.campaigns + campaigns.journeys
        }
        self.renderer = EmailRenderer(
            RendererConfig(
                templates_dir=TEMPLATES_DIR,
                brand=campaigns.defaults.brand,
                base_url=campaigns.defaults.base_url,
            )
        )

    def snapshot(self) -> ServingSnapshot | None:
        snapshot = self.reader.get()
        if snapshot is None:
            return None
        if snapshot is not self._journal_of:
            self._journal_of = snapshot
            self._answers = {}
            self._als = None
            self.journal.reset(snapshot.landing_files)
            self._journal_checked = -float("inf")
        now = time.monotonic()
        if self.settings.api.edge_als_refresh and (
            now - self._journal_checked >= self.settings.api.reload_check_ms / 1000
        ):
            self._journal_checked = now
            self.journal.scan()
        return snapshot

    def edge_als(self, snapshot: ServingSnapshot) -> EdgeAls | None:
        if self._als is None and snapshot.als_items() is not None:
            self._als = EdgeAls(snapshot)
        return self._als

    def content(self, customer_id: str, campaign: str | None, render: bool) -> tuple[int, bytes]:
        snapshot = self.snapshot()
        if snapshot is None:
            return 503, _json({"status": "unavailable", "reason": "no_snapshot"})
        customer_id = customer_id.strip().lower()
        fresh_version = self.journal.version.get(customer_id, 0)
        key = (customer_id, campaign, render, fresh_version)
        cached = self._answers.get(key)
        if cached is not None:
            return cached
        answer = self._answer(snapshot, customer_id, campaign, render)
        if len(self._answers) >= self.settings.api.cache_max_customers:
            self._answers.clear()
        self._answers[key] = answer
        return answer

    def _answer(
        self, snapshot: ServingSnapshot, customer_id: str, campaign: str | None, render: bool
    ) -> tuple[int, bytes]:
        stamp = {"snapshot_at": snapshot.snapshot_at, "as_of": snapshot.meta.get("as_of")}
        if campaign is not None and campaign not in snapshot.campaigns:
            body = {"status": "not_found", "reason": "unknown_campaign", "campaign": campaign}
            return 404, _json({**body, "snapshot": stamp})
        view = self.reader.customer(customer_id)
        if view is None:
            body = {"status": "not_found", "reason": "unknown_customer", "customer_id": customer_id}
            return 404, _json({**body, "snapshot": stamp})
        reason = opt_out_reason(view.customer)
        if not reason and campaign in self.groups:
            _, groups = snapshot.email_preferences(customer_id)
            if groups.get(self.groups[campaign]) is False:
                reason = "group_opt_out"
        if reason:
            body = {
                "status": "opted_out",
                "reason": reason,
                "customer_id": customer_id,
                "content": None,
                "snapshot": stamp,
            }
            return 200, _json(body)
        recommendations, freshness = self._recommendations(snapshot, customer_id, view)
        decisions = {
            cid: {k: d.get(k) for k in DECISION_FIELDS}
            for cid, d in view.decisions.items()
            if campaign is None or cid == campaign
        }
        body = {
            "status": "ok",
            "customer_id": customer_id,
            "snapshot": stamp,
            "consent": {
                "email": True,
                "tracking": bool(view.customer.get("tracking_consent")),
            },
            "tokens": {k: view.customer.get(k) for k in TOKEN_FIELDS},
            "segments": [
                {"segment": s["segment"], "type": s["segment_type"]} for s in view.segments
            ],
            "decisions": decisions,
            "recommendations": recommendations,
            "freshness": freshness,
        }
        if campaign is not None:
            body["decision"] = decisions.get(campaign)
        if render:
            body["rendered"] = self._render(snapshot, view, campaign, recommendations)
        return 200, _json(body)

    def _recommendations(
        self, snapshot: ServingSnapshot, customer_id: str, view: CustomerView
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        fresh = self.journal.events.get(customer_id, [])
        freshness = {
            "recommendations": "snapshot",
            "fresh_events": len(fresh),
            "newest_fresh_event": max((e.ts for e in fresh), default=None),
            "not_fresh": ["tokens", "segments", "decisions", "consent"],
        }
        recs = view.recommendations
        als = self.edge_als(snapshot) if fresh and view.als_cells else None
        if als is not None:
            refreshed = als.recommend(view.als_cells, fresh)
            if refreshed:
                recs = refreshed
                freshness["recommendations"] = "edge_als_update"
        products = snapshot.products
        out = []
        for rec in recs:
            product = products.get(rec["product_id"], {})
            out.append(
                {
                    **rec,
                    "name": product.get("name"),
                    "price": product.get("price"),
                    "currency": product.get("currency"),
                    "category": product.get("category"),
                }
            )
        return out, freshness

    def _render(
        self,
        snapshot: ServingSnapshot,
        view: CustomerView,
        campaign: str | None,
        recommendations: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        decision = view.decisions.get(campaign) if campaign else None
        if not decision or not decision.get("template"):
            return {"error": "no decision with a template for this campaign"}
        customer = view.customer
        products = snapshot.products

        def product(pid: str) -> dict[str, Any] | None:
            p = products.get(pid)
            if p is None:
                return None
            keys = ("product_id", "name", "price", "currency", "category")
            return {k: p.get(k) for k in keys}

        trigger = decision.get("trigger_product_id")
        if trigger:
            items = [product(p) for p in snapshot.similar_products(trigger)]
        else:
            items = [product(r["product_id"]) for r in recommendations[:5]]
        row = {
            "customer_id": customer["customer_id"],
            "first_name": customer.get("first_name"),
            "email": customer.get("email"),
            "campaign_id": campaign,
            "variant": decision.get("variant"),
            "rule": decision.get("rule"),
            "idempotency_key": decision.get("idempotency_key") or f"{campaign}:preview",
            "recommendations": [i for i in items if i],
            "cart_product": product(trigger) if trigger else None,
            "recent_purchase": view.recent_purchase,
            "behavioral_allowed": bool(customer.get("tracking_consent")),
        }
        context = build_context(row, base_url=self.base_url, campaign_names=snapshot.campaigns)
        try:
            email = self.renderer.render(decision["template"], context)
        except TemplateRenderError as error:
            return {"error": str(error)}
        return {
            "subject": email.subject,
            "preheader": email.preheader,
            "html": email.html,
            "text": email.text,
            "headers": email.headers,
        }


def create_send_time_app(settings: EdgeSettings, payloads_dir: Path | None = None) -> FastAPI:
    """The send-time API as an ASGI app (`python -m personalization_assets.edge api`).

    `payloads_dir`: the payload JSONL folder behind `/view` (default `<output>/payloads`).
    """
    service = SendTimeService(settings)
    payloads = PayloadFiles(
        payloads_dir or paths.output_dir() / "payloads",
        check_interval_ms=settings.api.reload_check_ms,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.snapshot()
        yield

    app = FastAPI(title="Send-time personalization API", lifespan=lifespan)
    app.state.service = service

    @app.get("/v1/customers/{customer_id}/content")
    async def content(customer_id: str, campaign: str | None = None, render: bool = False):
        status, body = service.content(customer_id, campaign, render)
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/view/{payload_key}")
    async def view(payload_key: str, t: str = ""):
        """An email's "view in browser" link: its rendered HTML, or 404 for any bad link."""
        html = payloads.html(payload_key, t)
        if html is None:
            return HTMLResponse("<!DOCTYPE html><p>This email is not available.</p>", 404)
        return HTMLResponse(html)

    @app.get("/healthz")
    async def health():
        snapshot = service.snapshot()
        return {
            "status": "ok" if snapshot else "no_snapshot",
            "snapshot_at": snapshot.snapshot_at if snapshot else None,
            "reloads": service.reader.reloads,
            "fresh_customers": len(service.journal.events),
        }

    return app
