"""Network policies of the application namespaces: default deny, and the allows group data names.

Every application namespace (the teams' namespaces, ``tenancy``; or ``network_policies_namespaces``) gets:

* ``default-deny``: no pod of the namespace accepts a connection (and, with ``network_policies_deny_egress``,
  opens one) that no other policy allows;
* ``allow-dns`` (egress deny only): UDP and TCP 53 to CoreDNS' pods;
* ``allow-egress-cidrs`` (egress deny only, when ``network_policies_egress_cidrs`` names any): destinations
  outside the cluster every pod may reach;
* ``allow-to-<service>``: for each declared application Service, the ingress its allows and its metrics
  port need: from the sources of ``network_allows`` (to the ports each names), from Prometheus' pods to
  the Service's ``metrics_port``, and from the API gateway's edge hosts to the ports its routes name;
* ``allow-from-<service>`` / ``allow-from-namespace`` (egress deny only): the egress side of each allow whose
  source is in an application namespace, so one line of group data opens both ends.

Applications are declared once, in ``application_services`` (``"<namespace>/<name>"``: the pods' labels, the
named container ports, the metrics port); policies and the gateway's routes name them. A name, a
namespace or a port that is not declared stops ``spectra validate`` with the key. The policies are enforced
by ``kube_router``; without an enforcer a NetworkPolicy is only a wish, so this addon requires it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from deploys import addon
from deploys.components import prometheus
from spectra import topology, values

TEMPLATES = ("addons/network-policies/network-policies.yaml.j2",)
PROMETHEUS = "prometheus"  # the source name of Prometheus' pods in network_allows
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set by the apiserver on every namespace
DNS_PORT = 53  # CoreDNS' container port (templates/addons/coredns)
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}  # templates/addons/prometheus
COREDNS_POD_LABELS = {"k8s-app": "kube-dns"}  # templates/addons/coredns
_LABEL_KEY = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
SERVICE_KEYS = {"selector", "ports", "metrics_port"}
ALLOW_KEYS = {"from", "to", "ports"}

DEFAULTS: dict[str, Any] = {
    "network_policies_enabled": True,  # default deny in application namespaces, plus the declared allows
    # namespaces that get the policies; None: every team namespace (tenancy's ``teams``)
    "network_policies_namespaces": None,
    "network_policies_deny_egress": True,  # deny egress too (DNS to CoreDNS and the declared allows stay open)
    "network_policies_egress_cidrs": [],  # outside destinations every application pod may reach (CIDRs)
    # the applications' Services: {"<namespace>/<name>": {"selector": {label: value}, "ports": {"http": 8080},
    # "metrics_port": "http" or None}}; ports are the pods' (container) ports by name
    "application_services": {},
    # who may connect to whom: [{"from": SOURCE, "to": "<namespace>/<service>", "ports": [names]}]; SOURCE is
    # "<namespace>/<service>" (its pods), "<namespace>" (every pod in it), "prometheus" or a CIDR; "ports"
    # left out: every port of the target
    "network_allows": [],
}


def application_namespaces(settings: Mapping[str, Any]) -> list[str]:
    """The namespaces that get default deny: ``network_policies_namespaces``, else every team namespace."""
    if settings["network_policies_namespaces"] is not None:
        return sorted(str(name) for name in settings["network_policies_namespaces"])
    from deploys.components import tenancy

    return sorted(tenancy.team_namespaces(settings))


def _split(reference: Any) -> tuple[str, str] | None:
    """``"shop/api"`` -> ``("shop", "api")``; None when it is not two DNS labels."""
    namespace, sep, name = str(reference).partition("/")
    if sep and values.is_dns_label(namespace) and values.is_dns_label(name):
        return namespace, name
    return None


def _check_services(services: Any, namespaces: list[str]) -> list[str]:
    problems: list[str] = []
    if not isinstance(services, Mapping):
        return [f"application_services={services!r}: a mapping of '<namespace>/<name>' to its selector and ports"]
    for reference, service in services.items():
        key = f"application_services[{reference!r}]"
        parts = _split(reference)
        if parts is None:
            problems.append(f"{key}: the key must be '<namespace>/<name>' (two DNS labels)")
            continue
        if parts[0] not in namespaces:
            problems.append(f"{key}: namespace {parts[0]!r} is not an application namespace ({namespaces})")
        if not isinstance(service, Mapping) or set(service) - SERVICE_KEYS or not {"selector", "ports"} <= set(service):
            problems.append(f"{key}: a mapping with 'selector' and 'ports' (and optionally 'metrics_port')")
            continue
        selector = service["selector"]
        if (
            not isinstance(selector, Mapping)
            or not selector
            or not all(
                _LABEL_KEY.match(str(k)) and isinstance(v, str) and _LABEL_VALUE.match(v) for k, v in selector.items()
            )
        ):
            problems.append(f"{key}.selector={selector!r}: labels of the pods, such as "
                            "{'app.kubernetes.io/name': 'api'}")  # fmt: skip
        ports = service["ports"]
        if (
            not isinstance(ports, Mapping)
            or not ports
            or not all(
                values.is_dns_label(str(name)) and len(str(name)) <= 15 and values.is_port(number)
                for name, number in ports.items()
            )
        ):
            problems.append(f"{key}.ports={ports!r}: named container ports such as {{'http': 8080}} "
                            "(names of at most 15 characters)")  # fmt: skip
            continue
        metrics = service.get("metrics_port")
        if metrics is not None and metrics not in ports:
            problems.append(f"{key}.metrics_port={metrics!r}: not one of its ports {sorted(ports)}")
    return problems


def _check_allows(allows: Any, services: Mapping[str, Any], namespaces: list[str]) -> list[str]:
    if not isinstance(allows, list):
        return [f"network_allows={allows!r}: a list of {{'from': ..., 'to': ..., 'ports': [...]}}"]
    problems: list[str] = []
    for index, allow in enumerate(allows):
        key = f"network_allows[{index}]"
        if not isinstance(allow, Mapping) or set(allow) - ALLOW_KEYS or not {"from", "to"} <= set(allow):
            problems.append(f"{key}={allow!r}: a mapping with 'from', 'to' and optionally 'ports'")
            continue
        source, target = allow["from"], allow["to"]
        if _split(source) is not None:
            if source not in services:
                problems.append(f"{key}.from={source!r}: not a declared application service (application_services)")
        elif source != PROMETHEUS and not values.is_cidr(source) and source not in namespaces:
            problems.append(f"{key}.from={source!r}: an application service '<namespace>/<name>', an application "
                            f"namespace ({namespaces}), {PROMETHEUS!r} or a CIDR")  # fmt: skip
        if target not in services:
            problems.append(f"{key}.to={target!r}: not a declared application service (application_services)")
            continue
        ports = allow.get("ports")
        declared = services[target].get("ports") if isinstance(services[target], Mapping) else None
        if ports is not None and isinstance(declared, Mapping):
            if not isinstance(ports, list) or not ports:
                problems.append(f"{key}.ports={ports!r}: a non-empty list of port names of {target}")
            else:
                unknown = [port for port in ports if port not in declared]
                if unknown:
                    problems.append(f"{key}.ports: {unknown} are not ports of {target} ({sorted(declared)})")
    return problems


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []
    explicit = settings["network_policies_namespaces"]
    if explicit is not None and not (isinstance(explicit, list) and all(values.is_dns_label(n) for n in explicit)):
        return [f"network_policies_namespaces={explicit!r}: None (the teams' namespaces) or a list of namespaces"]
    if settings["network_policies_enabled"] and not settings["kube_router_enabled"]:
        problems.append("network_policies_enabled: needs kube_router_enabled (nothing else enforces the policies "
                        "on this pod network)")  # fmt: skip
    if not isinstance(settings["network_policies_deny_egress"], bool):
        problems.append(f"network_policies_deny_egress={settings['network_policies_deny_egress']!r}: True or False")
    cidrs = settings["network_policies_egress_cidrs"]
    if not isinstance(cidrs, list) or not all(values.is_cidr(c) for c in cidrs):
        problems.append(f"network_policies_egress_cidrs={cidrs!r}: a list of CIDRs such as 203.0.113.0/24")
    namespaces = application_namespaces(settings)
    services = settings["application_services"]
    problems += _check_services(services, namespaces)
    if isinstance(services, Mapping):
        problems += _check_allows(settings["network_allows"], services, namespaces)
    return problems


def _selector(labels: Mapping[str, str] | None) -> dict[str, Any]:
    """A label selector; every pod as ``{}`` (the apiserver drops an empty ``matchLabels``: writing one would
    change the object on every apply)."""
    return {"matchLabels": dict(labels)} if labels else {}


def _in_namespace(namespace: str, pods: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A NetworkPolicy peer: the pods with labels ``pods`` (every pod: None) of ``namespace``."""
    return {"namespaceSelector": _selector({NAMESPACE_LABEL: namespace}), "podSelector": _selector(pods)}


def _peer(source: str, services: Mapping[str, Any]) -> dict[str, Any]:
    if source == PROMETHEUS:
        return _in_namespace(prometheus.NAMESPACE, PROMETHEUS_POD_LABELS)
    if values.is_cidr(source):
        return {"ipBlock": {"cidr": source}}
    if source in services:
        return _in_namespace(source.split("/")[0], services[source]["selector"])
    return _in_namespace(source)


def _ports(service: Mapping[str, Any], names: list[str] | None) -> list[dict[str, Any]]:
    chosen = names if names is not None else sorted(service["ports"])
    return [{"protocol": "TCP", "port": int(service["ports"][name])} for name in chosen]


def _policy(namespace: str, name: str, pods: Mapping[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": _selector(pods), **spec},
    }


def gateway_cidrs(settings: Mapping[str, Any], members: Any) -> list[str]:
    """Where the API gateway's connections come from: the edge hosts' addresses (its pods use the host's
    network, so no pod selector matches them; kube-router accepts a node's own traffic to its local pods)."""
    if not settings.get("gateway_enabled"):
        return []
    from deploys.components import gateway

    hosts = gateway.edge_hosts(members)
    return sorted(f"{ip}/{32 if ipaddress.ip_address(ip).version == 4 else 128}"
                  for ip in {topology.ip_address(m, "the gateway's network policy") for m in hosts})  # fmt: skip


def policies(settings: Mapping[str, Any], gateway_sources: list[str] | None = None) -> list[dict[str, Any]]:
    """Every NetworkPolicy object, by namespace and name (pure). ``gateway_sources``: the CIDRs the gateway's
    connections come from (:func:`gateway_cidrs`); each routed Service's port is opened to them."""
    namespaces = application_namespaces(settings)
    services: Mapping[str, Any] = settings["application_services"]
    deny_egress = bool(settings["network_policies_deny_egress"])
    found: list[dict[str, Any]] = []
    for namespace in namespaces:
        types = ["Ingress", "Egress"] if deny_egress else ["Ingress"]
        found.append(_policy(namespace, "default-deny", {}, policyTypes=types))
        if deny_egress:
            dns = [{"protocol": protocol, "port": DNS_PORT} for protocol in ("UDP", "TCP")]
            to_dns = [{"to": [_in_namespace("kube-system", COREDNS_POD_LABELS)], "ports": dns}]
            found.append(_policy(namespace, "allow-dns", {}, policyTypes=["Egress"], egress=to_dns))
            if settings["network_policies_egress_cidrs"]:
                peers = [{"ipBlock": {"cidr": str(cidr)}} for cidr in settings["network_policies_egress_cidrs"]]
                found.append(_policy(namespace, "allow-egress-cidrs", {}, policyTypes=["Egress"],
                                     egress=[{"to": peers}]))  # fmt: skip
    allows: list[Mapping[str, Any]] = list(settings["network_allows"])
    routed: dict[str, list[str]] = {}
    if settings.get("gateway_enabled") and gateway_sources:
        from deploys.components import gateway

        routed = gateway.routed_ports(settings)
    egress: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (namespace, source) -> egress rules
    for reference in sorted(services):
        namespace, name = reference.split("/")
        service = services[reference]
        rules = []
        for allow in allows:
            if allow["to"] != reference:
                continue
            ports = _ports(service, allow.get("ports"))
            rules.append({"from": [_peer(allow["from"], services)], "ports": ports})
            source = str(allow["from"])
            source_namespace = source.split("/")[0]
            if deny_egress and source_namespace in namespaces:
                egress.setdefault((source_namespace, source), []).append(
                    {"to": [_in_namespace(namespace, service["selector"])], "ports": ports}
                )
        if reference in routed:
            peers = [{"ipBlock": {"cidr": cidr}} for cidr in gateway_sources or []]
            rules.append({"from": peers, "ports": _ports(service, routed[reference])})
        if service.get("metrics_port"):
            rules.append({"from": [_peer(PROMETHEUS, services)], "ports": _ports(service, [service["metrics_port"]])})
        if rules:
            found.append(_policy(namespace, f"allow-to-{name}", service["selector"], policyTypes=["Ingress"],
                                 ingress=rules))  # fmt: skip
    for (namespace, source), rules in sorted(egress.items()):
        if source in services:
            pods, name = services[source]["selector"], f"allow-from-{source.split('/')[1]}"
        else:
            pods, name = {}, "allow-from-namespace"
        found.append(_policy(namespace, name, pods, policyTypes=["Egress"], egress=rules))
    return found


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the templates place (``addon.render_addon`` has run ``check`` first)."""
    from pyinfra import host

    return {"policies": policies(settings, gateway_cidrs(settings, list(host.state.inventory)))}


ADDON = addon.Addon(
    name="network-policies",
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    namespace=None,  # the application namespaces (tenancy makes them)
    checks=(check,),
)
COMPONENT = addon.addon_component(ADDON)
