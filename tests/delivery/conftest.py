"""Delivery fixtures: a real aiosmtpd SMTP server on loopback and a small payload warehouse."""

from __future__ import annotations

import duckdb
import pytest

from personalization_assets.defs.campaigns.payloads import PAYLOADS_DDL
from personalization_assets.defs.delivery.smtp_sink import SmtpSink


@pytest.fixture
def sink(tmp_path):
    with SmtpSink(tmp_path / "sink") as server:
        yield server


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute("set TimeZone = 'UTC'")
    connection.execute("create schema campaigns")
    connection.execute(PAYLOADS_DDL)
    yield connection
    connection.close()
