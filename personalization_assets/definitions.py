"""The code location: everything under `defs/`, plus the resources it needs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from personalization_assets.defs.delivery.resources import SenderResource
from personalization_assets.defs.warehouse.project import dbt_executable, dbt_project
from personalization_assets.defs.warehouse.resources import (
    LandingZoneResource,
    ProjectConfigResource,
    WarehouseDbtResource,
    WarehouseResource,
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(
            resources={
                "warehouse": WarehouseResource(),
                "landing_zone": LandingZoneResource(),
                "project_config": ProjectConfigResource(),
                "dbt": WarehouseDbtResource(
                    project_dir=dbt_project, dbt_executable=dbt_executable()
                ),
                "sender": SenderResource(),
            }
        ),
    )
