"""Tenancy: teams and their namespaces from group data, with RBAC, a quota, default resources and Pod Security.

``teams`` maps a team to its namespaces and the people in it::

    teams = {
        "shop": {
            "namespaces": ["shop-web", "shop-api"],        # required, at least one
            "admins": ["group:shop-leads", "user:alice"],  # ClusterRole admin in each namespace
            "developers": ["group:shop-devs"],             # ClusterRole edit
            "viewers": ["group:auditors"],                 # ClusterRole view
            "quota": {"pods": "20"},                       # over tenancy_default_quota (None drops a key)
            "limits": {"default": {"memory": "512Mi"}},    # over tenancy_default_limits, per section
        },
    }

Subjects are ``user:NAME`` or ``group:NAME``, the names the apiserver authenticates (a client certificate's
CN and O; OIDC's user and groups claims in production). Per namespace the set holds:

* RoleBindings ``team-admins``, ``team-developers``, ``team-viewers`` to the built-in ClusterRoles ``admin``,
  ``edit`` and ``view`` (aggregated roles: addons such as metrics-server extend them). ``edit`` reads and
  writes Secrets of its namespace; ``admin`` also manages RoleBindings there (to roles it holds itself). Only
  for the roles that have subjects.
* The ``ci-deployer`` ServiceAccount, its Role and RoleBinding: get, list, watch, update and patch of
  Deployments, Services and ConfigMaps in its own namespace; nothing else (no create or delete, no Secrets,
  no RBAC, no pods, no other namespace). A CI job gets a short-lived token by TokenRequest
  (``kubectl -n NS create token ci-deployer``); pods do not mount it (``automountServiceAccountToken: false``).
* ResourceQuota ``team-quota`` (``tenancy_default_quota`` and the team's ``quota``; the quota applies to each
  namespace of the team) and LimitRange ``team-limits`` (per container: ``default_request``, ``default``
  (the limit), ``max``, ``min``), so a pod that asks for nothing still gets requests and limits and is
  counted against the quota.

The team namespaces themselves are in the ``namespaces`` set (``cluster_addons``, through ``ADDON.namespaces``),
made before the sets that use them. Taking a namespace out of ``teams`` deletes it, with what runs in it.
:func:`team_namespaces` is the list other addons build on (network policies).

Pod Security Admission of every namespace (``pod-security.kubernetes.io/enforce``, ``warn`` and ``audit``
labels, ``enforce-version: latest``):

==================  ===========  ===================================================================================
namespace           level        why
==================  ===========  ===================================================================================
team namespaces     restricted   tenants' workloads: non-root, no privilege escalation, capabilities dropped,
                                 seccomp ``RuntimeDefault``
``monitoring``      restricted   Prometheus, Alertmanager, Grafana: their data is a PersistentVolume, not a hostPath
``logging``         restricted   VictoriaLogs, likewise
``logging-agents``  privileged   exception: vlagent reads ``/var/log/pods`` and keeps its buffer through hostPath
                                 volumes, which ``baseline`` forbids; the pod itself drops every capability and
                                 mounts the logs read-only
``kube-system``     (default:    exception: not labelled by the toolkit (the apiserver makes it; the namespaces set
                    privileged)  would own it and could prune it). kube-router, the network-policy controller, needs
                                 the host network and ``NET_ADMIN`` and ``NET_RAW`` (iptables, ipsets), which
                                 ``baseline`` forbids (no privileged container, other capabilities dropped).
                                 CoreDNS (adds only ``NET_BIND_SERVICE``) and metrics-server would pass ``restricted``
``default``,        (default:    exception: made by the apiserver, not labelled for the same reason; no workloads
``kube-public``,    privileged)  of the toolkit run there
``kube-node-lease``
==================  ===========  ===================================================================================

kube-proxy and the pod network (bridge CNI, routes) are host services here (``kube_proxy.py``,
``pod_network.py``), not pods: no namespace holds them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from deploys import addon
from spectra import values

TEMPLATE = "addons/tenancy/tenancy.yaml.j2"
LEVEL = "restricted"  # what every team namespace enforces
DEPLOYER = "ci-deployer"

DEFAULTS: dict[str, Any] = {
    "tenancy_enabled": True,  # the tenancy addon (with no teams it applies nothing)
    "teams": {},  # team -> {"namespaces": [...], "admins", "developers", "viewers", "quota", "limits"}
    # ResourceQuota hard limits of each team namespace (ResourceQuota's own keys; a team's "quota" overrides)
    "tenancy_default_quota": {
        "requests.cpu": "4",
        "requests.memory": "8Gi",
        "limits.cpu": "8",
        "limits.memory": "16Gi",
        "pods": "50",
        "services": "20",
        "configmaps": "50",
        "secrets": "50",
        "persistentvolumeclaims": "10",
        "services.nodeports": "0",  # a NodePort opens a port on every node: not a namespace's to take
        "services.loadbalancers": "0",
    },
    # LimitRange of each container in a team namespace: what a container that asks for nothing gets
    # (default_request, default = its limit) and the most one may ask (max)
    "tenancy_default_limits": {
        "default_request": {"cpu": "50m", "memory": "64Mi"},
        "default": {"cpu": "500m", "memory": "256Mi"},
        "max": {"cpu": "2", "memory": "2Gi"},
    },
}

ROLES = {"admins": "admin", "developers": "edit", "viewers": "view"}  # team key -> built-in ClusterRole
TEAM_KEYS = ("namespaces", *ROLES, "quota", "limits")
# our key -> the LimitRange field, in the order their values must rise (min <= request <= limit <= max)
LIMIT_SECTIONS = {"min": "min", "default_request": "defaultRequest", "default": "default", "max": "max"}
LIMIT_RESOURCES = ("cpu", "memory", "ephemeral-storage")
# made by the apiserver; "kube-" names are Kubernetes' own
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
_QUOTA_KEY = re.compile(r"^[a-z0-9]([-a-z0-9./]*[a-z0-9])?$")  # pods, requests.cpu, count/deployments.apps
_SUBJECT = re.compile(r"^(user|group):(\S+)$")
_AMOUNT = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_SCALE = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
          "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20,
          "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40}  # fmt: skip


def is_quantity(value: Any) -> bool:
    """A Kubernetes quantity as group data writes it: ``"500m"``, ``"2Gi"``, or a whole number (``20``)."""
    return (values.is_whole(value) and value >= 0) or (isinstance(value, str) and bool(values.QUANTITY.match(value)))


def amount(value: Any) -> Decimal:
    """The number a quantity stands for (``"500m"`` -> 0.5, ``"1Ki"`` -> 1024), to compare two of them."""
    match = _AMOUNT.match(str(value)) if is_quantity(value) else None
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return Decimal(match.group(1)) * _SCALE[match.group(2)]


def _is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _quota_problems(key: str, quota: Any) -> list[str]:
    if not _is_mapping(quota):
        return [f"{key}={quota!r}: a mapping of ResourceQuota keys (pods, requests.cpu, ...) to quantities"]
    problems = []
    for name, value in quota.items():
        if not isinstance(name, str) or not _QUOTA_KEY.match(name):
            problems.append(f"{key}[{name!r}]: not a ResourceQuota key such as pods or requests.cpu")
        elif value is not None and not is_quantity(value):
            problems.append(f"{key}[{name!r}]={value!r}: a Kubernetes quantity such as 4, 500m or 8Gi")
    return problems


def _limits_problems(key: str, limits: Any) -> list[str]:
    if not _is_mapping(limits):
        return [f"{key}={limits!r}: a mapping of {', '.join(LIMIT_SECTIONS)} to {{resource: quantity}}"]
    problems = []
    for section, resources in limits.items():
        if section not in LIMIT_SECTIONS:
            problems.append(f"{key}: unknown section {section!r}; known: {', '.join(LIMIT_SECTIONS)}")
        elif not _is_mapping(resources):
            problems.append(f"{key}[{section!r}]={resources!r}: a mapping of resource to quantity")
        else:
            for resource, value in resources.items():
                where = f"{key}[{section!r}][{resource!r}]"
                if resource not in LIMIT_RESOURCES:
                    problems.append(f"{where}: not one of {', '.join(LIMIT_RESOURCES)}")
                elif value is not None and not is_quantity(value):
                    problems.append(f"{where}={value!r}: a Kubernetes quantity such as 500m or 256Mi")
    return problems


def merged_quota(settings: Mapping[str, Any], team: Mapping[str, Any]) -> dict[str, str]:
    """The team's ResourceQuota: the default quota, the team's keys over it, None dropping a key."""
    quota = {**settings["tenancy_default_quota"], **(team.get("quota") or {})}
    return {name: str(value) for name, value in quota.items() if value is not None}


def merged_limits(settings: Mapping[str, Any], team: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The team's LimitRange sections (our names), each the default's resources with the team's over them."""
    default, own = settings["tenancy_default_limits"], team.get("limits") or {}
    found = {}
    for section in LIMIT_SECTIONS:
        resources = {**(default.get(section) or {}), **(own.get(section) or {})}
        kept = {name: str(value) for name, value in resources.items() if value is not None}
        if kept:
            found[section] = kept
    return found


def _consistency(key: str, quota: Mapping[str, str], limits: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Limits that rise (min <= default_request <= default <= max) and cover what the quota counts."""
    problems = []
    sections = [section for section in LIMIT_SECTIONS if section in limits]
    for lower_index, lower in enumerate(sections):
        for upper in sections[lower_index + 1 :]:
            for resource in sorted(set(limits[lower]) & set(limits[upper])):
                if amount(limits[lower][resource]) > amount(limits[upper][resource]):
                    problems.append(
                        f"{key}: {lower}.{resource} ({limits[lower][resource]}) is above {upper}.{resource} "
                        f"({limits[upper][resource]})"
                    )
    # a quota on requests or limits refuses pods that do not state them: the LimitRange must fill them in
    # (Kubernetes takes a missing default request from the default limit or min, a missing default limit from max)
    gives = {
        "requests": {r for s in ("default_request", "default", "min") for r in limits.get(s, {})},
        "limits": {r for s in ("default", "max") for r in limits.get(s, {})},
    }
    for name in sorted(quota):
        kind, _, resource = name.rpartition(".")
        kind = kind or "requests"  # a bare "cpu" or "memory" quota counts requests
        if resource in LIMIT_RESOURCES and kind in gives and resource not in gives[kind]:
            section = "default_request" if kind == "requests" else "default"
            problems.append(f"{key}: quota {name} needs a {section}.{resource} in the limits "
                            "(a pod that does not state it would be refused)")  # fmt: skip
    return problems


def reserved_namespaces() -> dict[str, str]:
    """Namespaces no team may take -> whose they are: the system's and every addon's (enabled or not)."""
    found = dict.fromkeys(SYSTEM_NAMESPACES, "the system")
    for one in addon.registered():
        if one.namespace and one.name != ADDON.name:
            found.setdefault(one.namespace, f"the {one.name} addon")
    return found


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems = [
        *_quota_problems("tenancy_default_quota", settings["tenancy_default_quota"]),
        *_limits_problems("tenancy_default_limits", settings["tenancy_default_limits"]),
    ]
    defaults_ok = not problems
    if defaults_ok:
        empty: dict[str, Any] = {}
        quota, limits = merged_quota(settings, empty), merged_limits(settings, empty)
        problems += _consistency("tenancy_default_limits", quota, limits)
    teams = settings["teams"]
    if not _is_mapping(teams):
        return [*problems, f"teams={teams!r}: a mapping of team name to {{'namespaces': [...], ...}}"]
    reserved = reserved_namespaces()
    owner: dict[str, str] = {}  # namespace -> the team that listed it first
    for name, team in teams.items():
        key = f"teams[{name!r}]"
        if not values.is_dns_label(name):
            problems.append(f"{key}: a team name is a DNS-1123 label (a-z, 0-9 and -, at most 63)")
        if not _is_mapping(team):
            problems.append(f"{key}={team!r}: a mapping with namespaces (and admins, developers, viewers, ...)")
            continue
        unknown = sorted(str(k) for k in set(team) - set(TEAM_KEYS))
        if unknown:
            problems.append(f"{key}: unknown keys {unknown}; known: {', '.join(TEAM_KEYS)}")
        namespaces = team.get("namespaces")
        if not isinstance(namespaces, list | tuple) or not namespaces:
            problems.append(f"{key}.namespaces={namespaces!r}: a team needs at least one namespace (a list)")
            namespaces = []
        for index, namespace in enumerate(namespaces):
            where = f"{key}.namespaces[{index}]={namespace!r}"
            if not values.is_dns_label(namespace):
                problems.append(f"{where}: a namespace name is a DNS-1123 label (a-z, 0-9 and -, at most 63)")
            elif namespace in reserved or namespace.startswith("kube-"):
                problems.append(f"{where}: taken by {reserved.get(namespace, 'Kubernetes (kube-*)')}")
            elif namespace in owner:
                problems.append(f"{where}: already a namespace of team {owner[namespace]!r}")
            else:
                owner[namespace] = str(name)
        for role in ROLES:
            subjects = team.get(role, [])
            if not isinstance(subjects, list | tuple):
                problems.append(f"{key}.{role}={subjects!r}: a list of 'user:NAME' or 'group:NAME'")
                continue
            for index, subject in enumerate(subjects):
                if not isinstance(subject, str) or not _SUBJECT.match(subject):
                    problems.append(f"{key}.{role}[{index}]={subject!r}: 'user:NAME' or 'group:NAME'")
        own = [*_quota_problems(f"{key}.quota", team.get("quota") or {}),
               *_limits_problems(f"{key}.limits", team.get("limits") or {})]  # fmt: skip
        problems += own
        if defaults_ok and not own and ("quota" in team or "limits" in team):
            problems += _consistency(f"{key}.limits", merged_quota(settings, team), merged_limits(settings, team))
    return problems


def _teams(settings: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The well-formed teams, sorted (other addons call this before or without ``check``)."""
    teams = settings.get("teams") or {}
    if not settings.get("tenancy_enabled", True) or not _is_mapping(teams):
        return {}
    return {str(name): team for name, team in sorted(teams.items(), key=lambda item: str(item[0]))
            if _is_mapping(team)}  # fmt: skip


def team_namespaces(settings: Mapping[str, Any]) -> list[str]:
    """Every team's namespaces, sorted; none when tenancy is off (the network-policy addon denies by default
    in these)."""
    found = {ns for team in _teams(settings).values() for ns in team.get("namespaces") or [] if isinstance(ns, str)}
    return sorted(found)


def namespace_levels(settings: Mapping[str, Any]) -> dict[str, str]:
    """What the ``namespaces`` set makes for this addon: each team namespace, ``restricted``."""
    return dict.fromkeys(team_namespaces(settings), LEVEL)


def _subject(text: str) -> dict[str, str]:
    kind, _, name = text.partition(":")
    return {"kind": kind.capitalize(), "apiGroup": "rbac.authorization.k8s.io", "name": name}


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    namespaces = []
    for name, team in _teams(settings).items():
        bindings = [
            {"name": f"team-{role}", "role": cluster_role, "subjects": [_subject(s) for s in team[role]]}
            for role, cluster_role in ROLES.items()
            if team.get(role)
        ]
        limits = {LIMIT_SECTIONS[name]: given for name, given in merged_limits(settings, team).items()}
        for namespace in sorted(team["namespaces"]):
            namespaces.append({
                "name": namespace, "team": name, "bindings": bindings,
                "quota": merged_quota(settings, team), "limits": {"type": "Container", **limits},
            })  # fmt: skip
    return {"namespaces": namespaces, "deployer": DEPLOYER}


ADDON = addon.Addon(
    name="tenancy",
    defaults=DEFAULTS,
    templates=(TEMPLATE,),
    context=context,
    checks=(check,),
    namespaces=namespace_levels,
)
COMPONENT = addon.addon_component(ADDON)
