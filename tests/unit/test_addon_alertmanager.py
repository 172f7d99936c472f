"""The Alertmanager addon: receivers and routes from data into its configuration (a Secret), the volume beside
Prometheus, restricted pods, and bad receivers refused naming the key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deploys import addon
from deploys.components import alertmanager

pytestmark = pytest.mark.unit

WEBHOOK = {"name": "ops", "type": "webhook", "url": "https://hooks.example/alerts"}


def configured(**data: Any) -> dict[str, Any]:
    values = {**addon.values_for(alertmanager.ADDON, data), "local_storage_class": "spectra-local"}
    return dict(yaml.safe_load(alertmanager.context(values)["config"]))


def test_default_sends_to_no_one_but_keeps_the_alerts() -> None:
    config = configured()
    assert config["route"]["receiver"] == "null"
    assert config["receivers"] == [{"name": "null"}]


def test_receivers_and_routes_from_data() -> None:
    email = {"name": "mail", "type": "email", "to": "ops@example.com", "from": "am@example.com",
             "smarthost": "smtp.example.com:587"}  # fmt: skip
    config = configured(
        alertmanager_receivers=[WEBHOOK, email],
        alertmanager_default_receiver="ops",
        alertmanager_routes=[{"receiver": "mail", "matchers": ["severity=critical"], "continue": True}],
    )
    assert config["route"]["receiver"] == "ops"
    assert config["route"]["routes"] == [{"receiver": "mail", "matchers": ["severity=critical"], "continue": True}]
    assert config["receivers"][1] == {
        "name": "ops", "webhook_configs": [{"url": "https://hooks.example/alerts", "send_resolved": True}],
    }  # fmt: skip
    assert config["receivers"][2]["email_configs"][0]["smarthost"] == "smtp.example.com:587"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"alertmanager_receivers": [{"name": "x", "type": "pager"}]}, "unknown receiver type 'pager'"),
        ({"alertmanager_receivers": [{"name": "x", "type": "webhook"}]}, r"needs \['url'\]"),
        ({"alertmanager_receivers": [{**WEBHOOK, "url": "hooks.example"}]}, "is not an http"),
        ({"alertmanager_receivers": [WEBHOOK, WEBHOOK]}, "is taken"),
        ({"alertmanager_default_receiver": "ops"}, "alertmanager_default_receiver='ops': not one of"),
        ({"alertmanager_receivers": [WEBHOOK], "alertmanager_routes": [{"receiver": "nobody"}]}, "routes\\[0\\]"),
        (
            {"alertmanager_receivers": [WEBHOOK], "alertmanager_routes": [{"receiver": "ops", "matchers": ["a b"]}]},
            "matcher 'a b'",
        ),
        ({"alertmanager_group_wait": "-1s"}, "alertmanager_group_wait="),
    ],
)
def test_bad_settings_are_refused_naming_the_key(data: dict[str, Any], message: str) -> None:
    problems = alertmanager.check(addon.values_for(alertmanager.ADDON, data))
    assert any(__import__("re").search(message, problem) for problem in problems), problems
