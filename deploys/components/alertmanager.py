"""Alertmanager in the ``monitoring`` namespace: receives Prometheus' alerts, groups them and notifies the
receivers and routes of the group data.

* ``alertmanager_receivers``: ``[{"name": ..., "type": "webhook" | "email" | "slack", ...}]`` with each type's
  own keys (webhook: ``url``; email: ``to``, ``from``, ``smarthost``; slack: ``api_url``, ``channel``). Secrets
  such as a Slack URL or a mail password belong in group data from a vault; the rendered configuration is a
  Secret, not a ConfigMap.
* ``alertmanager_routes``: ``[{"receiver": ..., "matchers": ["severity=critical"], "continue": false}]`` under the
  root route, whose receiver is ``alertmanager_default_receiver`` (``None``: a receiver that notifies no one, so
  alerts are still visible in the API until a receiver is configured).
* Silences and the notification log live on a node-local volume on the monitoring host, like Prometheus' TSDB.
* Image: upstream's ``quay.io/prometheus/alertmanager`` at a pinned tag; the lab builds that reference from the
  Go module (``lab/images/alertmanager.py``; the API only, no web UI).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import yaml

from deploys import addon
from spectra import values

NAMESPACE = "monitoring"
CLAIM = "data-alertmanager-0"
TEMPLATE = "addons/alertmanager/alertmanager.yaml.j2"
NULL_RECEIVER = "null"

DEFAULTS: dict[str, Any] = {
    "alertmanager_enabled": True,  # the Alertmanager addon (Prometheus sends its alerts there when on)
    "alertmanager_image": "quay.io/prometheus/alertmanager:v0.35.0",  # upstream image, pinned
    "alertmanager_receivers": [],  # [{"name": "ops", "type": "webhook", "url": "https://..."}, ...]
    "alertmanager_default_receiver": None,  # the root route's receiver; None: notify no one
    "alertmanager_routes": [],  # [{"receiver": "ops", "matchers": ["severity=critical"], "continue": False}]
    "alertmanager_group_by": ["alertname", "node"],
    "alertmanager_group_wait": "30s",  # wait for more alerts of a new group before the first notification
    "alertmanager_group_interval": "5m",
    "alertmanager_repeat_interval": "4h",
    "alertmanager_storage_size": "1Gi",
    "alertmanager_cpu_request": "20m",
    "alertmanager_memory_request": "64Mi",
    "alertmanager_cpu_limit": "200m",
    "alertmanager_memory_limit": "256Mi",
}

RECEIVER_TYPES: dict[str, tuple[str, ...]] = {
    "webhook": ("url",),
    "email": ("to", "from", "smarthost"),
    "slack": ("api_url", "channel"),
}
OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("send_resolved", "max_alerts"),
    "email": ("send_resolved", "auth_username", "auth_password", "require_tls"),
    "slack": ("send_resolved", "title", "text"),
}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
_MATCHER = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"?[^"]*"?$')
_URL = re.compile(r"^https?://[^\s]+$")
RESOURCE_KEYS = (
    "alertmanager_cpu_request", "alertmanager_memory_request", "alertmanager_cpu_limit", "alertmanager_memory_limit",
)  # fmt: skip


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []
    receivers = settings["alertmanager_receivers"]
    names: set[str] = set()
    if not isinstance(receivers, list):
        problems.append("alertmanager_receivers: a list of receivers")
        receivers = []
    for index, receiver in enumerate(receivers):
        key = f"alertmanager_receivers[{index}]"
        if not isinstance(receiver, dict) or not _NAME.match(str(receiver.get("name", ""))):
            problems.append(f"{key}: a mapping with a name (letters, digits, - and _)")
            continue
        name, kind = str(receiver["name"]), receiver.get("type")
        if name == NULL_RECEIVER or name in names:
            problems.append(f"{key}: the name {name!r} is taken")
        names.add(name)
        if kind not in RECEIVER_TYPES:
            problems.append(f"{key} ({name}): unknown receiver type {kind!r}; known: {sorted(RECEIVER_TYPES)}")
            continue
        missing = [field for field in RECEIVER_TYPES[kind] if not receiver.get(field)]
        if missing:
            problems.append(f"{key} ({name}): a {kind} receiver needs {missing}")
        unknown = sorted(set(receiver) - {"name", "type", *RECEIVER_TYPES[kind], *OPTIONAL_KEYS[kind]})
        if unknown:
            problems.append(f"{key} ({name}): unknown keys {unknown} for a {kind} receiver")
        for field in ("url", "api_url"):
            if field in receiver and not _URL.match(str(receiver[field])):
                problems.append(f"{key} ({name}): {field}={receiver[field]!r} is not an http(s) URL")
    default = settings["alertmanager_default_receiver"]
    if default is not None and default not in names:
        problems.append(f"alertmanager_default_receiver={default!r}: not one of alertmanager_receivers")
    routes = settings["alertmanager_routes"] if isinstance(settings["alertmanager_routes"], list) else None
    if routes is None:
        problems.append("alertmanager_routes: a list of routes")
    for index, route in enumerate(routes or []):
        key = f"alertmanager_routes[{index}]"
        if not isinstance(route, dict) or route.get("receiver") not in names:
            problems.append(f"{key}: a mapping whose receiver is one of alertmanager_receivers")
            continue
        unknown = sorted(set(route) - {"receiver", "matchers", "continue", "group_by"})
        if unknown:
            problems.append(f"{key}: unknown keys {unknown}")
        for matcher in route.get("matchers") or []:
            if not _MATCHER.match(str(matcher)):
                problems.append(f"{key}: matcher {matcher!r} is not label=value (or !=, =~, !~)")
    for key in ("alertmanager_group_wait", "alertmanager_group_interval", "alertmanager_repeat_interval"):
        if not values.PROMETHEUS_DURATION.match(str(settings[key])):
            problems.append(f"{key}={settings[key]!r}: a duration such as 30s or 4h")
    for key in ("alertmanager_storage_size", *RESOURCE_KEYS):
        if not values.QUANTITY.match(str(settings[key])):
            problems.append(f"{key}={settings[key]!r}: a Kubernetes quantity such as 1Gi or 20m")
    return problems


def _receiver(receiver: Mapping[str, Any]) -> dict[str, Any]:
    kind = receiver["type"]
    fields = {key: value for key, value in receiver.items() if key not in ("name", "type")}
    if kind == "webhook":
        fields.setdefault("send_resolved", True)
    if kind == "email":
        fields["to"] = str(fields["to"])
    return {"name": receiver["name"], f"{kind}_configs": [fields]}


def config(settings: Mapping[str, Any]) -> dict[str, Any]:
    receivers = [{"name": NULL_RECEIVER}, *(_receiver(r) for r in settings["alertmanager_receivers"])]
    routes = []
    for route in settings["alertmanager_routes"]:
        routes.append({
            "receiver": route["receiver"], "matchers": list(route.get("matchers") or []),
            "continue": bool(route.get("continue", False)),
            **({"group_by": list(route["group_by"])} if "group_by" in route else {}),
        })  # fmt: skip
    return {
        "route": {
            "receiver": settings["alertmanager_default_receiver"] or NULL_RECEIVER,
            "group_by": list(settings["alertmanager_group_by"]),
            "group_wait": settings["alertmanager_group_wait"],
            "group_interval": settings["alertmanager_group_interval"],
            "repeat_interval": settings["alertmanager_repeat_interval"],
            "routes": routes,
        },
        "receivers": receivers,
    }


def volumes(settings: Mapping[str, Any]) -> list[addon.LocalVolume]:
    from deploys.components import prometheus

    node = prometheus.prometheus_node(settings)  # beside Prometheus, on the monitoring host
    return [addon.LocalVolume(node, NAMESPACE, CLAIM, str(settings["alertmanager_storage_size"]),
                              user="nobody", group="nogroup")]  # fmt: skip


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    text = yaml.safe_dump(config(settings), sort_keys=False)
    return {
        "namespace": NAMESPACE,
        "image": settings["alertmanager_image"],
        "config": text,
        "checksum": hashlib.sha256(text.encode()).hexdigest(),
        "claim": CLAIM.removesuffix("-alertmanager-0"),
        "storage_class": settings["local_storage_class"],
        "storage_size": settings["alertmanager_storage_size"],
        "resources": {key.removeprefix("alertmanager_"): settings[key] for key in RESOURCE_KEYS},
    }


ADDON = addon.Addon(
    name="alertmanager",
    defaults=DEFAULTS,
    templates=(TEMPLATE,),
    context=context,
    namespace=NAMESPACE,
    checks=(check,),
    volumes=volumes,
)
COMPONENT = addon.addon_component(ADDON)
