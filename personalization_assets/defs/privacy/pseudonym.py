"""Keyed hashes of customer identifiers (HMAC-SHA256). No Dagster imports.

The key comes from the environment variable `PERSONALIZATION_PSEUDONYM_KEY`. Without it a
development key is used and marked as such: it is public (it is in this file), so hashes made
with it protect nothing. Set a real secret (e.g. `openssl rand -hex 32`) in every deployment
and never commit it. Keep it stable: the erasure tombstone stores hashes made with it, so a new
key would stop the loaders from recognizing customers erased under the old one.

The analytics layers (features, segments, models) are keyed by `customer_key` =
`customer_hash(customer_id)`, computed inside DuckDB by `customer_key_sql`: `configure_duckdb`
stores the HMAC pads (not the key) in connection variables, so neither the key nor the pads
ever appear in SQL text, dbt's compiled files or query logs. dbt sets the same variables
through the `personalization_assets.dbt_plugin` profile plugin.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from personalization_assets.defs.warehouse.summary import table_columns

KEY_ENV = "PERSONALIZATION_PSEUDONYM_KEY"
DEV_KEY = "dev-only-pseudonym-key-NOT-A-SECRET"
# The restricted mapping table (dbt model `customer_keys`): the only way from key back to id.
KEYS_TABLE = "main.customer_keys"
IPAD_VARIABLE = "pseudonym_ipad"
OPAD_VARIABLE = "pseudonym_opad"
HMAC_BLOCK_SIZE = 64  # SHA-256 block size in bytes (RFC 2104)


def pseudonym_key() -> bytes:
    """The HMAC key from the environment, else the public development key."""
    return (os.environ.get(KEY_ENV) or DEV_KEY).encode("utf-8")


def using_dev_key() -> bool:
    return not os.environ.get(KEY_ENV)


def normalize_id(customer_id: object) -> str:
    """Ids as staging cleans them (trimmed, lower case; `13085.0` of order exports is `13085`)."""
    return re.sub(r"\.0+$", "", str(customer_id).strip().lower())


def normalize_email(email: object) -> str:
    return str(email).strip().lower()


def keyed_hash(value: str, key: bytes | None = None) -> str:
    """Hex HMAC-SHA256 of `value` under the pseudonym key."""
    return hmac.new(key or pseudonym_key(), value.encode("utf-8"), hashlib.sha256).hexdigest()


def customer_hash(customer_id: object, key: bytes | None = None) -> str:
    return keyed_hash("customer:" + normalize_id(customer_id), key)


def email_hash(email: object, key: bytes | None = None) -> str:
    return keyed_hash("email:" + normalize_email(email), key)


def hmac_pads(key: bytes | None = None) -> tuple[bytes, bytes]:
    """RFC 2104 inner and outer pads of the key for SHA-256 (keys over 64 bytes hashed first)."""
    key = key or pseudonym_key()
    if len(key) > HMAC_BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(HMAC_BLOCK_SIZE, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def configure_duckdb(con, key: bytes | None = None) -> None:
    """Store the HMAC pads in the connection's variables (bound as parameters, never in SQL).

    DuckDB variables belong to one connection: call this for every connection and cursor that
    evaluates `customer_key_sql`.
    """
    ipad, opad = hmac_pads(key)
    con.execute(f"set variable {IPAD_VARIABLE} = ?::blob", [ipad])
    con.execute(f"set variable {OPAD_VARIABLE} = ?::blob", [opad])


def keyed_relation_sql(relation: str, id_column: str = "customer_id") -> str:
    """A subquery of `relation` with its customer id replaced by `customer_key` (rows without a
    known customer dropped), joined through the restricted `customer_keys` table."""
    return (
        f"(select _keys.customer_key, _rel.* exclude ({id_column}) from {relation} as _rel "
        f"join {KEYS_TABLE} as _keys on _keys.customer_id = _rel.{id_column})"
    )


def reidentified_sql(relation: str) -> str:
    """A subquery of a keyed analytics `relation` with the customer id added back (joined
    through the restricted `customer_keys`): for the campaign layer, which sends to ids."""
    return (
        f"(select _keys.customer_id, _rel.* from {relation} as _rel "
        f"join {KEYS_TABLE} as _keys on _keys.customer_key = _rel.customer_key)"
    )


def rekey_legacy_table(con, table: str) -> bool:
    """Convert a table written before pseudonymization (a `customer_id` column, no
    `customer_key`) in place: ids become keys through `customer_keys`. True if it did."""
    columns = table_columns(con, *table.split("."))
    if "customer_id" not in columns or "customer_key" in columns:
        return False
    con.execute(f"create or replace table {table} as select * from {keyed_relation_sql(table)}")
    return True


def customer_key_sql(expr: str) -> str:
    """DuckDB SQL for `customer_hash(<expr>)`: lowercase hex HMAC-SHA256 of "customer:" + id.

    Raises (DuckDB `error`) instead of producing null keys when the connection was not set up
    with `configure_duckdb`; a null id gives a null key.
    """
    normalized = f"regexp_replace(lower(trim(cast({expr} as varchar))), '\\.0+$', '')"
    ipad, opad = f"getvariable('{IPAD_VARIABLE}')", f"getvariable('{OPAD_VARIABLE}')"
    return (
        f"(case when {ipad} is null or {opad} is null then error("
        f"'customer_key: pseudonym key not configured on this DuckDB connection "
        f"(personalization_assets.defs.privacy.pseudonym.configure_duckdb)') "
        f"else sha256({opad} || unhex(sha256({ipad} || encode('customer:' || {normalized})))) end)"
    )
