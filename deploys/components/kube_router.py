"""kube-router's network-policy controller on every node: NetworkPolicies enforced on the bridge pod network.

The pod network (``pod_network``: the CNI bridge plugin) forwards whatever it is given; a NetworkPolicy
object alone changes nothing. This addon runs kube-router with only its firewall part
(``--run-firewall=true --run-router=false --run-service-proxy=false``), as k3s embeds it: pod routes stay with
``pod_network``, Services with kube-proxy. For each pod a NetworkPolicy selects it writes iptables chains
(``KUBE-NWPLCY-*``, ``KUBE-POD-FW-*``) and ipsets of the allowed peers, hooked into ``FORWARD``, ``INPUT`` and
``OUTPUT``; traffic between pods on one node crosses the bridge and reaches those chains through
``br_netfilter`` (``os_prerequisites`` sets ``net.bridge.bridge-nf-call-iptables``). It watches pods,
namespaces and policies and rewrites the rules within a second or so of a change, and fully every
``kube_router_iptables_sync_period``.

* Its rules are iptables (nf_tables backend, the Debian default the nodes' kube-proxy uses too) in the
  ``filter`` table; the host firewall is a table of its own (``inet spectra``): neither touches the other's.
* It must run on every node that has pods (every taint tolerated): an unprotected node is a hole.
* Pod Security: kube-system is not labelled; the pod uses the host network and needs ``NET_ADMIN`` (iptables,
  ipset) and ``NET_RAW``. No privileged container; every other capability dropped; read-only root.
* Health: ``/healthz`` on ``kube_router_health_port`` (kube-router listens on every address; the host
  firewall drops it from other hosts; compliance expects it).
* Image: upstream's ``docker.io/cloudnativelabs/kube-router`` at a pinned tag (Alpine with iptables and
  ipset); the lab builds that reference from the Go module with Debian's iptables and ipset
  (``lab/images/kube_router.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from deploys import addon
from spectra import cluster_settings, values

NAMESPACE = "kube-system"
NAME = "kube-router"
TEMPLATES = ("addons/kube-router/kube-router.yaml.j2",)
_SYNC = re.compile(r"^([0-9]+)(s|m|h)$")

DEFAULTS: dict[str, Any] = {
    "kube_router_enabled": True,  # enforce NetworkPolicies (kube-router's network-policy controller)
    "kube_router_image": "docker.io/cloudnativelabs/kube-router:v2.1.0",  # upstream image, pinned
    "kube_router_health_port": 20244,  # /healthz on every node (kube-router's default)
    "kube_router_iptables_sync_period": "5m",  # full resync besides the watch-driven updates
    "kube_router_cpu_request": "50m",
    "kube_router_memory_request": "64Mi",
    "kube_router_cpu_limit": "500m",
    "kube_router_memory_limit": "256Mi",
}
RESOURCE_KEYS = ("kube_router_cpu_request", "kube_router_memory_request",
                 "kube_router_cpu_limit", "kube_router_memory_limit")  # fmt: skip


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []
    image = settings["kube_router_image"]
    if not (isinstance(image, str) and values.IMAGE_REFERENCE.match(image)):
        problems.append(f"kube_router_image={image!r}: an image reference such as "
                        "docker.io/cloudnativelabs/kube-router:v2.1.0")  # fmt: skip
    if not values.is_port(settings["kube_router_health_port"]):
        problems.append(f"kube_router_health_port={settings['kube_router_health_port']!r}: a port (1-65535)")
    period = _SYNC.match(str(settings["kube_router_iptables_sync_period"]))
    if not period or int(period.group(1)) == 0:
        problems.append(f"kube_router_iptables_sync_period={settings['kube_router_iptables_sync_period']!r}: "
                        "a duration above 0 such as 30s, 5m or 1h")  # fmt: skip
    for key in RESOURCE_KEYS:
        if not (isinstance(settings[key], str) and values.QUANTITY.match(settings[key])):
            problems.append(f"{key}={settings[key]!r}: a Kubernetes quantity such as 50m, 1 or 64Mi")
    return problems


def args(settings: Mapping[str, Any]) -> list[str]:
    """The network-policy controller alone, told the Service and NodePort ranges (one owner: the cluster
    settings) so traffic kube-proxy translated is matched as what it is."""
    low, high = cluster_settings.port_range(str(settings["cluster_nodeport_range"]))
    return [
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--run-loadbalancer=false",
        "--enable-cni=false",
        "--hostname-override=$(NODE_NAME)",
        *(
            f"--service-cluster-ip-range={network}"
            for network in cluster_settings.service_networks(str(settings["cluster_service_cidr"]))
        ),  # fmt: skip
        f"--service-node-port-range={low}-{high}",
        f"--health-port={settings['kube_router_health_port']}",
        f"--iptables-sync-period={settings['kube_router_iptables_sync_period']}",
        "--v=1",
    ]


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the templates place (``addon.render_addon`` has run ``check`` first)."""
    return {
        "namespace": NAMESPACE,
        "name": NAME,
        "image": settings["kube_router_image"],
        "args": args(settings),
        "health_port": int(settings["kube_router_health_port"]),
        "resources": {key.removeprefix("kube_router_"): settings[key] for key in RESOURCE_KEYS},
    }


ADDON = addon.Addon(
    name="kube-router",
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    namespace=None,  # kube-system
    checks=(check,),
)
COMPONENT = addon.addon_component(ADDON)
