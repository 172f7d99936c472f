"""kube-proxy on every Kubernetes node: Services to endpoints, in nftables mode by default.

* Binary: the release's ``kube-proxy`` through the verified download (``kubernetes_binaries``).
* ``/var/lib/kube-proxy/config.yaml`` (0600) from data: the kubeconfig the PKI installs
  (``spectra.pki.layout``), ``clusterCIDR`` from the cluster setting ``pod_network_cidr``, metrics and
  health bound to localhost (CIS 4.3.1), NodePorts on the node's primary addresses only.
  ``kube_proxy_config_overrides`` is merged over it last.
* nftables mode (stable since Kubernetes 1.33) keeps its own ``kube-proxy`` tables: the host firewall
  (``firewall.py``) and the pod network's masquerade table are separate and never flush the ruleset.
* ``conntrack.maxPerCore``: the kernel's conntrack table size is global to a machine; where nodes are
  containers sharing one kernel (the lab) it must be 0, which leaves the kernel's value alone.
* Restarted only when its unit, its config or its binary changed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml
from pyinfra import host
from pyinfra.api import deploy

from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.components.kubelet import merge
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.files import FileStates
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra import topology
from spectra.cluster_settings import split_host_port
from spectra.pki import layout

DEFAULTS: dict[str, Any] = {
    "kube_proxy_enabled": True,  # run kube-proxy on hosts with a role in cluster_node_roles
    "kube_proxy_mode": "nftables",  # "nftables" or "iptables"
    "kube_proxy_config_file": "/var/lib/kube-proxy/config.yaml",
    "kube_proxy_metrics_bind_address": "127.0.0.1:10249",  # CIS 4.3.1: localhost only
    "kube_proxy_healthz_bind_address": "127.0.0.1:10256",
    "kube_proxy_conntrack_max_per_core": 32768,  # 0: leave the kernel's conntrack table size alone
    "kube_proxy_nodeport_addresses": ["primary"],  # NodePorts on the node's primary addresses only
    "kube_proxy_config_overrides": {},  # merged (deeply) over the generated KubeProxyConfiguration
}
TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()
CHOICES: dict[str, tuple[Any, ...]] = {"kube_proxy_mode": ("nftables", "iptables")}


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats kube-proxy's settings must have (pure: ``spectra validate`` runs it too)."""
    problems = []
    for key in ("kube_proxy_metrics_bind_address", "kube_proxy_healthz_bind_address"):
        try:
            ipaddress.ip_address(split_host_port(settings[key])[0])
        except ValueError as error:
            problems.append(f"{key}={settings[key]!r}: an IP:port such as 127.0.0.1:10249 ({error})")
    conntrack = settings["kube_proxy_conntrack_max_per_core"]
    if not isinstance(conntrack, int) or isinstance(conntrack, bool) or conntrack < 0:
        problems.append(f"kube_proxy_conntrack_max_per_core={conntrack!r}: a whole number (0: the kernel's value)")
    for entry in settings["kube_proxy_nodeport_addresses"] or []:
        if entry != "primary":
            try:
                ipaddress.ip_network(str(entry), strict=False)
            except ValueError:
                problems.append(f"kube_proxy_nodeport_addresses: {entry!r} is neither 'primary' nor a CIDR")
    if not str(settings["kube_proxy_config_file"]).startswith("/"):
        problems.append(f"kube_proxy_config_file={settings['kube_proxy_config_file']!r}: an absolute path")
    if not isinstance(settings["kube_proxy_config_overrides"] or {}, Mapping):
        problems.append("kube_proxy_config_overrides: a mapping merged over the KubeProxyConfiguration")
    return problems


UNIT = "/etc/systemd/system/kube-proxy.service"


def kube_proxy_config(settings: Mapping[str, Any], node_name: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": layout.kubeconfig_file(settings, "kube-proxy")},
        "hostnameOverride": node_name,
        "mode": settings["kube_proxy_mode"],
        "clusterCIDR": settings["pod_network_cidr"],
        "metricsBindAddress": settings["kube_proxy_metrics_bind_address"],
        "healthzBindAddress": settings["kube_proxy_healthz_bind_address"],
        "nodePortAddresses": list(settings["kube_proxy_nodeport_addresses"] or []),
        "conntrack": {"maxPerCore": int(settings["kube_proxy_conntrack_max_per_core"])},
    }
    return merge(config, dict(settings["kube_proxy_config_overrides"] or {}))


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["kube_proxy_enabled"]) and topology.runs_kubelet(host)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`kube_proxy` reads: the arch (its download), its files and unit."""
    paths, contents, stat_only = kubernetes_binaries.binary_paths(["kube-proxy"])
    paths += [UNIT, settings["kube_proxy_config_file"]]
    return [
        Platform,
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name("kube-proxy")]}),
    ]


@deploy("kube-proxy")
def kube_proxy() -> None:
    settings = Settings()
    _, files, units = prepared_facts(*fact_requests(settings))
    installs = kubernetes_binaries.install_binaries(["kube-proxy"], files)
    config = managed.content(
        name="kube-proxy configuration",
        dest=settings["kube_proxy_config_file"],
        data=yaml.safe_dump(kube_proxy_config(settings, host.name), sort_keys=False, default_flow_style=False),
        mode="0600",
        current=files,
    )
    unit = managed.template(
        name="kube-proxy systemd unit",
        src="etc/systemd/system/kube-proxy.service.j2",
        dest=UNIT,
        mode="0600",
        context={
            "binary": kubernetes_binaries.binary_path("kube-proxy"),
            "config_file": settings["kube_proxy_config_file"],
            "after": ["haproxy.service"],
        },
        current=files,
    )
    managed.service(
        name="kube-proxy running and enabled",
        unit="kube-proxy",
        restarted=config.will_change or unit.will_change or installs["kube-proxy"].will_change,
        daemon_reload=unit.will_change,
        current=units,
    )


COMPONENT = Component(
    name="kube_proxy",
    defaults=DEFAULTS,
    deploy=kube_proxy,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check, kubernetes_binaries.check),
)
