"""Delivery against a real SMTP server on loopback: exactly once, retries, bounces, bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser

import pytest

from personalization_assets import paths
from personalization_assets.defs.delivery import feedback, ledger
from personalization_assets.defs.delivery.delivery import deliver
from personalization_assets.defs.delivery.senders import DryRunSender, SmtpSender, SmtpSettings
from personalization_assets.defs.delivery.smtp_sink import read_messages
from tests.delivery.support import (
    T0,
    StepClock,
    add_payloads,
    delivered_keys,
    delivery_config,
    ledger_rows,
)


def _smtp(sink) -> SmtpSender:
    return SmtpSender(SmtpSettings(port=sink.port, timeout_seconds=10))


def _deliver(con, sink, *, config=None, clock=None, run_id="run-1", **kwargs):
    return deliver(
        con,
        _smtp(sink),
        config or delivery_config(),
        run_id=run_id,
        mode="smtp",
        clock=clock or StepClock(),
        **kwargs,
    )


def test_every_payload_arrives_once_as_mime_with_unsubscribe_headers(con, sink):
    keys = add_payloads(con, [f"user{i}@example.com" for i in range(12)])
    summary = _deliver(con, sink)
    assert summary.outcomes == {"sent": 12}
    messages = sink.messages()
    assert sorted(m["X-Idempotency-Key"] for m in messages) == sorted(keys)
    for message in messages:
        key = message["X-Idempotency-Key"]
        assert message.get_content_type() == "multipart/alternative"
        assert message["Message-ID"] == f"<{key}@mail.shop.example.com>"
        assert message["From"] == "Example Shop <hello@shop.example.com>" and message["Date"]
        assert message["List-Unsubscribe"].startswith("<https://shop.example.com/u?")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        assert "Unsubscribe</a>" in html and "Unsubscribe: https://" in text
    rows = ledger_rows(con)
    assert {status for status, _, _ in rows.values()} == {"sent"}

    again = _deliver(con, sink, run_id="run-2")
    assert again.attempts == 0 and len(sink.messages()) == 12


def test_invalid_and_missing_addresses_fail_with_the_reason_and_are_never_sent(con, sink):
    addresses = [
        "ok@example.com",
        None,
        "  ",
        "no-at-sign",
        "a@b@example.com",
        "jürgen@example.com",
    ]
    keys = add_payloads(con, addresses)
    injected = add_payloads(con, ["evil@example.com"], campaign="win_back")
    con.execute(
        "update campaigns.email_payloads set subject = 'Hi\r\nBcc: all@example.com' "
        "where idempotency_key = ?",
        injected,
    )
    _deliver(con, sink)
    rows = ledger_rows(con)
    assert delivered_keys(sink.handler.directory) == [keys[0]]
    assert rows[keys[1]][0] == "failed" and rows[keys[1]][2] == "missing_address"
    assert rows[keys[2]][2] == "missing_address"
    assert rows[keys[3]][2].startswith("invalid_address") and rows[keys[4]][0] == "failed"
    assert rows[keys[5]][0] == "failed"  # no SMTPUTF8: refused here, not half-sent
    assert rows[injected[0]][0] == "failed" and "invalid message" in rows[injected[0]][2]


def test_a_temporary_failure_is_retried_with_backoff_then_sent_once(con, sink):
    keys = add_payloads(con, ["slow@example.com", "fine@example.com"])
    sink.rules["slow@example.com"] = "defer:2"
    clock = StepClock()
    _deliver(con, sink, clock=clock)
    assert ledger_rows(con)[keys[0]][:2] == ("sent", 3)
    assert sorted(delivered_keys(sink.handler.directory)) == sorted(keys)
    assert clock.slept >= 10 + 20  # backoff 10 s, then 20 s
    events = con.execute(
        "select event_type, count(*) from delivery.delivery_events where idempotency_key = ? "
        "group by all",
        [keys[0]],
    ).fetchall()
    assert dict(events) == {"deferred": 2, "sent": 1}


def test_temporary_failures_give_up_after_max_attempts(con, sink):
    keys = add_payloads(con, ["never@example.com"])
    sink.rules["never@example.com"] = "defer"
    _deliver(con, sink)
    status, attempts, error = ledger_rows(con)[keys[0]]
    assert (status, attempts) == ("failed", 3) and error.startswith("gave up after 3 attempts")
    assert sink.messages() == []


def test_a_retry_due_after_the_run_budget_waits_for_the_next_run(con, sink):
    keys = add_payloads(con, ["later@example.com"])
    sink.rules["later@example.com"] = "defer:1"
    _deliver(con, sink, config=delivery_config(retry={"max_wait_in_run_seconds": 5}))
    assert ledger_rows(con)[keys[0]][0] == "retry"  # due at T0 + 10 s, past this run's 5 s
    budget = delivery_config(retry={"max_wait_in_run_seconds": 5})
    early = _deliver(
        con, sink, config=budget, clock=StepClock(T0 + dt.timedelta(seconds=4)), run_id="run-2"
    )
    assert early.attempts == 0
    _deliver(
        con,
        sink,
        config=delivery_config(retry={"max_wait_in_run_seconds": 5}),
        run_id="run-3",
        clock=StepClock(T0 + dt.timedelta(seconds=10)),
    )
    assert ledger_rows(con)[keys[0]][:2] == ("sent", 2)


def test_a_permanent_failure_bounces_and_suppresses_the_address(con, sink):
    keys = add_payloads(con, ["gone@example.com", "here@example.com"])
    sink.rules["gone@example.com"] = "reject"
    _deliver(con, sink)
    status, attempts, error = ledger_rows(con)[keys[0]]
    assert (status, attempts) == ("bounced", 1) and error.startswith("RCPT TO: 550")
    assert con.execute(
        "select customer_id, email, reason from campaigns.suppressions"
    ).fetchall() == [("c000", "gone@example.com", "hard_bounce")]
    assert delivered_keys(sink.handler.directory) == [keys[1]]
    # A later payload to the same address is suppressed before it goes out.
    later = add_payloads(con, ["gone@example.com"], campaign="win_back")
    _deliver(con, sink, run_id="run-2")
    assert ledger_rows(con)[later[0]][0] == "suppressed"


def test_a_connection_dropped_before_the_body_is_retried_and_the_batch_goes_on(con, sink):
    keys = add_payloads(con, [f"u{i}@example.com" for i in range(6)])
    sink.rules["u2@example.com"] = "drop:1"
    _deliver(con, sink)
    assert {k: r[0] for k, r in ledger_rows(con).items()} == dict.fromkeys(keys, "sent")
    assert ledger_rows(con)[keys[2]][1] == 2
    assert sorted(delivered_keys(sink.handler.directory)) == sorted(keys)


def test_a_connection_dropped_after_the_body_is_unknown_never_resent_then_settled(con, sink):
    keys = add_payloads(con, ["a@example.com", "b@example.com", "c@example.com"])
    sink.rules["b@example.com"] = "drop_after_data"
    _deliver(con, sink)
    rows = ledger_rows(con)
    assert rows[keys[1]][0] == "unknown" and "connection lost at body" in rows[keys[1]][2]
    _deliver(con, sink, run_id="run-2")
    assert sorted(delivered_keys(sink.handler.directory)) == sorted(keys)  # b stored once
    found = [m["Message-ID"] for m in sink.messages()]
    assert ledger.resolve_unknown(con, found, T0) == {"sent": 1, "queued": 0}
    assert ledger_rows(con)[keys[1]][0] == "sent"


KILL_SCRIPT = """
import sys, duckdb
from personalization_assets.defs.delivery.delivery import Clock, deliver
from personalization_assets.defs.delivery.senders import SmtpSender, SmtpSettings
from tests.delivery.support import delivery_config
con = duckdb.connect(sys.argv[1]); con.execute("set TimeZone = 'UTC'")
deliver(con, SmtpSender(SmtpSettings(port=int(sys.argv[2]))),
        delivery_config(rate_limit_per_second=25), run_id="killed", mode="smtp", clock=Clock())
"""


def test_a_run_killed_mid_batch_and_rerun_sends_nothing_twice_and_loses_nothing(
    con, sink, tmp_path
):
    keys = add_payloads(con, [f"k{i}@example.com" for i in range(40)])
    database = str(tmp_path / "warehouse.duckdb")
    con.close()
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, database, str(sink.port)],
        cwd=paths.PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(paths.PROJECT_ROOT)},
    )
    deadline = time.monotonic() + 60
    while len(list(sink.handler.directory.glob("*.eml"))) < 8 and process.poll() is None:
        assert time.monotonic() < deadline, "the delivery process sent nothing"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = delivered_keys(sink.handler.directory)
    assert 8 <= len(before) < 40

    import duckdb

    con = duckdb.connect(database)
    con.execute("set TimeZone = 'UTC'")
    rerun = _deliver(con, sink, run_id="rerun")
    assert rerun.recovered_unknown <= 1
    after = delivered_keys(sink.handler.directory)
    assert len(after) == len(set(after))  # nothing twice
    statuses = ledger_rows(con)
    assert all(statuses[k][0] in ("sent", "unknown") for k in keys)
    # The unknown one (claimed, maybe sent) is settled from the mailbox by its Message-ID.
    ledger.resolve_unknown(con, [m["Message-ID"] for m in sink.messages()], T0)
    _deliver(con, sink, run_id="settle")
    final = delivered_keys(sink.handler.directory)
    assert sorted(final) == sorted(keys)
    assert {r[0] for r in ledger_rows(con).values()} == {"sent"}
    con.close()


def test_nothing_is_sent_before_its_send_at(con, sink):
    keys = add_payloads(con, ["now@example.com", "later@example.com"])
    con.execute("alter table campaigns.email_payloads add column if not exists send_at timestamp")
    con.execute(
        "update campaigns.email_payloads set send_at = ? where idempotency_key = ?",
        [T0 + dt.timedelta(hours=2), keys[1]],
    )
    _deliver(con, sink)
    assert delivered_keys(sink.handler.directory) == [keys[0]]
    _deliver(con, sink, clock=StepClock(T0 + dt.timedelta(hours=1, minutes=59)), run_id="r2")
    assert len(sink.messages()) == 1
    _deliver(con, sink, clock=StepClock(T0 + dt.timedelta(hours=2)), run_id="r3")
    assert sorted(delivered_keys(sink.handler.directory)) == sorted(keys)


def test_a_dry_run_sends_nothing_and_a_real_sender_sends_afterwards(con, sink):
    keys = add_payloads(con, ["a@example.com", "b@example.com"])
    dry = DryRunSender()
    deliver(con, dry, delivery_config(), run_id="dry", mode="dry_run", clock=StepClock())
    assert dry.sent_keys == keys
    assert {r[0] for r in ledger_rows(con).values()} == {"dry_run"} and sink.messages() == []
    _deliver(con, sink)
    assert sorted(delivered_keys(sink.handler.directory)) == sorted(keys)


def test_the_rate_limit_paces_messages(con, sink):
    add_payloads(con, [f"r{i}@example.com" for i in range(11)])
    clock = StepClock()
    _deliver(con, sink, config=delivery_config(rate_limit_per_second=5), clock=clock)
    assert clock.slept == pytest.approx(10 / 5)


def test_withdrawn_overdue_and_suppressed_payloads_are_not_sent(con, sink):
    keys = add_payloads(con, ["a@example.com", "b@example.com", "c@example.com"])
    deliver(con, DryRunSender(), delivery_config(), run_id="dry", mode="dry_run", clock=StepClock())
    con.execute("delete from campaigns.email_payloads where idempotency_key = ?", [keys[0]])
    ledger.suppress(con, None, "B@example.com", "complaint", T0)
    _deliver(con, sink, clock=StepClock(T0 + dt.timedelta(hours=1)))
    rows = ledger_rows(con)
    assert (rows[keys[0]][0], rows[keys[1]][0], rows[keys[2]][0]) == (
        "cancelled",
        "suppressed",
        "sent",
    )
    late = add_payloads(con, ["d@example.com"], campaign="win_back")
    deliver(
        con, DryRunSender(), delivery_config(), run_id="dry2", mode="dry_run", clock=StepClock()
    )
    _deliver(con, sink, clock=StepClock(T0 + dt.timedelta(hours=49)), run_id="r3")
    assert ledger_rows(con)[late[0]][0] == "expired"


def test_feedback_complaints_and_hard_bounces_suppress_soft_bounces_do_not(con, sink, tmp_path):
    keys = add_payloads(con, ["a@example.com", "b@example.com", "c@example.com"])
    _deliver(con, sink)
    folder = tmp_path / "feedback"
    folder.mkdir()
    lines = [
        {"type": "complaint", "message_id": f"<{keys[0]}@mail.shop.example.com>"},
        {"type": "bounce", "bounce_type": "soft", "idempotency_key": keys[1]},
        {"type": "bounce", "bounce_type": "hard", "idempotency_key": keys[2]},
        "not json",
    ]
    (folder / "esp.jsonl").write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    )
    first = feedback.apply_feedback(con, folder, T0)
    again = feedback.apply_feedback(con, folder, T0)
    assert (first.new_events, first.suppressed, len(first.invalid_lines)) == (3, 2, 1)
    assert (again.files, again.new_events) == (0, 0)  # unchanged file: skipped
    with (folder / "esp.jsonl").open("a") as handle:  # the ESP appends: only new lines count
        handle.write(json.dumps({"type": "unsubscribe", "email": "z@example.com"}) + "\n")
    appended = feedback.apply_feedback(con, folder, T0)
    assert (appended.files, appended.new_events, appended.suppressed) == (1, 1, 1)
    rows = ledger_rows(con)
    assert [rows[k][0] for k in keys] == ["complained", "sent", "bounced"]
    assert sorted(con.execute("select email, reason from campaigns.suppressions").fetchall()) == [
        ("a@example.com", "complaint"),
        ("c@example.com", "hard_bounce"),
        ("z@example.com", "unsubscribed"),
    ]


def test_sink_messages_are_parseable_files_on_disk(con, sink):
    add_payloads(con, ["a@example.com"])
    _deliver(con, sink)
    (path,) = sink.handler.directory.glob("*.eml")
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert (
        message.is_multipart() and read_messages(sink.handler.directory)[0]["To"] == "a@example.com"
    )


def test_the_view_in_browser_link_shows_the_email_only_with_its_own_token(con):
    from urllib.parse import parse_qs, urlparse

    from personalization_assets.defs.campaigns.links import email_links
    from personalization_assets.defs.delivery.view import view_in_browser

    keys = add_payloads(con, ["a@example.com", "b@example.com"])
    url = email_links("https://shop.example.com", "c000", "weekly_newsletter", keys[0])[
        "view_in_browser_url"
    ]
    parsed = urlparse(url)
    key, token = parsed.path.rsplit("/", 1)[1], parse_qs(parsed.query)["t"][0]
    assert "Hi c000" in view_in_browser(con, key, token)
    assert view_in_browser(con, keys[1], token) is None  # another customer's email
    assert view_in_browser(con, key, token[:-2] + "xx") is None
    assert view_in_browser(con, "no-such-key", token) is None
