"""kubelet on every Kubernetes node (hosts whose ``roles`` meet ``pki_node_roles``), configured by file.

* Binary: the release's ``kubelet`` through the verified download (``kubernetes_binaries``).
* ``/var/lib/kubelet/config.yaml`` (0600) from data: anonymous auth off, Webhook authentication and
  authorization, the cluster CA for client certificates, read-only port 0, serving certificate from the
  PKI, client certificate rotation on, ``protectKernelDefaults`` (the node's sysctls must already be what
  kubelet wants), the cgroup driver containerd uses (both follow the cgroup fact), cluster DNS.
  ``kubelet_config_overrides`` is merged over it last, for anything else.
* The node registers under its inventory name (the PKI's ``system:node:<name>``) at its inventory address,
  with the zone and region topology labels from the inventory and, on control planes, the
  ``node-role.kubernetes.io/control-plane:NoSchedule`` taint. Role labels (``node-role.kubernetes.io/*``)
  are not a kubelet's to set (NodeRestriction): ``node_roles`` labels the nodes from a control plane.
* cgroup v1: kubelet 1.35+ refuses it unless ``failCgroupV1: false``. That is deprecated upstream, so a v1
  host stops the run unless ``kubelet_allow_cgroup_v1`` (the lab sets it: its machines are v1).
* Restarted only when its unit, its config or its binary changed; TLS files are read by kubelet itself on
  change (certificate rotation), so they need no restart.
"""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from typing import Any

import yaml
from pyinfra import host, logger
from pyinfra.api import deploy

from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.components.container_runtime import systemd_cgroup
from deploys.components.pod_network import node_address, runs_kubelet
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import component_data, require, setting
from facts.cgroup import V2, CgroupVersion
from facts.files import FileStates
from facts.systemd import SystemdUnits, unit_name
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "kubelet_enabled": True,  # run the kubelet on hosts with a role in pki_node_roles
    "kubelet_config_file": "/var/lib/kubelet/config.yaml",  # KubeletConfiguration (CIS 4.1.9: 0600)
    "kubelet_kubeconfig": "/etc/kubernetes/kubelet.conf",  # its client credentials (from the PKI)
    "kubelet_cert_dir": "/var/lib/kubelet/pki",  # rotated client certificates
    "kubelet_client_ca_file": "/etc/kubernetes/pki/ca.crt",  # verifies clients of the kubelet API
    "kubelet_tls_cert_file": "/etc/kubernetes/pki/kubelet/kubelet.crt",  # serving certificate (PKI)
    "kubelet_tls_key_file": "/etc/kubernetes/pki/kubelet/kubelet.key",
    "kubelet_allow_cgroup_v1": False,  # run on a cgroup v1 host (deprecated upstream; failCgroupV1: false)
    "kubelet_max_pods": 110,
    "kubelet_protect_kernel_defaults": True,  # CIS 4.2.6 (recent: 4.2.x): fail if kernel sysctls differ
    "kubelet_taint_control_plane": True,  # control planes register with NoSchedule
    "kubelet_node_labels": {},  # more labels at registration (kubelet may only set some namespaces)
    # the host resolvers CoreDNS forwards to and pods with dnsPolicy Default get. None: systemd-resolved's
    # upstream list when it manages the host (its stub 127.0.0.53 in /etc/resolv.conf would make CoreDNS
    # forward to itself), else /etc/resolv.conf
    "kubelet_resolv_conf": None,
    "kubelet_container_runtime_endpoint": "unix:///run/containerd/containerd.sock",
    "kubelet_config_overrides": {},  # merged (deeply) over the generated KubeletConfiguration
}
TYPES: dict[str, type | tuple[type, ...]] = {"kubelet_resolv_conf": str}
REQUIRED: set[str] = set()

UNIT = "/etc/systemd/system/kubelet.service"
RESOLVED_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
TLS_CIPHERS = [  # strong AEAD suites only (CIS 4.2.12)
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
]


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, mappings merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def kubelet_config(data: dict[str, Any], systemd_driver: bool, cgroup_v1: bool, address: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,  # the kubelet API on the node's address only (not on the pods' bridge)
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": data["kubelet_client_ca_file"]},
        },
        "authorization": {"mode": "Webhook"},
        "readOnlyPort": 0,
        "tlsCertFile": data["kubelet_tls_cert_file"],
        "tlsPrivateKeyFile": data["kubelet_tls_key_file"],
        "tlsMinVersion": "VersionTLS12",
        "tlsCipherSuites": TLS_CIPHERS,
        "rotateCertificates": True,
        "serverTLSBootstrap": False,  # the serving certificate comes from the PKI
        "protectKernelDefaults": bool(data["kubelet_protect_kernel_defaults"]),
        "cgroupDriver": "systemd" if systemd_driver else "cgroupfs",
        "containerRuntimeEndpoint": data["kubelet_container_runtime_endpoint"],
        "clusterDomain": data["cluster_domain"],
        "clusterDNS": [data["cluster_dns_ip"]],
        "resolvConf": data["kubelet_resolv_conf"],
        "maxPods": int(data["kubelet_max_pods"]),
        "healthzBindAddress": "127.0.0.1",
        "streamingConnectionIdleTimeout": "4h0m0s",
        "eventRecordQPS": 5,
        "staticPodPath": "",
    }
    if cgroup_v1:
        config["failCgroupV1"] = False
    return merge(config, dict(data["kubelet_config_overrides"] or {}))


def registration_labels(zone: str | None, region: str | None, extra: dict[str, str]) -> dict[str, str]:
    labels = dict(extra)
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    if region:
        labels["topology.kubernetes.io/region"] = region
    for key in labels:
        require(
            not key.startswith("node-role.kubernetes.io/"),
            f"kubelet_node_labels: {key} cannot be set by a kubelet (NodeRestriction); roles come from `roles`",
        )
    return labels


def _data() -> dict[str, Any]:
    data = component_data(DEFAULTS)
    for key in ("cluster_domain", "cluster_dns_ip"):
        data[key] = setting(key)
    return data


def fact_requests() -> list[FactRequest]:
    data = _data()
    if not data["kubelet_enabled"] or not runs_kubelet():
        return []
    paths, contents, stat_only = kubernetes_binaries.binary_paths(["kubelet"])
    paths += [UNIT, data["kubelet_config_file"], data["kubelet_kubeconfig"], RESOLVED_RESOLV_CONF]
    return [
        CgroupVersion,
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name("kubelet")]}),
    ]


@deploy("kubelet", data_defaults=DEFAULTS)
def kubelet() -> None:
    if not setting("kubelet_enabled") or not runs_kubelet():
        host.noop("kubelet: not a Kubernetes node here (kubelet_enabled, pki_node_roles)")
        return
    data = _data()
    cgroup_version, files, units = prepared_facts(*fact_requests())
    cgroup_v1 = cgroup_version != V2
    if cgroup_v1:
        require(
            bool(data["kubelet_allow_cgroup_v1"]),
            f"cgroup {cgroup_version} host: kubelet 1.35+ refuses cgroup v1 (deprecated upstream). Boot the host "
            "with the unified hierarchy (systemd.unified_cgroup_hierarchy=1), or set kubelet_allow_cgroup_v1=True",
        )
        logger.warning(f"{host.name}: cgroup {cgroup_version}: kubelet runs with failCgroupV1: false (deprecated)")
    found = node_address(host)
    require(found is not None, "kubelet: this host has no address (pki_node_address, private_ip, ssh_hostname)")
    address = str(found)

    if not data["kubelet_resolv_conf"]:
        data["kubelet_resolv_conf"] = RESOLVED_RESOLV_CONF if files.get(RESOLVED_RESOLV_CONF) else "/etc/resolv.conf"
    installs = kubernetes_binaries.install_binaries(["kubelet"], files)
    roles = {str(role) for role in (host.data.get("roles") or [])}
    labels = registration_labels(host.data.get("zone"), host.data.get("region"), dict(data["kubelet_node_labels"]))
    taints = (
        ["node-role.kubernetes.io/control-plane:NoSchedule"]
        if "control_plane" in roles and data["kubelet_taint_control_plane"]
        else []
    )
    config = managed.content(
        name="kubelet configuration",
        dest=data["kubelet_config_file"],
        data=yaml.safe_dump(
            kubelet_config(data, systemd_cgroup(cgroup_version), cgroup_v1, address),
            sort_keys=False,
            default_flow_style=False,
        ),
        mode="0600",
        current=files,
    )
    unit = managed.template(
        name="kubelet systemd unit",
        src="etc/systemd/system/kubelet.service.j2",
        dest=UNIT,
        mode="0600",  # CIS 4.1.1
        context={
            "binary": kubernetes_binaries.binary_path("kubelet"),
            "config_file": data["kubelet_config_file"],
            "kubeconfig": data["kubelet_kubeconfig"],
            "cert_dir": data["kubelet_cert_dir"],
            "node_name": host.name,
            "node_ip": address,
            "labels": ",".join(f"{key}={value}" for key, value in sorted(labels.items())),
            "taints": ",".join(taints),
            "after": ["spectra-pod-routes.service", "haproxy.service"],
        },
        current=files,
    )
    managed.service(
        name="kubelet running and enabled",
        unit="kubelet",
        restarted=config.will_change or unit.will_change or installs["kubelet"].will_change,
        daemon_reload=unit.will_change,
        current=units,
    )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["kubelet_enabled"]) and topology.runs_kubelet(host)


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="kubelet",
    defaults=DEFAULTS,
    deploy=kubelet,
    should_run=should_run,
    fact_requests=_fact_requests,
)
