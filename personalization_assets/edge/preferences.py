"""The preference centre behind the emails' signed `preferences_url`. No framework imports.

`GET /preferences?c=<customer>&k=<campaign>&t=<token>` renders `templates/preferences.html.j2`:
one checkbox per subscription group of `config/campaigns.yaml`, ticked unless the serving snapshot
says the customer opted out (a snapshot without group states shows every group ticked), and an
"unsubscribe from all" button. `POST` (an HTML form) turns the choice into landing events, which
the warehouse reads like any other event (`dim_consent`):

- save: one `preference_update` event, properties `{"<group>": true|false, ...}` for every group;
- unsubscribe from all: one `unsubscribe` event, the same as the email's unsubscribe link.

Event ids derive from the token, the form's nonce (a fresh one per rendered page) and the choice,
so a repeated submission of the same form (double click, browser resend) is one event, while a
later visit that changes the choice back is a new statement (latest statement wins).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2

from personalization_assets.defs.campaigns.config import CampaignsConfig, load_campaigns_config

TEMPLATE = "preferences.html.j2"
PREFERENCE_EVENT = "preference_update"


@dataclass(frozen=True)
class GroupState:
    id: str
    name: str
    description: str
    subscribed: bool | None  # None: unknown (shown ticked)


@dataclass(frozen=True)
class Submission:
    """What a posted form asks for."""

    unsubscribe_all: bool
    choices: dict[str, bool]
    nonce: str


class PreferenceCentre:
    """The groups (from the campaign YAML), the page template, and the events of a choice."""

    def __init__(self, config: CampaignsConfig, templates_dir: Path) -> None:
        self.config = config
        self.groups = list(config.subscription_groups)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    @classmethod
    def from_files(cls, campaigns_yaml: Path, templates_dir: Path) -> PreferenceCentre:
        return cls(load_campaigns_config(campaigns_yaml), templates_dir)

    def states(self, known: dict[str, bool]) -> list[GroupState]:
        return [GroupState(g.id, g.name, g.description, known.get(g.id)) for g in self.groups]

    def render(
        self,
        *,
        customer_id: str,
        campaign_id: str,
        token: str,
        known: dict[str, bool],
        unsubscribed: bool = False,
        saved: str | None = None,
    ) -> str:
        """The page; `saved` is None (a fresh visit), `"groups"` or `"unsubscribed"`."""
        query = urlencode({"c": customer_id, "k": campaign_id, "t": token})
        return self.env.get_template(TEMPLATE).render(
            brand=self.config.defaults.brand,
            groups=self.states(known),
            action=f"/preferences?{query}",
            nonce=secrets.token_urlsafe(12),
            unsubscribed=unsubscribed,
            saved=saved,
        )

    def submission(self, body: bytes) -> Submission:
        """The posted form (application/x-www-form-urlencoded): ticked `group` boxes, `action`."""
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        ticked = set(form.get("group", []))
        action = (form.get("action") or ["save"])[0]
        nonce = (form.get("n") or [""])[0][:64]
        return Submission(
            unsubscribe_all=action == "unsubscribe_all",
            choices={g.id: g.id in ticked for g in self.groups},
            nonce=nonce,
        )

    def events(
        self,
        submission: Submission,
        *,
        customer_id: str,
        campaign_id: str,
        token: str,
        now: dt.datetime,
    ) -> list[dict[str, Any]]:
        """The landing events that record a submission."""
        base = {"user_id": customer_id, "timestamp": now.isoformat(), "campaign_id": campaign_id}
        if submission.unsubscribe_all:
            return [
                {
                    "event_id": "unsub-" + _digest("preferences", token),
                    "event_type": "unsubscribe",
                    **base,
                    "properties": {"source": "preference_centre"},
                }
            ]
        choices = json.dumps(submission.choices, sort_keys=True, separators=(",", ":"))
        return [
            {
                "event_id": "pref-" + _digest(token, submission.nonce, choices),
                "event_type": PREFERENCE_EVENT,
                **base,
                "properties": submission.choices,
            }
        ]


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]
