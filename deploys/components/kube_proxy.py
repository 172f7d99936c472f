"""kube-proxy on every Kubernetes node: Services to endpoints, in nftables mode by default.

* Binary: the release's ``kube-proxy`` through the verified download (``kubernetes_binaries``).
* ``/var/lib/kube-proxy/config.yaml`` (0600) from data: the kubeconfig the PKI installs, ``clusterCIDR``
  from the pod network, metrics and health bound to localhost (CIS 4.3.1), NodePorts on the node's
  primary addresses only. ``kube_proxy_config_overrides`` is merged over it last.
* nftables mode (stable since Kubernetes 1.33) keeps its own ``kube-proxy`` tables: the host firewall
  (``firewall.py``) and the pod network's masquerade table are separate and never flush the ruleset.
* ``conntrack.maxPerCore``: the kernel's conntrack table size is global to a machine; where nodes are
  containers sharing one kernel (the lab) it must be 0, which leaves the kernel's value alone.
* Restarted only when its unit, its config or its binary changed.
"""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from typing import Any

import yaml
from pyinfra import host
from pyinfra.api import deploy

from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.components.kubelet import merge
from deploys.components.pod_network import runs_kubelet
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import component_data, require, setting
from facts.files import FileStates
from facts.systemd import SystemdUnits, unit_name
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "kube_proxy_enabled": True,  # run kube-proxy on hosts with a role in pki_node_roles
    "kube_proxy_mode": "nftables",  # "nftables" or "iptables"
    "kube_proxy_config_file": "/var/lib/kube-proxy/config.yaml",
    "kube_proxy_kubeconfig": "/etc/kubernetes/kube-proxy.conf",  # its credentials (from the PKI)
    "kube_proxy_metrics_bind_address": "127.0.0.1:10249",  # CIS 4.3.1: localhost only
    "kube_proxy_healthz_bind_address": "127.0.0.1:10256",
    "kube_proxy_conntrack_max_per_core": 32768,  # 0: leave the kernel's conntrack table size alone
    "kube_proxy_nodeport_addresses": ["primary"],  # NodePorts on the node's primary addresses only
    "kube_proxy_config_overrides": {},  # merged (deeply) over the generated KubeProxyConfiguration
}
TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()

UNIT = "/etc/systemd/system/kube-proxy.service"
MODES = ("nftables", "iptables")


def kube_proxy_config(data: dict[str, Any], node_name: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": data["kube_proxy_kubeconfig"]},
        "hostnameOverride": node_name,
        "mode": data["kube_proxy_mode"],
        "clusterCIDR": data["pod_network_cidr"],
        "metricsBindAddress": data["kube_proxy_metrics_bind_address"],
        "healthzBindAddress": data["kube_proxy_healthz_bind_address"],
        "nodePortAddresses": list(data["kube_proxy_nodeport_addresses"] or []),
        "conntrack": {"maxPerCore": int(data["kube_proxy_conntrack_max_per_core"])},
    }
    return merge(config, dict(data["kube_proxy_config_overrides"] or {}))


def _data() -> dict[str, Any]:
    data = component_data(DEFAULTS)
    data["pod_network_cidr"] = setting("pod_network_cidr")
    return data


def fact_requests() -> list[FactRequest]:
    data = _data()
    if not data["kube_proxy_enabled"] or not runs_kubelet():
        return []
    paths, contents, stat_only = kubernetes_binaries.binary_paths(["kube-proxy"])
    paths += [UNIT, data["kube_proxy_config_file"]]
    return [
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name("kube-proxy")]}),
    ]


@deploy("kube-proxy", data_defaults=DEFAULTS)
def kube_proxy() -> None:
    if not setting("kube_proxy_enabled") or not runs_kubelet():
        host.noop("kube-proxy: not a Kubernetes node here (kube_proxy_enabled, pki_node_roles)")
        return
    data = _data()
    require(
        data["kube_proxy_mode"] in MODES, f"kube_proxy_mode must be one of {MODES}, not {data['kube_proxy_mode']!r}"
    )
    files, units = prepared_facts(*fact_requests())
    installs = kubernetes_binaries.install_binaries(["kube-proxy"], files)
    config = managed.content(
        name="kube-proxy configuration",
        dest=data["kube_proxy_config_file"],
        data=yaml.safe_dump(kube_proxy_config(data, host.name), sort_keys=False, default_flow_style=False),
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
            "config_file": data["kube_proxy_config_file"],
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


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["kube_proxy_enabled"]) and topology.runs_kubelet(host)


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="kube_proxy",
    defaults=DEFAULTS,
    deploy=kube_proxy,
    should_run=should_run,
    fact_requests=_fact_requests,
)
