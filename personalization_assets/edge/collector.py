"""The event collector: `POST /v1/track` (one event) and `POST /v1/batch` (many).

Accepted events are appended to micro-batch files in the landing zone (`landing_writer.py`), where
the landing sensor picks them up like any other event file. Every refusal is answered with a 4xx
and a machine-readable `reason`, and the refused input is written to
`<landing>/rejected/date=YYYY-MM-DD/*.ndjson` with its reasons, so nothing is lost:

| status | reason | when |
|---|---|---|
| 401 | `missing_write_key` / `invalid_write_key` | a write key is configured and the request lacks it |
| 413 | `body_too_large` / `too_many_events` | body above the endpoint's limit; batch above `max_batch_events` |
| 400 | `invalid_json` / `invalid_batch` | body is not JSON; batch is not a list or `{"events": [...]}` |
| 422 | the warehouse's codes (`unknown_event_type`, `future_timestamp`, `wrong_type`...) | contract broken |

A batch is judged event by event: valid events are accepted even when others are not (202 when
all were accepted, else 422 listing the refused ones by index). Retrying a whole batch is safe:
the warehouse deduplicates by `event_id` (first arrival wins).

Tracking consent: for an identified user (a customer id in the serving snapshot) whose
`tracking_consent` is false, behavioural events (`page_view`, `product_view`, `add_to_cart`,
`checkout`) are dropped and not stored anywhere (202, `status: dropped`, reason
`no_tracking_consent`); purchases, email events and unsubscribes are always kept. Anonymous ids
and customers not yet in the snapshot are accepted: the warehouse's consent gating decides
later (browsing features only for customers with consent).

`GET|POST /u?c=…&k=…&t=…` serves the emails' signed unsubscribe links (`defs/campaigns/links.py`):
a valid token lands an `unsubscribe` event, an invalid one gets 403 `invalid_token`.

`GET /preferences?c=…&k=…&t=…` serves the signed preference-centre link: an HTML page with one
checkbox per subscription group (`preferences.py`); its form `POST`s back to the same URL and
lands a `preference_update` event (or, for "unsubscribe from all", an `unsubscribe` event). An
invalid token gets 403 and lands nothing (the refusal goes to the rejected file, as for `/u`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from personalization_assets import paths
from personalization_assets.defs.campaigns import links
from personalization_assets.edge import landing_writer
from personalization_assets.edge.preferences import PreferenceCentre
from personalization_assets.edge.settings import EdgeSettings
from personalization_assets.edge.snapshot import SnapshotReader
from personalization_assets.edge.validation import customer_key, validate_event

BEHAVIOURAL_EVENT_TYPES = frozenset({"page_view", "product_view", "add_to_cart", "checkout"})
RAW_PREFIX_CHARS = 2048


class _TooLarge(Exception):
    def __init__(self, size: int, prefix: bytes) -> None:
        self.size, self.prefix = size, prefix


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(size, b"".join([*chunks, chunk])[:RAW_PREFIX_CHARS])
        chunks.append(chunk)
    return b"".join(chunks)


class CollectorState:
    """The writers, the consent lookup and counters of one collector process."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        cfg = settings.collector
        self.events = landing_writer.MicroBatchWriter(
            settings.landing_dir / "events",
            max_events=cfg.flush_max_events,
            max_ms=cfg.flush_max_ms,
        )
        self.rejected = landing_writer.MicroBatchWriter(
            settings.landing_dir / "rejected",
            max_events=cfg.flush_max_events,
            max_ms=cfg.flush_max_ms,
        )
        self.snapshot = SnapshotReader(
            settings.snapshot_path, check_interval_ms=settings.api.reload_check_ms
        )
        self._consent: dict[str, bool] = {}
        self._consent_of = None
        self._preferences: PreferenceCentre | None = None
        self.counts = {"accepted": 0, "rejected": 0, "dropped": 0}

    def preference_centre(self) -> PreferenceCentre:
        """The subscription groups of `<config>/campaigns.yaml` and the page (loaded once)."""
        if self._preferences is None:
            self._preferences = PreferenceCentre.from_files(
                self.settings.config_dir / "campaigns.yaml", paths.PROJECT_ROOT / "templates"
            )
        return self._preferences

    def email_preferences(self, customer_id: str) -> tuple[bool, dict[str, bool]]:
        snapshot = self.snapshot.get()
        if snapshot is None:
            return False, {}
        return snapshot.email_preferences(customer_id)

    def tracking_consent(self, customer_id: str) -> bool | None:
        snapshot = self.snapshot.get()
        if snapshot is None:
            return None
        if self._consent_of is not snapshot:
            self._consent, self._consent_of = snapshot.tracking_consent(), snapshot
        return self._consent.get(customer_id)

    def reject(self, now: dt.datetime, endpoint: str, reason: str, **record: Any) -> None:
        self.counts["rejected"] += 1
        line = landing_writer.rejected_line(
            received_at=now, endpoint=endpoint, reason=reason, **record
        )
        self.rejected.append([line], now)

    def write_key_problem(self, request: Request) -> str | None:
        expected = self.settings.collector.write_key
        if not expected:
            return None
        given = request.headers.get("x-write-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            return "missing_write_key"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return "invalid_write_key"
        return None


def create_collector_app(settings: EdgeSettings) -> FastAPI:
    """The collector as an ASGI app (uvicorn runs it: `python -m personalization_assets.edge collector`)."""
    state = CollectorState(settings)
    cfg = settings.collector

    async def flusher() -> None:
        interval = max(cfg.flush_max_ms / 4000, 0.01)
        while True:
            await asyncio.sleep(interval)
            state.events.flush_if_due()
            state.rejected.flush_if_due()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        now = dt.datetime.now(dt.UTC)
        recovered = state.events.recover()
        for torn in recovered.torn_lines:
            state.reject(now, "recovery", "partial_write", raw=torn)
        state.rejected.recover()
        app.state.recovered = recovered
        task = asyncio.create_task(flusher())
        try:
            yield
        finally:
            task.cancel()
            state.events.flush()
            state.rejected.flush()

    app = FastAPI(title="Event collector", lifespan=lifespan)
    app.state.collector = state

    async def _receive(request: Request, endpoint: str, limit: int):
        """(now, parsed body) or a refusal response (already written to the rejected file)."""
        now = dt.datetime.now(dt.UTC)
        key_problem = state.write_key_problem(request)
        try:
            body = await _read_body(request, limit)
        except _TooLarge as too_large:
            reason = key_problem or "body_too_large"
            raw = too_large.prefix.decode("utf-8", "replace")
            state.reject(now, endpoint, reason, raw=raw, fields=[f"size>{too_large.size}"])
            status = 401 if key_problem else 413
            return now, _refusal(status, reason, limit_bytes=limit)
        text = body.decode("utf-8", "replace")
        if key_problem:
            state.reject(now, endpoint, key_problem, raw=text)
            return now, _refusal(401, key_problem)
        try:
            return now, json.loads(text)
        except ValueError as error:
            state.reject(now, endpoint, "invalid_json", raw=text)
            return now, _refusal(400, "invalid_json", detail=str(error))

    def _judge(event: Any, now: dt.datetime, endpoint: str, index: int | None):
        """'accepted', 'dropped' or the refusal dict for one parsed event."""
        verdict = validate_event(
            event,
            now=now,
            future_tolerance_hours=cfg.future_tolerance_hours,
            max_properties_chars=cfg.max_properties_chars,
        )
        if not verdict.ok:
            state.reject(
                now,
                endpoint,
                verdict.reasons[0],
                event=event,
                index=index,
                reasons=verdict.reasons,
                fields=verdict.fields,
            )
            return {"index": index, **verdict.as_dict()}
        event_type = event["event_type"].strip().lower()
        if event_type in BEHAVIOURAL_EVENT_TYPES:
            consent = state.tracking_consent(customer_key(event))
            if consent is False:
                state.counts["dropped"] += 1
                return "dropped"
        return "accepted"

    @app.post("/v1/track")
    async def track(request: Request):
        now, parsed = await _receive(request, "track", cfg.max_track_body_bytes)
        if isinstance(parsed, JSONResponse):
            return parsed
        outcome = _judge(parsed, now, "track", None)
        if outcome == "accepted":
            state.events.append([landing_writer.event_line(parsed)], now)
            state.counts["accepted"] += 1
            return JSONResponse({"status": "accepted", "event_id": parsed["event_id"]}, 202)
        if outcome == "dropped":
            return JSONResponse({"status": "dropped", "reason": "no_tracking_consent"}, 202)
        return JSONResponse({"status": "rejected", **outcome}, 422)

    @app.post("/v1/batch")
    async def batch(request: Request):
        now, parsed = await _receive(request, "batch", cfg.max_batch_body_bytes)
        if isinstance(parsed, JSONResponse):
            return parsed
        events = parsed.get("events") if isinstance(parsed, dict) else parsed
        if not isinstance(events, list):
            state.reject(now, "batch", "invalid_batch", event=parsed)
            return _refusal(400, "invalid_batch", detail='expected [...] or {"events": [...]}')
        if len(events) > cfg.max_batch_events:
            state.reject(now, "batch", "too_many_events", event=events)
            return _refusal(413, "too_many_events", limit_events=cfg.max_batch_events)
        lines, refused, dropped = [], [], 0
        for index, event in enumerate(events):
            outcome = _judge(event, now, "batch", index)
            if outcome == "accepted":
                lines.append(landing_writer.event_line(event))
            elif outcome == "dropped":
                dropped += 1
            else:
                refused.append(outcome)
        state.events.append(lines, now)
        state.counts["accepted"] += len(lines)
        body = {
            "status": "accepted" if not refused else "partially_rejected",
            "accepted": len(lines),
            "dropped": dropped,
            "rejected": refused,
        }
        return JSONResponse(body, 422 if refused else 202)

    @app.api_route("/u", methods=["GET", "POST"])
    async def unsubscribe(c: str = "", k: str = "", t: str = ""):
        """The email's signed unsubscribe link (GET click or RFC 8058 one-click POST).

        A valid token becomes an `unsubscribe` event in the landing zone (its id derives from the
        token, so repeated clicks are one event); consent gating never applies to it.
        """
        now = dt.datetime.now(dt.UTC)
        if not (c and k and t and links.verify(t, "unsubscribe", c, k)):
            state.reject(now, "unsubscribe", "invalid_token", event={"c": c, "k": k, "t": t})
            return _refusal(403, "invalid_token")
        event = {
            "event_id": "unsub-" + hashlib.sha256(t.encode()).hexdigest()[:24],
            "user_id": c,
            "event_type": "unsubscribe",
            "timestamp": now.isoformat(),
            "campaign_id": k,
        }
        state.events.append([landing_writer.event_line(event)], now)
        state.counts["accepted"] += 1
        return JSONResponse({"status": "unsubscribed", "customer_id": c, "campaign_id": k})

    def _preferences_refused(now: dt.datetime, c: str, k: str, t: str) -> HTMLResponse | None:
        if c and k and t and links.verify(t, "preferences", c, k):
            return None
        state.reject(now, "preferences", "invalid_token", event={"c": c, "k": k, "t": t})
        return HTMLResponse("<!DOCTYPE html><p>This link is not valid.</p>", 403)

    @app.get("/preferences")
    async def preferences_page(c: str = "", k: str = "", t: str = ""):
        """The preference centre for the customer and campaign the signed link names."""
        refused = _preferences_refused(dt.datetime.now(dt.UTC), c, k, t)
        if refused is not None:
            return refused
        unsubscribed, known = state.email_preferences(c)
        centre = state.preference_centre()
        html = centre.render(
            customer_id=c, campaign_id=k, token=t, known=known, unsubscribed=unsubscribed
        )
        return HTMLResponse(html)

    @app.post("/preferences")
    async def preferences_submit(request: Request, c: str = "", k: str = "", t: str = ""):
        """The page's form: lands the choice as an event, answers with the updated page."""
        now = dt.datetime.now(dt.UTC)
        refused = _preferences_refused(now, c, k, t)
        if refused is not None:
            return refused
        try:
            body = await _read_body(request, cfg.max_track_body_bytes)
        except _TooLarge:
            return _refusal(413, "body_too_large", limit_bytes=cfg.max_track_body_bytes)
        centre = state.preference_centre()
        submission = centre.submission(body)
        events = centre.events(submission, customer_id=c, campaign_id=k, token=t, now=now)
        state.events.append([landing_writer.event_line(e) for e in events], now)
        state.counts["accepted"] += len(events)
        html = centre.render(
            customer_id=c,
            campaign_id=k,
            token=t,
            known=submission.choices,
            unsubscribed=submission.unsubscribe_all,
            saved="unsubscribed" if submission.unsubscribe_all else "groups",
        )
        return HTMLResponse(html)

    @app.get("/healthz")
    async def health():
        return {
            "status": "ok",
            **state.counts,
            "pending_events": state.events.pending_events,
            "files_flushed": len(state.events.flushed_files),
        }

    @app.post("/v1/flush")
    async def flush(request: Request):
        """Rename the open micro-batch files now (operators, tests)."""
        problem = state.write_key_problem(request)
        if problem:
            return _refusal(401, problem)
        path = state.events.flush()
        state.rejected.flush()
        return {"flushed": str(path) if path else None}

    return app


def _refusal(status: int, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": "rejected", "reason": reason, **extra}, status)
