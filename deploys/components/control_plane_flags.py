"""The command lines of kube-apiserver, kube-controller-manager and kube-scheduler (``control_plane.py``).

Flags follow the CIS Kubernetes benchmark, section 1.2-1.4 (Node,RBAC authorization, admission plugins
NodeRestriction, DenyServiceExternalIPs and EventRateLimit with its limits in the admission configuration
file, no profiling, audit log with rotation, Secrets encrypted at rest, kubelet serving certificates verified,
TLS 1.2+ with strong ciphers, service-account issuer and keys, tokens not extended past their expiry,
front-proxy request headers). Paths come from their owners: the PKI's files and kubeconfigs from
``spectra.pki.layout``, the configuration files the control plane writes from ``kubernetes_config_dir``;
ports and ranges are cluster settings. Pure: settings in, flags out. A helper of the control plane
component, with no settings of its own.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from deploys.settings import setting
from spectra.pki import layout

# The apiserver's configuration files, under kubernetes_config_dir (written by the control plane component)
ENCRYPTION_CONFIG = "encryption-config.yaml"
AUDIT_POLICY = "audit-policy.yaml"
AUTHENTICATION_CONFIG = "authentication-config.yaml"
ADMISSION_CONFIG = "admission-config.yaml"  # the admission plugins' configuration (EventRateLimit's limits)
CONFIG_FILES = (ENCRYPTION_CONFIG, AUDIT_POLICY, AUTHENTICATION_CONFIG, ADMISSION_CONFIG)

_FLAG_NAME = re.compile(r"^(--)?[a-z0-9][a-z0-9.-]*$")


def config_file(settings: Mapping[str, Any], name: str) -> str:
    return posixpath.join(str(settings["kubernetes_config_dir"]), name)


def bad_flag_names(extra: Any) -> list[str]:
    """The keys of an ``*_extra_args`` mapping that are no flag names (``event-ttl``, ``--v``)."""
    return [str(key) for key in (extra or {}) if not _FLAG_NAME.match(str(key))]


def systemd_arg(text: str) -> str:
    """One ExecStart= argument: systemd's specifiers and variables escaped, quoted when it has spaces."""
    escaped = text.replace("%", "%%").replace("$", "$$")
    if any(char in escaped for char in " \t\"'\\"):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_flags(flags: dict[str, Any], extra: Mapping[str, Any] | None) -> list[str]:
    """``--flag=value`` arguments, in order, ``extra`` (flag names with or without ``--``) overriding or adding."""
    merged = dict(flags)
    for key, value in (extra or {}).items():
        merged[str(key).lstrip("-")] = value
    rendered = []
    for name, value in merged.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | tuple):
            value = ",".join(str(item) for item in value)
        rendered.append(systemd_arg(f"--{name}={value}"))
    return rendered


def tls_flags(settings: Mapping[str, Any]) -> dict[str, Any]:
    flags: dict[str, Any] = {"tls-min-version": settings["control_plane_tls_min_version"]}
    suites = list(settings["control_plane_tls_cipher_suites"] or [])
    if suites:
        flags["tls-cipher-suites"] = suites
    return flags


def service_account_issuer(settings: Mapping[str, Any]) -> str:
    return str(
        settings["control_plane_service_account_issuer"]
        or f"https://kubernetes.default.svc.{settings['cluster_domain']}"
    )


def apiserver_flags(settings: Mapping[str, Any], address: str, etcd_servers: list[str]) -> dict[str, Any]:
    """kube-apiserver on ``address`` (its own IP, never the balancer's 127.0.0.1), using ``etcd_servers``."""

    def pki(name: str) -> str:
        return layout.pki_file(settings, name)

    audit_dir = str(settings["control_plane_audit_log_dir"]).rstrip("/")
    return {
        "advertise-address": address,
        "bind-address": address,
        "secure-port": int(settings["apiserver_port"]),
        "authentication-config": config_file(settings, AUTHENTICATION_CONFIG),
        "authorization-mode": "Node,RBAC",
        "enable-admission-plugins": list(settings["control_plane_admission_plugins"]),
        "admission-control-config-file": config_file(settings, ADMISSION_CONFIG),
        "allow-privileged": True,
        "profiling": False,
        "client-ca-file": pki("ca.crt"),
        "tls-cert-file": pki("apiserver.crt"),
        "tls-private-key-file": pki("apiserver.key"),
        **tls_flags(settings),
        "kubelet-certificate-authority": pki("ca.crt"),
        "kubelet-client-certificate": pki("apiserver-kubelet-client.crt"),
        "kubelet-client-key": pki("apiserver-kubelet-client.key"),
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "etcd-servers": etcd_servers,
        "etcd-cafile": pki("etcd/ca.crt"),
        "etcd-certfile": pki("apiserver-etcd-client.crt"),
        "etcd-keyfile": pki("apiserver-etcd-client.key"),
        "encryption-provider-config": config_file(settings, ENCRYPTION_CONFIG),
        "service-cluster-ip-range": settings["cluster_service_cidr"],
        "service-node-port-range": settings["cluster_nodeport_range"],
        "service-account-issuer": service_account_issuer(settings),
        "service-account-key-file": pki("sa.pub"),
        "service-account-signing-key-file": pki("sa.key"),
        "service-account-lookup": True,
        # CIS 1.2.30: projected tokens expire when they say (kubelet and client-go refresh them)
        "service-account-extend-token-expiration": bool(
            settings["control_plane_service_account_extend_token_expiration"]
        ),
        "requestheader-client-ca-file": pki("front-proxy-ca.crt"),
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "proxy-client-cert-file": pki("front-proxy-client.crt"),
        "proxy-client-key-file": pki("front-proxy-client.key"),
        "shutdown-watch-termination-grace-period": settings["control_plane_shutdown_watch_grace_period"],
        "audit-policy-file": config_file(settings, AUDIT_POLICY),
        "audit-log-path": f"{audit_dir}/audit.log",
        "audit-log-maxage": int(settings["control_plane_audit_log_maxage"]),
        "audit-log-maxbackup": int(settings["control_plane_audit_log_maxbackup"]),
        "audit-log-maxsize": int(settings["control_plane_audit_log_maxsize"]),
    }


def metrics_exposed(settings: Mapping[str, Any]) -> bool:
    """Do controller-manager and scheduler listen on the node address (for Prometheus), not 127.0.0.1?"""
    choice = settings["control_plane_metrics_bind"]
    if choice == "auto":
        # the Prometheus addon's switch (its owner's default when the mapping is a plain dict without it)
        enabled = settings.get("prometheus_enabled")
        return bool(setting("prometheus_enabled") if enabled is None else enabled)
    return bool(choice == "node")


def metrics_bind_address(settings: Mapping[str, Any], address: str) -> str:
    return address if metrics_exposed(settings) else "127.0.0.1"


def controller_manager_flags(settings: Mapping[str, Any], address: str) -> dict[str, Any]:
    """kube-controller-manager on 127.0.0.1 or ``address`` (:func:`metrics_exposed`); it signs kubelets' CSRs
    when the PKI installs the CA key."""
    kubeconfig = layout.kubeconfig_file(settings, "controller-manager")
    flags: dict[str, Any] = {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": metrics_bind_address(settings, address),
        "secure-port": int(settings["controller_manager_port"]),
        **tls_flags(settings),
        "client-ca-file": layout.pki_file(settings, "ca.crt"),
        "requestheader-client-ca-file": layout.pki_file(settings, "front-proxy-ca.crt"),
        "cluster-name": settings["cluster_name"],
        "root-ca-file": layout.pki_file(settings, "ca.crt"),
        "service-account-private-key-file": layout.pki_file(settings, "sa.key"),
        "use-service-account-credentials": True,
        "service-cluster-ip-range": settings["cluster_service_cidr"],
        "allocate-node-cidrs": False,
        "controllers": "*,bootstrapsigner,tokencleaner",
        "leader-elect": True,
        "profiling": False,
        "terminated-pod-gc-threshold": int(settings["control_plane_terminated_pod_gc_threshold"]),
    }
    if settings["pki_install_ca_key"]:
        flags["cluster-signing-cert-file"] = layout.pki_file(settings, "ca.crt")
        flags["cluster-signing-key-file"] = layout.pki_file(settings, "ca.key")
    return flags


def scheduler_flags(settings: Mapping[str, Any], address: str) -> dict[str, Any]:
    kubeconfig = layout.kubeconfig_file(settings, "scheduler")
    return {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": metrics_bind_address(settings, address),
        "secure-port": int(settings["scheduler_port"]),
        **tls_flags(settings),
        "leader-elect": True,
        "profiling": False,
    }
