"""The SMTP sink as `make smtp-sink` runs it: a process with a pid file, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage

from personalization_assets import paths
from personalization_assets.defs.delivery.smtp_sink import read_messages


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_sink_runs_as_a_process_with_a_pid_file_and_stores_eml_files(tmp_path):
    port, pid_file, folder = _free_port(), tmp_path / "sink.pid", tmp_path / "mail"
    process = subprocess.Popen(
        [sys.executable, "-m", "personalization_assets.defs.delivery.smtp_sink",
         "--port", str(port), "--dir", str(folder), "--pid-file", str(pid_file)],
        cwd=paths.PROJECT_ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert int(pid_file.read_text()) == process.pid
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "Hi"
        message.set_content("hello")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message)
        (stored,) = read_messages(folder)
        assert stored["Subject"] == "Hi" and stored.get_content().strip() == "hello"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert not pid_file.exists()
