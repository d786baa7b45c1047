"""Signed links in emails: unsubscribe, preference centre, view in browser. No Dagster imports.

Each link carries an HMAC-SHA256 token over (purpose, customer, campaign), keyed by a secret
from `PERSONALIZATION_LINK_SECRET`, so a link cannot be forged for another customer or purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SECRET_ENV = "PERSONALIZATION_LINK_SECRET"
DEV_SECRET = "dev-only-link-secret-change-me"


def link_secret() -> bytes:
    return os.environ.get(SECRET_ENV, DEV_SECRET).encode()


def sign(purpose: str, customer_id: str, campaign_id: str, secret: bytes | None = None) -> str:
    """URL-safe token binding the purpose, customer and campaign."""
    message = f"{purpose}|{customer_id}|{campaign_id}".encode()
    digest = hmac.new(secret or link_secret(), message, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify(
    token: str, purpose: str, customer_id: str, campaign_id: str, secret: bytes | None = None
) -> bool:
    return hmac.compare_digest(token, sign(purpose, customer_id, campaign_id, secret))


def email_links(
    base_url: str, customer_id: str, campaign_id: str, payload_key: str
) -> dict[str, str]:
    """The `links` context entry for one recipient."""
    base = base_url.rstrip("/")
    query = f"c={customer_id}&k={campaign_id}"
    return {
        "unsubscribe_url": f"{base}/u?{query}&t={sign('unsubscribe', customer_id, campaign_id)}",
        "preferences_url": f"{base}/preferences?{query}&t={sign('preferences', customer_id, campaign_id)}",
        "view_in_browser_url": f"{base}/view/{payload_key}?t={sign('view', customer_id, payload_key)}",
    }
