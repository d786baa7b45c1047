"""Helpers for the delivery tests: small payload warehouses, a test clock, ledger readers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from personalization_assets.defs.campaigns.links import email_links
from personalization_assets.defs.delivery.config import DeliveryConfig, RetryPolicy
from personalization_assets.defs.delivery.delivery import Clock

T0 = dt.datetime(2026, 11, 20, 9, 0)


class StepClock(Clock):
    """Starts at a fixed instant; `sleep` advances it without waiting (and is totalled)."""

    def __init__(self, start: dt.datetime = T0) -> None:
        super().__init__(start)
        self.current = start
        self.slept = 0.0

    def now(self) -> dt.datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.slept += seconds
            self.current += dt.timedelta(seconds=seconds)


def delivery_config(**overrides) -> DeliveryConfig:
    retry = overrides.pop("retry", {})
    return DeliveryConfig(
        from_address="hello@shop.example.com",
        from_name="Example Shop",
        message_id_domain="mail.shop.example.com",
        rate_limit_per_second=overrides.pop("rate_limit_per_second", 1000),
        retry=RetryPolicy(
            **{"backoff_seconds": 10, "max_attempts": 3, "max_wait_in_run_seconds": 600, **retry}
        ),
        **overrides,
    )


def add_payloads(con, addresses: list[str | None], *, campaign="weekly_newsletter", day=None):
    """One rendered payload per address (customer c<i>), with signed links in the headers."""
    day = day or T0.date()
    rows = []
    for i, address in enumerate(addresses):
        customer = f"c{i:03d}"
        key = f"{campaign}-{customer}-{day}"
        links = email_links("https://shop.example.com", customer, campaign, key)
        headers = {
            "List-Unsubscribe": f"<{links['unsubscribe_url']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        rows.append(
            [key, day, campaign, customer, "A", "general", "general_promotion", address,
             f"Hello {customer}", "pre", f"<p>Hi {customer}</p><a href=\"{links['unsubscribe_url']}\">"
             "Unsubscribe</a>", f"Hi {customer}\nUnsubscribe: {links['unsubscribe_url']}",
             json.dumps(headers), "{}", "rendered", None, T0]
        )  # fmt: skip
    con.executemany(
        "insert into campaigns.email_payloads (idempotency_key, send_date, campaign_id, "
        "customer_id, variant, rule, template, to_address, subject, preheader, html, text, "
        "headers, model_versions, status, error, rendered_at) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return [row[0] for row in rows]


def ledger_rows(con) -> dict[str, tuple]:
    """key → (status, attempts, last_error)"""
    return {
        key: (status, attempts, error)
        for key, status, attempts, error in con.execute(
            "select idempotency_key, status, attempts, last_error from delivery.send_ledger"
        ).fetchall()
    }


def delivered_keys(directory: Path) -> list[str]:
    from personalization_assets.defs.delivery.smtp_sink import read_messages

    return [m["X-Idempotency-Key"] for m in read_messages(directory)]
