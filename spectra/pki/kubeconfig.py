"""kubeconfig files with embedded credentials (the form kubeadm writes to /etc/kubernetes/*.conf)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import yaml

from spectra.pki.store import Pki


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(cluster_name: str, server: str, ca_pem: bytes, user: str, cert_pem: bytes, key_pem: bytes) -> str:
    """A kubeconfig with one cluster, one user and one context ``<user>@<cluster>`` (current)."""
    if not server.startswith("https://"):
        raise ValueError(f"kubeconfig server must be an https:// URL, not {server!r}")
    context = f"{user}@{cluster_name}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"certificate-authority-data": _b64(ca_pem), "server": server}}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": context,
        "preferences": {},
        "users": [
            {"name": user, "user": {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}}
        ],
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True)
class KubeconfigSpec:
    file: str  # file name under the kubeconfig directory
    leaf: str  # certificate id in the PKI
    user: str  # the user name inside the file (the certificate's CN)


def kubeconfig_specs(node_name: str | None = None) -> dict[str, KubeconfigSpec]:
    """The kubeconfigs of the cluster by name; the kubelet's only when ``node_name`` is given."""
    specs = {
        "admin": KubeconfigSpec("admin.conf", "admin", "kubernetes-admin"),
        "super-admin": KubeconfigSpec("super-admin.conf", "super-admin", "kubernetes-super-admin"),
        "controller-manager": KubeconfigSpec(
            "controller-manager.conf", "controller-manager", "system:kube-controller-manager"
        ),
        "scheduler": KubeconfigSpec("scheduler.conf", "scheduler", "system:kube-scheduler"),
        "kube-proxy": KubeconfigSpec("kube-proxy.conf", "kube-proxy", "system:kube-proxy"),
    }
    if node_name is not None:
        leaf = f"nodes/{node_name}/kubelet-client"
        specs["kubelet"] = KubeconfigSpec("kubelet.conf", leaf, f"system:node:{node_name}")
    return specs


def render(pki: Pki, name: str, server: str, node_name: str | None = None) -> str:
    """The kubeconfig ``name`` (admin, controller-manager, scheduler, kube-proxy, kubelet, super-admin)."""
    spec = kubeconfig_specs(node_name)[name]
    return kubeconfig(pki.cluster.name, server, pki.cert("ca"), spec.user, pki.cert(spec.leaf), pki.key(spec.leaf))
