"""The target of an email's signed "view in browser" link, for the send-time API service.

`/view/<payload key>?t=<token>` carries no customer id: the payload (campaign or journey) is looked
up by its key and the token checked against its customer, so a link cannot be forged or reused
for another email. No Dagster imports.
"""

from __future__ import annotations

import duckdb

from personalization_assets.defs.campaigns import links
from personalization_assets.defs.delivery import ledger


def view_in_browser(
    con: duckdb.DuckDBPyConnection, payload_key: str, token: str, secret: bytes | None = None
) -> str | None:
    """The rendered HTML for a valid link, else None (unknown key or wrong token alike)."""
    ledger.ensure_tables(con)
    rows = con.execute(
        f"select customer_id, html from ({ledger.payloads_sql(con)}) "
        "where idempotency_key = ? and status = 'rendered'",
        [payload_key],
    ).fetchall()
    if not rows:
        return None
    customer_id, html = rows[0]
    if not links.verify(token, "view", customer_id, payload_key, secret):
        return None
    return html
