"""Keyed hashes of customer identifiers (HMAC-SHA256). No Dagster imports.

The key comes from the environment variable `PERSONALIZATION_PSEUDONYM_KEY`. Without it a
development key is used and marked as such: it is public (it is in this file), so hashes made
with it protect nothing. Set a real secret (e.g. `openssl rand -hex 32`) in every deployment
and never commit it. Keep it stable: the erasure tombstone stores hashes made with it, so a new
key would stop the loaders from recognizing customers erased under the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

KEY_ENV = "PERSONALIZATION_PSEUDONYM_KEY"
DEV_KEY = "dev-only-pseudonym-key-NOT-A-SECRET"


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
