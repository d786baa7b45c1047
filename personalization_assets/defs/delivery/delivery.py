"""The delivery loop: ledger in, transport out, at a rate limit, with retries. No Dagster imports.

One run: settle rows a dead run left `sending` (→ `unknown`), queue new rendered payloads, settle
open rows (withdrawn → `cancelled`, suppressed → `suppressed`, overdue → `expired`), then claim due
rows in batches of the sender's `max_batch`, check the address, pace to
`rate_limit_per_second`, send and record each outcome. Temporary failures come back as `retry`
after exponential backoff; a run waits for retries due within `max_wait_in_run_seconds` and
leaves later ones to the next run. Nothing is sent before its `send_at`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import duckdb

from personalization_assets.defs.delivery import ledger
from personalization_assets.defs.delivery.config import DeliveryConfig
from personalization_assets.defs.delivery.senders import OutgoingEmail, Sender, SendOutcome

DUE_CHUNK = 20_000  # due rows listed per ledger query (without content)
WINDOW = 500  # due messages read with their content at a time; claimed sender.max_batch at a time
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class Clock:
    """Run time: starts at an explicit instant (naive UTC) and advances with the wall clock."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.start = start or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self._t0 = time.monotonic()

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=time.monotonic() - self._t0)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class RatePacer:
    """At most `rate` messages per second over the run (a batch of n takes n slots)."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self._next: dt.datetime | None = None

    def wait(self, messages: int) -> None:
        now = self.clock.now()
        if self._next is not None and self._next > now:
            self.clock.sleep((self._next - now).total_seconds())
            now = self.clock.now()
        self._next = max(self._next or now, now) + dt.timedelta(seconds=self.interval * messages)


@dataclass
class DeliverySummary:
    run_id: str
    mode: str
    outcomes: Counter = field(default_factory=Counter)  # new status → messages this run
    recovered_unknown: int = 0
    enqueued: int = 0
    settled: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    retries_left: int = 0
    ledger: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def valid_address(address: str | None) -> str | None:
    """None when the address is usable, else the reason."""
    if address is None or not address.strip():
        return "missing_address"
    if not _ADDRESS.match(address.strip()):
        return f"invalid_address: {address!r}"
    return None


def deliver(
    con: duckdb.DuckDBPyConnection,
    sender: Sender,
    config: DeliveryConfig,
    *,
    run_id: str,
    mode: str,
    clock: Clock,
    max_messages: int = 0,
) -> DeliverySummary:
    """Send every due payload once; return what happened."""
    started = clock.now()
    ledger.ensure_tables(con)
    summary = DeliverySummary(run_id=run_id, mode=mode)
    summary.recovered_unknown = ledger.recover_interrupted(con, started)
    summary.enqueued = ledger.enqueue(con, started)
    summary.settled = ledger.settle_open_rows(
        con, started, expire_after_hours=config.expire_after_hours
    )
    run = _DeliveryRun(con, sender, config, clock, run_id, mode, summary)
    limit = max_messages or config.max_messages_per_run
    step = max(WINDOW, sender.max_batch)
    try:
        while not limit or summary.attempts < limit:
            due = ledger.due_rows(
                con,
                now=clock.now(),
                states=run.states,
                limit=min(DUE_CHUNK, limit - summary.attempts) if limit else DUE_CHUNK,
            )
            if not due:
                if not _wait_for_retry(con, clock, started, config):
                    break
                continue
            for start in range(0, len(due), step):
                window = ledger.with_content(con, due[start : start + step])
                for first in range(0, len(window), sender.max_batch):
                    run.send(window[first : first + sender.max_batch])
                run.flush_events()
    finally:
        sender.close()
        run.flush_events()
    summary.ledger = ledger.status_counts(con)
    summary.retries_left = summary.ledger.get("retry", 0)
    summary.seconds = (clock.now() - started).total_seconds()
    return summary


class _DeliveryRun:
    """Claim, check, pace, send and record one batch at a time."""

    def __init__(self, con, sender, config, clock, run_id, mode, summary) -> None:
        self.con, self.sender, self.config, self.clock = con, sender, config, clock
        self.run_id, self.mode, self.summary = run_id, mode, summary
        self.dry_run = mode == "dry_run"
        # A dry run never turns a real send into "done"; a real sender also takes dry-run rows.
        self.states = ("queued", "retry") if self.dry_run else ledger.OPEN_STATES
        self.pacer = RatePacer(config.rate_limit_per_second, clock)
        self.events: list[tuple] = []

    def send(self, window: list[ledger.ClaimedMessage]) -> None:
        batch = ledger.claim(
            self.con,
            window,
            run_id=self.run_id,
            mode=self.mode,
            now=self.clock.now(),
            states=self.states,
            message_id_domain=self.config.message_id_domain,
        )
        self.summary.attempts += len(batch)
        sendable = []
        invalid = []
        for message in batch:
            problem = valid_address(message.to_address)
            if problem:
                invalid.append((message, SendOutcome("failed", error=problem)))
            else:
                sendable.append(message)
        self._record(invalid)
        if not sendable:
            return
        if not self.dry_run:  # the rate limit protects the mail server; a dry run sends nothing
            self.pacer.wait(len(sendable))
        emails = [_outgoing(m, self.config) for m in sendable]
        self._record(list(zip(sendable, self.sender.send_batch(emails), strict=False)))

    def _record(self, outcomes: list[tuple[ledger.ClaimedMessage, SendOutcome]]) -> None:
        statuses = ledger.record_many(
            self.con,
            outcomes,
            run_id=self.run_id,
            now=self.clock.now(),
            retry=self.config.retry,
            dry_run=self.dry_run,
            events=self.events,
        )
        for status in statuses:
            self.summary.outcomes[status] += 1

    def flush_events(self) -> None:
        ledger.write_events(self.con, self.events)
        self.events.clear()


def _wait_for_retry(con, clock: Clock, started: dt.datetime, config: DeliveryConfig) -> bool:
    """Sleep until the next retry when it falls inside this run's waiting budget."""
    due = ledger.next_retry_at(con)
    if due is None:
        return False
    deadline = started + dt.timedelta(seconds=config.retry.max_wait_in_run_seconds)
    if due > deadline:
        return False
    clock.sleep((due - clock.now()).total_seconds())
    return True


def _outgoing(message: ledger.ClaimedMessage, config: DeliveryConfig) -> OutgoingEmail:
    headers = json.loads(message.headers) if message.headers else {}
    return OutgoingEmail(
        idempotency_key=message.idempotency_key,
        to_address=message.to_address.strip(),
        from_address=config.from_address,
        from_name=config.from_name,
        reply_to=config.reply_to,
        subject=message.subject,
        html=message.html,
        text=message.text,
        headers={str(k): str(v) for k, v in headers.items()},
        message_id_domain=config.message_id_domain,
    )
