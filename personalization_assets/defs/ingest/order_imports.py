"""Column mappings that turn third-party order exports into canonical order lines.

Users describe each export layout once in `config/order_imports.yaml`; the loader matches a
file's header against the layouts and renames its columns. No Dagster imports here.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator

CANONICAL_ORDER_COLUMNS = (
    "invoice_id",
    "product_id",
    "description",
    "quantity",
    "ordered_at",
    "unit_price",
    "customer_id",
    "country",
)
REQUIRED_ORDER_COLUMNS = ("invoice_id", "product_id", "quantity", "ordered_at", "unit_price")


class OrderImportLayout(BaseModel):
    """One export layout: canonical column → the export's column name."""

    name: str
    columns: dict[str, str]
    currency: str = "EUR"
    timestamp_format: str = "%Y-%m-%d %H:%M:%S"
    timezone: str = "UTC"

    @field_validator("columns")
    @classmethod
    def _known_and_complete(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(CANONICAL_ORDER_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown}; allowed: {list(CANONICAL_ORDER_COLUMNS)}"
            )
        missing = [c for c in REQUIRED_ORDER_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"layout must map the required column(s) {missing}")
        return columns

    def matches(self, header: list[str]) -> bool:
        """True when every mapped source column is in the file's header."""
        present = {h.strip() for h in header}
        return all(source in present for source in self.columns.values())


class OrderImportsConfig(BaseModel):
    """All configured layouts, tried in order."""

    layouts: list[OrderImportLayout] = Field(default_factory=list)

    def layout_for(self, header: list[str], file_name: str) -> OrderImportLayout:
        """The first layout matching `header`, or a clear error naming what was expected."""
        for layout in self.layouts:
            if layout.matches(header):
                return layout
        expected = "; ".join(
            f"{layout.name}: {sorted(layout.columns.values())}" for layout in self.layouts
        )
        raise OrderImportError(
            f"{file_name}: header {header} matches no layout in order_imports.yaml "
            f"(expected one of — {expected})"
        )


class OrderImportError(ValueError):
    """An order export that no configured layout can read."""


def load_order_imports_config(path: Path) -> OrderImportsConfig:
    """Read and validate `order_imports.yaml`; a missing file means no layouts."""
    if not path.exists():
        return OrderImportsConfig()
    return OrderImportsConfig.model_validate(yaml.safe_load(path.read_text()) or {})
