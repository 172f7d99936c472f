"""kubelet on every Kubernetes node (hosts whose ``roles`` meet ``cluster_node_roles``), configured by file.

* Binary: the release's ``kubelet`` through the verified download (``kubernetes_binaries``).
* ``/var/lib/kubelet/config.yaml`` (0600) from data: anonymous auth off, Webhook authentication and
  authorization, the cluster CA for client certificates, the API on ``kubelet_port``, read-only port 0,
  serving certificate from the PKI (``spectra.pki.layout``), client certificate rotation on,
  ``protectKernelDefaults`` (the node's sysctls must already be what kubelet wants), the cgroup driver
  containerd uses (both follow the cgroup fact), cluster DNS, a PID limit per pod (``kubelet_pod_pids_limit``)
  and the runtime's default seccomp profile for containers that name none (``kubelet_seccomp_default``).
  ``kubelet_config_overrides`` is merged over it last, for anything else.
* The node registers under its inventory name (the PKI's ``system:node:<name>``) at its address
  (``spectra.topology.ip_address``, also the kubelet API's bind address), with the zone and region
  topology labels from the inventory and, on control planes, the
  ``node-role.kubernetes.io/control-plane:NoSchedule`` taint. Role labels (``node-role.kubernetes.io/*``)
  are not a kubelet's to set (NodeRestriction): ``node_roles`` labels the nodes from a control plane.
* cgroup v1: kubelet 1.35+ refuses it unless ``failCgroupV1: false``. That is deprecated upstream, so a v1
  host stops the run unless ``kubelet_allow_cgroup_v1`` (the lab sets it: its machines are v1).
* Restarted only when its unit, its config or its binary changed; TLS files are read by kubelet itself on
  change (certificate rotation), so they need no restart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml
from pyinfra import host, logger
from pyinfra.api import DeployError, deploy

from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.components.container_runtime import systemd_cgroup
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, require
from facts.cgroup import V2, CgroupVersion
from facts.files import FileStates
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra import topology
from spectra.pki import layout

DEFAULTS: dict[str, Any] = {
    "kubelet_enabled": True,  # run the kubelet on hosts with a role in cluster_node_roles
    "kubelet_config_file": "/var/lib/kubelet/config.yaml",  # KubeletConfiguration (CIS 4.1.9: 0600)
    "kubelet_cert_dir": "/var/lib/kubelet/pki",  # rotated client certificates
    # TLS files; None: where the PKI installs them, under kubernetes_pki_dir (TLS_FILES)
    "kubelet_client_ca_file": None,  # verifies clients of the kubelet API (the cluster CA)
    "kubelet_tls_cert_file": None,  # serving certificate
    "kubelet_tls_key_file": None,  # ... and its key
    "kubelet_allow_cgroup_v1": False,  # run on a cgroup v1 host (deprecated upstream; failCgroupV1: false)
    "kubelet_max_pods": 110,
    # podPidsLimit: processes (threads count) one pod may run, so a fork bomb cannot exhaust the node's PIDs
    # (CIS 4.2.13 / 4.2.x); -1: no limit
    "kubelet_pod_pids_limit": 4096,
    # seccompDefault: containers without a seccomp profile get the runtime's default (RuntimeDefault) instead
    # of none (CIS 4.2.14 / 4.2.x); privileged containers stay unconfined, as the runtime does for them
    "kubelet_seccomp_default": True,
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
# The PKI's file (under kubernetes_pki_dir) each TLS setting defaults to.
TLS_FILES = {
    "kubelet_client_ca_file": "ca.crt",
    "kubelet_tls_cert_file": "kubelet/kubelet.crt",
    "kubelet_tls_key_file": "kubelet/kubelet.key",
}
TYPES: dict[str, type | tuple[type, ...]] = {"kubelet_resolv_conf": str, **dict.fromkeys(TLS_FILES, str)}
REQUIRED: set[str] = set()

UNIT = "/etc/systemd/system/kubelet.service"
RESOLVED_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
# strong AEAD suites only (CIS 4.2.12). The ChaCha20 suites by the names CIS 4.2.12 lists: Kubernetes maps
# them to the same Go suites (..._CHACHA20_POLY1305_SHA256, component-base cli/flag/ciphersuites_flag.go)
TLS_CIPHERS = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
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


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
ROLE_LABELS = "node-role.kubernetes.io/"


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats kubelet's settings must have (pure: ``spectra validate`` runs it too)."""
    problems = []
    labels = settings["kubelet_node_labels"] or {}
    if not isinstance(labels, Mapping):
        problems.append(f"kubelet_node_labels={labels!r}: a mapping of label key -> value")
        labels = {}
    for key, value in labels.items():
        if str(key).startswith(ROLE_LABELS):
            problems.append(f"kubelet_node_labels: {key} cannot be set by a kubelet (NodeRestriction); "
                            "roles come from `roles` (node_roles labels the nodes)")  # fmt: skip
        elif not _LABEL_KEY.match(str(key)) or not _LABEL_VALUE.match(str(value)):
            problems.append(f"kubelet_node_labels: {key}={value!r} is not a Kubernetes label")
    max_pods = settings["kubelet_max_pods"]
    if not isinstance(max_pods, int) or isinstance(max_pods, bool) or max_pods < 1:
        problems.append(f"kubelet_max_pods={max_pods!r}: a whole number of at least 1")
    pids = settings["kubelet_pod_pids_limit"]
    if not isinstance(pids, int) or isinstance(pids, bool) or not (pids == -1 or pids >= 64):
        problems.append(f"kubelet_pod_pids_limit={pids!r}: -1 (no limit) or a whole number of at least 64")
    if not isinstance(settings["kubelet_seccomp_default"], bool):
        problems.append(f"kubelet_seccomp_default={settings['kubelet_seccomp_default']!r}: true or false")
    if not str(settings["kubelet_container_runtime_endpoint"]).startswith("unix:///"):
        problems.append(f"kubelet_container_runtime_endpoint={settings['kubelet_container_runtime_endpoint']!r}: "
                        "a unix:/// socket URL")  # fmt: skip
    for key in ("kubelet_config_file", "kubelet_cert_dir", "kubelet_resolv_conf", *TLS_FILES):
        if settings[key] is not None and not str(settings[key]).startswith("/"):
            problems.append(f"{key}={settings[key]!r}: an absolute path")
    if not isinstance(settings["kubelet_config_overrides"] or {}, Mapping):
        problems.append("kubelet_config_overrides: a mapping merged over the KubeletConfiguration")
    return problems


def tls_file(settings: Mapping[str, Any], key: str) -> str:
    """The path of TLS setting ``key``: its value, else where the PKI installs that file."""
    return str(settings[key] or layout.pki_file(settings, TLS_FILES[key]))


def kubelet_config(
    settings: Mapping[str, Any], systemd_driver: bool, cgroup_v1: bool, address: str, resolv_conf: str
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,  # the kubelet API on the node's address only (not on the pods' bridge)
        "port": int(settings["kubelet_port"]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": tls_file(settings, "kubelet_client_ca_file")},
        },
        "authorization": {"mode": "Webhook"},
        "readOnlyPort": 0,
        "tlsCertFile": tls_file(settings, "kubelet_tls_cert_file"),
        "tlsPrivateKeyFile": tls_file(settings, "kubelet_tls_key_file"),
        "tlsMinVersion": "VersionTLS12",
        "tlsCipherSuites": TLS_CIPHERS,
        "rotateCertificates": True,
        "serverTLSBootstrap": False,  # the serving certificate comes from the PKI
        "protectKernelDefaults": bool(settings["kubelet_protect_kernel_defaults"]),
        "cgroupDriver": "systemd" if systemd_driver else "cgroupfs",
        "containerRuntimeEndpoint": settings["kubelet_container_runtime_endpoint"],
        "clusterDomain": settings["cluster_domain"],
        "clusterDNS": [settings["cluster_dns_ip"]],
        "resolvConf": resolv_conf,
        "maxPods": int(settings["kubelet_max_pods"]),
        "podPidsLimit": int(settings["kubelet_pod_pids_limit"]),
        "seccompDefault": bool(settings["kubelet_seccomp_default"]),
        "healthzBindAddress": "127.0.0.1",
        "streamingConnectionIdleTimeout": "4h0m0s",
        "eventRecordQPS": 5,
        "staticPodPath": "",
    }
    if cgroup_v1:
        config["failCgroupV1"] = False
    return merge(config, dict(settings["kubelet_config_overrides"] or {}))


def registration_labels(zone: str | None, region: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    labels = dict(extra)
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    if region:
        labels["topology.kubernetes.io/region"] = region
    return labels


def node_ip() -> str:
    """This node's IP: its registered address and the kubelet API's bind address."""
    try:
        return topology.ip_address(host, "kubelet's node IP")
    except topology.TopologyError as error:
        raise DeployError(f"kubelet: {error}") from None


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["kubelet_enabled"]) and topology.runs_kubelet(host)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`kubelet` reads: the arch (its download), the cgroup version, its files and unit."""
    paths, contents, stat_only = kubernetes_binaries.binary_paths(["kubelet"])
    paths += [UNIT, settings["kubelet_config_file"], layout.kubeconfig_file(settings, "kubelet"), RESOLVED_RESOLV_CONF]
    return [
        Platform,
        CgroupVersion,
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name("kubelet")]}),
    ]


@deploy("kubelet")
def kubelet() -> None:
    settings = Settings()
    _, cgroup_version, files, units = prepared_facts(*fact_requests(settings))
    cgroup_v1 = cgroup_version != V2
    if cgroup_v1:
        require(
            bool(settings["kubelet_allow_cgroup_v1"]),
            f"cgroup {cgroup_version} host: kubelet 1.35+ refuses cgroup v1 (deprecated upstream). Boot the host "
            "with the unified hierarchy (systemd.unified_cgroup_hierarchy=1), or set kubelet_allow_cgroup_v1=True",
        )
        logger.warning(f"{host.name}: cgroup {cgroup_version}: kubelet runs with failCgroupV1: false (deprecated)")
    address = node_ip()
    resolv_conf = settings["kubelet_resolv_conf"] or (
        RESOLVED_RESOLV_CONF if files.get(RESOLVED_RESOLV_CONF) else "/etc/resolv.conf"
    )
    installs = kubernetes_binaries.install_binaries(["kubelet"], files)
    labels = registration_labels(settings["zone"], settings["region"], settings["kubelet_node_labels"] or {})
    taints = (
        ["node-role.kubernetes.io/control-plane:NoSchedule"]
        if topology.has_role(host, topology.CONTROL_PLANE) and settings["kubelet_taint_control_plane"]
        else []
    )
    config = managed.content(
        name="kubelet configuration",
        dest=settings["kubelet_config_file"],
        data=yaml.safe_dump(
            kubelet_config(settings, systemd_cgroup(cgroup_version), cgroup_v1, address, resolv_conf),
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
            "config_file": settings["kubelet_config_file"],
            "kubeconfig": layout.kubeconfig_file(settings, "kubelet"),
            "cert_dir": settings["kubelet_cert_dir"],
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


COMPONENT = Component(
    name="kubelet",
    defaults=DEFAULTS,
    deploy=kubelet,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check, kubernetes_binaries.check),
)
