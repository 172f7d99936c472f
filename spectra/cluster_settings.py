"""Settings many components need, declared once: names, ranges, directories and ports of the cluster.

Components read these (``deploys.settings``) and declare none of them; the firewall and compliance derive
the ports they open or expect from here (and from the owning component for the node exporter's
``node_exporter_listen_address``, and pyinfra's ``ssh_port`` for SSH). Keys in :data:`CLUSTER_WIDE` shape
what every host shares (certificates, routes, peer lists) and must have one value in the inventory.

``check(values)`` is pure: ``spectra validate`` and every deploy run it before anything changes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from spectra.values import is_port

DEFAULTS: dict[str, Any] = {
    "cluster_name": "kubernetes",  # the cluster's name (kubeconfigs, controller-manager --cluster-name, PKI dir)
    "cluster_domain": "cluster.local",  # cluster DNS domain: SAN kubernetes.default.svc.<domain>, CoreDNS zone
    "cluster_service_cidr": "10.96.0.0/12",  # Service range (comma-separated for dual stack); first IP is a SAN
    "cluster_dns_ip": "10.96.0.10",  # clusterIP of the kube-dns Service (kubelet clusterDNS), inside the range
    "pod_network_cidr": "10.244.0.0/16",  # pods' addresses (one range per node inside it); kube-proxy clusterCIDR
    "cluster_nodeport_range": "30000-32767",  # Service NodePort range (apiserver flag, firewall)
    "cluster_node_roles": ["control_plane", "workers"],  # hosts with one of these roles run kubelet & co.
    "kubernetes_config_dir": "/etc/kubernetes",  # kubeconfigs and the control plane's configuration files
    "kubernetes_pki_dir": "/etc/kubernetes/pki",  # certificates and keys on the hosts
    # where every kubeconfig on a node points: the node-local balancer in front of every apiserver
    "apiserver_local_address": "127.0.0.1:6443",
    "apiserver_port": 6443,  # kube-apiserver's secure port on each control plane's own address
    "kubelet_port": 10250,  # kubelet API (apiserver -> kubelet)
    "etcd_client_port": 2379,  # etcd clients (apiserver, etcdctl), TLS with client certificates
    "etcd_peer_port": 2380,  # etcd members among themselves
    "controller_manager_port": 10257,  # kube-controller-manager's secure port (127.0.0.1 only)
    "scheduler_port": 10259,  # kube-scheduler's secure port (127.0.0.1 only)
}

TYPES: dict[str, type | tuple[type, ...]] = {}

# One value for the whole inventory: they shape certificates, routes and peer lists every host shares.
CLUSTER_WIDE: tuple[str, ...] = (
    "cluster_name",
    "cluster_domain",
    "cluster_service_cidr",
    "cluster_dns_ip",
    "pod_network_cidr",
    "cluster_nodeport_range",
    "cluster_node_roles",
    "apiserver_port",
    "kubelet_port",
    "etcd_client_port",
    "etcd_peer_port",
)

PORT_KEYS = ("apiserver_port", "kubelet_port", "etcd_client_port", "etcd_peer_port", "controller_manager_port",
             "scheduler_port")  # fmt: skip

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")


def split_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:6443"`` -> ``("127.0.0.1", 6443)``; ``"[::1]:6443"`` -> ``("::1", 6443)``; ValueError else."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port {number} is out of range")
    return host, number


def port_range(text: str) -> tuple[int, int]:
    low, sep, high = str(text).partition("-")
    if not (low.isdigit() and sep and high.isdigit()) or not 0 < int(low) <= int(high) < 65536:
        raise ValueError(f"{text!r} is not a port range like 30000-32767")
    return int(low), int(high)


def service_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(part.strip(), strict=True) for part in str(text).split(",")]


def check(values: Mapping[str, Any]) -> list[str]:
    """Problems with the cluster settings (``key: message``), none when they are usable."""
    problems: list[str] = []

    def fail(key: str, message: str) -> None:
        problems.append(f"{key}={values[key]!r}: {message}")

    if not _NAME.match(str(values["cluster_name"])):
        fail("cluster_name", "a DNS label (lowercase letters, digits and '-')")
    if not _DOMAIN.match(str(values["cluster_domain"])):
        fail("cluster_domain", "a DNS domain such as cluster.local (lowercase labels, no trailing dot)")
    networks: list[Any] = []
    try:
        networks = service_networks(values["cluster_service_cidr"])
    except ValueError as error:
        fail("cluster_service_cidr", str(error))
    try:
        dns_ip = ipaddress.ip_address(str(values["cluster_dns_ip"]))
    except ValueError as error:
        fail("cluster_dns_ip", str(error))
    else:
        inside = [network for network in networks if dns_ip in network]
        if networks and not inside:
            fail("cluster_dns_ip", f"must be inside cluster_service_cidr ({values['cluster_service_cidr']})")
        for network in inside:
            # the network address is no Service IP, the first one is the `kubernetes` Service's
            if dns_ip in (network.network_address, network.network_address + 1):
                fail("cluster_dns_ip", f"the network address and the first address of {network} are taken")
    try:
        pods = ipaddress.ip_network(str(values["pod_network_cidr"]), strict=True)
    except ValueError as error:
        fail("pod_network_cidr", str(error))
    else:
        for network in networks:
            if network.version == pods.version and network.overlaps(pods):  # type: ignore[arg-type]
                fail("pod_network_cidr", f"overlaps cluster_service_cidr {network}")
    try:
        port_range(values["cluster_nodeport_range"])
    except ValueError as error:
        fail("cluster_nodeport_range", str(error))
    node_roles = values["cluster_node_roles"]
    if not isinstance(node_roles, list | tuple) or not node_roles or not all(isinstance(r, str) for r in node_roles):
        fail("cluster_node_roles", "a non-empty list of role names")
    for key in ("kubernetes_config_dir", "kubernetes_pki_dir"):
        if not str(values[key]).startswith("/") or str(values[key]).rstrip("/") != str(values[key]):
            fail(key, "an absolute path without a trailing slash")
    try:
        host, _ = split_host_port(values["apiserver_local_address"])
        ipaddress.ip_address(host)
    except ValueError as error:
        fail("apiserver_local_address", f"an IP:port such as 127.0.0.1:6443 ({error})")
    for key in PORT_KEYS:
        if not is_port(values[key]):
            fail(key, "a port number (1-65535)")
    taken: dict[int, str] = {}
    for key in PORT_KEYS:
        port = values[key]
        if is_port(port) and port in taken:
            fail(key, f"the same port as {taken[port]}")
        taken.setdefault(port, key)
    return problems


CHECKS: tuple[Callable[[Mapping[str, Any]], Iterable[str]], ...] = (check,)


def kubeconfig_server(values: Mapping[str, Any]) -> str:
    """The URL every node's kubeconfigs use: the node-local balancer."""
    host, port = split_host_port(values["apiserver_local_address"])
    return f"https://{'[' + host + ']' if ':' in host else host}:{port}"
