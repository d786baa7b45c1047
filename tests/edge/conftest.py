"""Edge fixtures: settings pointing the services at a temporary landing zone and snapshot."""

from __future__ import annotations

import pytest

from personalization_assets.edge.settings import load_edge_settings
from tests.edge.servers import write_edge_config


@pytest.fixture
def collector_settings(tmp_path):
    def make(**collector):
        return load_edge_settings(
            write_edge_config(tmp_path / "config", **collector),
            landing_dir=tmp_path / "landing",
            snapshot_path=tmp_path / "snapshot.duckdb",
        )

    return make
