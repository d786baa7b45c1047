"""A real SMTP server on loopback that keeps every message as an `.eml` file (aiosmtpd).

For the demo (`make smtp-sink`) and the tests: point the `smtp` sender at it and read what
arrived with `read_messages`. It can be told to misbehave for chosen recipients, so tests see real
SMTP failures:

    reject            550 to RCPT TO (a permanent failure: the address bounces)
    defer             451 to RCPT TO every time (a temporary failure)
    defer:N           451 to RCPT TO the first N times, then accept
    drop              close the connection at RCPT TO (nothing handed over); drop:N the first N times
    drop_after_data   store the message, then close the connection without answering

Run it: `python -m personalization_assets.defs.delivery.smtp_sink --port 8025 --dir
data/smtp_sink --pid-file data/smtp_sink.pid` (stops on SIGTERM/SIGINT and removes the pid file).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import signal
import threading
import uuid
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller


class SinkHandler:
    """aiosmtpd handler: writes each accepted message to `<dir>/<n>-<uuid>.eml` atomically."""

    def __init__(self, directory: Path, rules: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rules: dict[str, str] = {k.lower(): v for k, v in (rules or {}).items()}
        self.rcpt_seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._count = len(list(self.directory.glob("*.eml")))

    def _rule(self, address: str) -> str:
        return self.rules.get(address.lower(), "")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        rule = self._rule(address)
        self.rcpt_seen[address.lower()] += 1
        if rule == "reject":
            return "550 5.1.1 No such user"
        if rule == "defer":
            return "451 4.3.0 Try again later"
        if rule.startswith("defer:") and self.rcpt_seen[address.lower()] <= int(rule[6:]):
            return "451 4.3.0 Try again later"
        if rule == "drop" or (
            rule.startswith("drop:") and self.rcpt_seen[address.lower()] <= int(rule[5:])
        ):
            server.transport.close()
            return "421 4.3.0 Closing"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        queue_id = uuid.uuid4().hex[:12]
        self._store(envelope.original_content or envelope.content, queue_id)
        if any(self._rule(r) == "drop_after_data" for r in envelope.rcpt_tos):
            server.transport.close()
            return "421 4.3.0 Closing"
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _store(self, content: bytes, queue_id: str) -> None:
        with self._lock:
            self._count += 1
            name = f"{self._count:06d}-{queue_id}.eml"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(content)
        tmp.replace(self.directory / name)


class SmtpSink:
    """The sink as a context manager: `with SmtpSink(dir, port=0) as sink: sink.port`."""

    def __init__(
        self,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rules: dict[str, str] | None = None,
    ) -> None:
        self.handler = SinkHandler(directory, rules)
        self.host = host
        self._controller = Controller(self.handler, hostname=host, port=port or _free_port(host))

    @property
    def port(self) -> int:
        return self._controller.port

    @property
    def rules(self) -> dict[str, str]:
        return self.handler.rules

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[EmailMessage]:
        return read_messages(self.handler.directory)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_messages(directory: Path) -> list[EmailMessage]:
    """Every stored message, parsed as MIME, in arrival order."""
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(Path(directory).glob("*.eml"))
    ]


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path("data/smtp_sink"))
    parser.add_argument("--pid-file", type=Path, default=None)
    parser.add_argument(
        "--rules", type=Path, default=None, help='JSON {"address": "reject|defer|drop|..."}'
    )
    args = parser.parse_args(argv)
    rules = json.loads(args.rules.read_text()) if args.rules else None
    sink = SmtpSink(args.dir, host=args.host, port=args.port, rules=rules).start()
    if args.pid_file:
        args.pid_file.parent.mkdir(parents=True, exist_ok=True)
        args.pid_file.write_text(f"{os.getpid()}\n")
    print(f"smtp sink on {args.host}:{sink.port}, messages in {args.dir.resolve()}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        sink.stop()
        if args.pid_file:
            args.pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
