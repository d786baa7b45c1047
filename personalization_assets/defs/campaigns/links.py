"""Signed links in emails: unsubscribe, preference centre, view in browser. No Dagster imports.

Each link carries an HMAC-SHA256 token over (purpose, customer, campaign), keyed by a secret
from `PERSONALIZATION_LINK_SECRET`, so a link cannot be forged for another customer or purpose.
The "view in browser" token binds the payload key alone: the key (a hash of campaign, customer
and send date) already names one recipient's email, and a server holding only the rendered
payload files (no customer ids) can check it. Tokens of the older form, over (customer, key),
are still accepted where the customer is known.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from functools import lru_cache

SECRET_ENV = "PERSONALIZATION_LINK_SECRET"
DEV_SECRET = "dev-only-link-secret-change-me"


def link_secret() -> bytes:
    return os.environ.get(SECRET_ENV, DEV_SECRET).encode()


@lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC already keyed with `secret`: copying it skips the key setup of every token."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def sign(purpose: str, customer_id: str, campaign_id: str, secret: bytes | None = None) -> str:
    """URL-safe token binding the purpose, customer and campaign."""
    mac = _keyed(secret or link_secret()).copy()
    mac.update(f"{purpose}|{customer_id}|{campaign_id}".encode())
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode().rstrip("=")


def verify(
    token: str, purpose: str, customer_id: str, campaign_id: str, secret: bytes | None = None
) -> bool:
    return hmac.compare_digest(token, sign(purpose, customer_id, campaign_id, secret))


def view_token(payload_key: str, secret: bytes | None = None) -> str:
    return sign("view", "*", payload_key, secret)


def verify_view(
    token: str, payload_key: str, customer_id: str | None = None, secret: bytes | None = None
) -> bool:
    """A "view in browser" token for this payload (or, with its customer, one of the old form)."""
    if verify(token, "view", "*", payload_key, secret):
        return True
    return customer_id is not None and verify(token, "view", customer_id, payload_key, secret)


def email_links(
    base_url: str, customer_id: str, campaign_id: str, payload_key: str
) -> dict[str, str]:
    """The `links` context entry for one recipient."""
    base = base_url.rstrip("/")
    query = f"c={customer_id}&k={campaign_id}"
    return {
        "unsubscribe_url": f"{base}/u?{query}&t={sign('unsubscribe', customer_id, campaign_id)}",
        "preferences_url": f"{base}/preferences?{query}&t={sign('preferences', customer_id, campaign_id)}",
        "view_in_browser_url": f"{base}/view/{payload_key}?t={view_token(payload_key)}",
    }
