"""Subscription groups in the campaign YAML: every campaign and journey in a known group."""

from __future__ import annotations

import pytest
import yaml

from personalization_assets import paths
from personalization_assets.defs.campaigns.config import (
    CampaignConfigError,
    CampaignsConfig,
    load_campaigns_config,
)

SHIPPED_PATH = paths.PROJECT_ROOT / "config" / "campaigns.yaml"


def test_every_shipped_campaign_and_journey_names_a_declared_group():
    config = load_campaigns_config(SHIPPED_PATH)
    groups = {g.id for g in config.subscription_groups}
    assert groups == {"newsletter", "offers", "reminders"}
    for item in config.campaigns + config.journeys:
        assert item.category in groups, item.id
    assert config.group_of(next(c for c in config.campaigns if c.id == "cart_abandonment")) == (
        "reminders"
    )


def test_an_unknown_group_fails_with_the_campaign_and_journey_named(tmp_path):
    data = yaml.safe_load(SHIPPED_PATH.read_text())
    data["campaigns"][0]["category"] = "promos"
    data["journeys"][0]["category"] = "nagging"
    path = tmp_path / "campaigns.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CampaignConfigError) as error:
        load_campaigns_config(path)
    message = str(error.value)
    assert "campaign 'weekly_newsletter': category 'promos' is not a subscription group" in message
    assert "journey 'cart_recovery': category 'nagging' is not a subscription group" in message


def test_without_category_the_first_group_and_without_groups_marketing():
    campaign = {
        "id": "plain",
        "name": "Plain",
        "variants": [{"name": "A", "weight": 1.0}],
        "decision_rules": [{"name": "all", "when": "true", "template": "newsletter"}],
    }
    grouped = CampaignsConfig.model_validate(
        {
            "subscription_groups": [{"id": "news", "name": "News"}, {"id": "deals", "name": "D"}],
            "campaigns": [campaign],
        }
    )
    assert grouped.group_of(grouped.campaigns[0]) == "news"
    bare = CampaignsConfig.model_validate({"campaigns": [campaign]})
    assert bare.group_of(bare.campaigns[0]) == "marketing"


def test_a_group_declared_twice_is_refused():
    with pytest.raises(ValueError, match="subscription group 'news' declared twice"):
        CampaignsConfig.model_validate(
            {"subscription_groups": [{"id": "news", "name": "A"}, {"id": "news", "name": "B"}]}
        )
