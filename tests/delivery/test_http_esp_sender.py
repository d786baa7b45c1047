"""The HTTP ESP sender against a real HTTP server on loopback: bulk JSON, retries, rejections."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from personalization_assets.defs.delivery.delivery import deliver
from personalization_assets.defs.delivery.senders import HttpEspSender, HttpEspSettings
from tests.delivery.support import StepClock, add_payloads, delivery_config, ledger_rows


class FakeEsp(BaseHTTPRequestHandler):
    """Answers 503 to the first `fail_first` requests, then per-message results."""

    requests: list[dict] = []
    fail_first = 0
    reject: set[str] = set()

    def do_POST(self):  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        cls.requests.append({"body": body, "auth": self.headers.get("Authorization")})
        if len(cls.requests) <= cls.fail_first:
            self.send_response(503)
            self.end_headers()
            return
        results = [
            {
                "idempotency_key": m["idempotency_key"],
                "status": "rejected" if m["to"][0]["email"] in cls.reject else "accepted",
                "message_id": f"esp-{i}",
                "error": "mailbox does not exist",
            }
            for i, m in enumerate(body["messages"])
        ]
        payload = json.dumps({"results": results}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        return None


@pytest.fixture
def esp():
    FakeEsp.requests, FakeEsp.fail_first, FakeEsp.reject = [], 0, set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEsp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v3/mail/batch", FakeEsp
    server.shutdown()
    server.server_close()


def test_bulk_json_batches_with_per_message_results_and_retry_on_503(con, esp):
    url, handler = esp
    keys = add_payloads(con, [f"u{i}@example.com" for i in range(5)])
    handler.fail_first = 1
    handler.reject = {"u3@example.com"}
    sender = HttpEspSender(HttpEspSettings(url=url, api_key="secret", batch_size=2))
    deliver(con, sender, delivery_config(), run_id="http", mode="http", clock=StepClock())
    batches = [[m["idempotency_key"] for m in r["body"]["messages"]] for r in handler.requests]
    assert batches == [keys[:2], keys[2:4], keys[4:], keys[:2]]  # 503, then retried after backoff
    assert {r["auth"] for r in handler.requests} == {"Bearer secret"}
    first = handler.requests[1]["body"]["messages"][0]
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["headers"]["Message-ID"] == f"<{first['idempotency_key']}@mail.shop.example.com>"
    assert first["html"] and first["text"] and first["subject"]
    rows = ledger_rows(con)
    assert rows[keys[3]][0] == "bounced"
    assert {rows[k][0] for k in keys if k != keys[3]} == {"sent"}
    assert con.execute("select email from campaigns.suppressions").fetchall() == [
        ("u3@example.com",)
    ]
    provider_ids = con.execute(
        "select provider_message_id from delivery.send_ledger where status = 'sent'"
    ).fetchall()
    assert all(pid.startswith("esp-") for (pid,) in provider_ids)


def test_an_unreachable_endpoint_is_a_temporary_failure(con):
    keys = add_payloads(con, ["a@example.com"])
    sender = HttpEspSender(HttpEspSettings(url="http://127.0.0.1:9/unreachable"))
    config = delivery_config(retry={"max_wait_in_run_seconds": 0})
    deliver(con, sender, config, run_id="http", mode="http", clock=StepClock())
    status, attempts, error = ledger_rows(con)[keys[0]]
    assert (status, attempts) == ("retry", 1) and error.startswith("connect")


def test_the_sender_resource_is_a_dry_run_unless_configured(monkeypatch):
    from personalization_assets.defs.delivery.resources import SenderResource
    from personalization_assets.defs.delivery.senders import DryRunSender, SmtpSender

    monkeypatch.delenv("PERSONALIZATION_SENDER_MODE", raising=False)
    assert isinstance(SenderResource().build(), DryRunSender)
    monkeypatch.setenv("PERSONALIZATION_SENDER_MODE", "smtp")
    monkeypatch.setenv("PERSONALIZATION_SMTP_PORT", "2525")
    smtp = SenderResource().build()
    assert isinstance(smtp, SmtpSender) and smtp.settings.port == 2525
    with pytest.raises(ValueError, match="needs http_url"):
        SenderResource(mode="http").build()
    with pytest.raises(ValueError, match="dry_run, smtp or http"):
        SenderResource(mode="carrier_pigeon").build()
