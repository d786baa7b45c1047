"""Masking of personal data shown to people: metadata, logs and previews. No Dagster imports.

`j***@example.com` for an address, `D***` for a name. Addresses listed in
`privacy.unmasked_test_addresses` (seed/test inboxes) are left in clear, with their names.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import quote

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_name(name: str) -> str:
    return f"{name[:1]}***" if name else name


def mask_emails(text: str, unmasked: Collection[str] = ()) -> str:
    """Every email-like string in `text` masked, except the unmasked test addresses."""
    allowed = {a.lower() for a in unmasked}
    return EMAIL_RE.sub(
        lambda m: m.group(0) if m.group(0).lower() in allowed else mask_email(m.group(0)), text
    )


@dataclass(frozen=True)
class Contact:
    email: str | None
    first_name: str | None = None
    last_name: str | None = None


def mask_contact(text: str, contact: Contact, unmasked: Collection[str] = ()) -> str:
    """`text` with the contact's address (also URL-encoded) and names masked.

    Names are replaced as whole words, case-sensitively, so "Rose" in "Rosewood" stays.
    """
    if contact.email and contact.email.strip().lower() in {a.lower() for a in unmasked}:
        return text
    if contact.email:
        email = contact.email.strip()
        for form in {email, email.lower(), quote(email, safe=""), quote(email.lower(), safe="")}:
            masked = mask_email(email)
            text = text.replace(form, masked if "@" in form else quote(masked, safe="*"))
    names = [n.strip() for n in (contact.first_name, contact.last_name) if n and n.strip()]
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", mask_name(name), text)
    return mask_emails(text, unmasked)
