"""Which certificates a cluster needs, from a plain description of it (no pyinfra, no files).

The names follow kubeadm's certs phase so the files look familiar (``apiserver.crt``, ``etcd/peer.crt``),
and the identities follow current kubeadm practice (v1.29+): the admin credential and the apiserver's client
certificate to kubelets are in ``kubeadm:cluster-admins`` (bound to the ``cluster-admin`` ClusterRole by the
control plane), not in ``system:masters``, whose rights no RBAC change can take back. ``super-admin`` is the
one ``system:masters`` credential: the break-glass identity that creates that binding; it never leaves the
PKI directory.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from spectra.pki.x509 import KEY_ALGORITHMS, LeafSpec, PKIError, split_sans

CLUSTER_ADMINS = "kubeadm:cluster-admins"
SYSTEM_MASTERS = "system:masters"

# The three CAs: file stem in the PKI directory -> common name (kubeadm's names).
CAS: dict[str, str] = {"ca": "kubernetes", "etcd/ca": "etcd-ca", "front-proxy-ca": "front-proxy-ca"}

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Member:
    """A host of the cluster: its inventory name and the address others reach it at (IP or DNS name)."""

    name: str
    address: str | None = None


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    control_plane: tuple[Member, ...]
    etcd: tuple[Member, ...]
    nodes: tuple[Member, ...]  # hosts that run a kubelet
    cluster_domain: str = "cluster.local"
    service_cidr: str = "10.96.0.0/12"  # comma-separated for dual stack: the first IP of each is a SAN
    apiserver_sans: tuple[str, ...] = ()  # more names/addresses: a load balancer, a public DNS name
    key_algorithm: str = "rsa-2048"
    leaf_days: int = 365
    ca_days: int = 3650
    renew_before_days: int = 30

    def validate(self) -> None:
        if self.key_algorithm not in KEY_ALGORITHMS:
            raise PKIError(f"key algorithm {self.key_algorithm!r} is not one of {', '.join(KEY_ALGORITHMS)}")
        for member in (*self.control_plane, *self.etcd, *self.nodes):
            if not _NAME.match(member.name):
                raise PKIError(f"host name {member.name!r} cannot name certificate files (letters, digits, .-_)")
        if not 0 <= self.renew_before_days < self.leaf_days:
            raise PKIError(
                f"renewal window {self.renew_before_days} days must be shorter than the leaf validity "
                f"({self.leaf_days} days), or every run would reissue every certificate"
            )
        if self.ca_days <= self.leaf_days:
            raise PKIError(f"CA validity ({self.ca_days} days) must be longer than leaf validity ({self.leaf_days})")
        service_ips(self.service_cidr)


def service_ips(service_cidr: str) -> tuple[str, ...]:
    """The first address of each service range: the ``kubernetes`` Service's ClusterIP (10.96.0.0/12 -> 10.96.0.1)."""
    result = []
    for part in service_cidr.split(","):
        try:
            network = ipaddress.ip_network(part.strip(), strict=True)
        except ValueError as error:
            raise PKIError(f"service CIDR {part.strip()!r}: {error}") from None
        if network.num_addresses < 4:
            raise PKIError(f"service CIDR {network} is too small")
        result.append(str(network[1]))
    return tuple(result)


def _member_sans(member: Member) -> list[str]:
    return [member.name, *([member.address] if member.address else [])]


def apiserver_sans(cluster: ClusterSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    names.append(f"kubernetes.default.svc.{cluster.cluster_domain}")
    names += ["localhost", "127.0.0.1", *service_ips(cluster.service_cidr), *cluster.apiserver_sans]
    for member in cluster.control_plane:
        names += _member_sans(member)
    return split_sans(names)


METRICS_SERVER_SERVICE = "metrics-server.kube-system.svc"  # the name the aggregator verifies: <service>.<ns>.svc


def metrics_server_names(cluster: ClusterSpec) -> tuple[str, ...]:
    return (METRICS_SERVER_SERVICE, f"{METRICS_SERVER_SERVICE}.{cluster.cluster_domain}")


def leaf_specs(cluster: ClusterSpec) -> list[LeafSpec]:
    """Every leaf certificate of the cluster, in a fixed order."""
    cluster.validate()
    dns, ips = apiserver_sans(cluster)
    specs = [
        LeafSpec("apiserver", "ca", "kube-apiserver", (), dns, ips, server=True),
        LeafSpec("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", (CLUSTER_ADMINS,), client=True),
        LeafSpec("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", client=True),
        LeafSpec("front-proxy-client", "front-proxy-ca", "front-proxy-client", client=True),
        LeafSpec("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client", client=True),
        # Prometheus' etcd client (etcd /metrics on the client port), kept in the cluster as a Secret
        LeafSpec("etcd/monitoring-client", "etcd/ca", "spectra-monitoring-etcd-client", client=True),
        # metrics-server's serving certificate (the metrics.k8s.io APIService verifies it with the cluster CA)
        LeafSpec("metrics-server", "ca", METRICS_SERVER_SERVICE, (), metrics_server_names(cluster), server=True),
        LeafSpec("admin", "ca", "kubernetes-admin", (CLUSTER_ADMINS,), client=True),
        LeafSpec("super-admin", "ca", "kubernetes-super-admin", (SYSTEM_MASTERS,), client=True),
        LeafSpec("controller-manager", "ca", "system:kube-controller-manager", client=True),
        LeafSpec("scheduler", "ca", "system:kube-scheduler", client=True),
        LeafSpec("kube-proxy", "ca", "system:kube-proxy", client=True),
    ]
    for member in cluster.etcd:
        # name, address, localhost and loopback (both families), as kubeadm's etcd server and peer certificates.
        # Both are used both ways: a member dials its peers with its peer certificate, and etcdctl on the
        # host may present the server one.
        dns, ips = split_sans([*_member_sans(member), "localhost", "127.0.0.1", "::1"])
        specs.append(LeafSpec(f"etcd/{member.name}/server", "etcd/ca", member.name, (), dns, ips, True, True))
        specs.append(LeafSpec(f"etcd/{member.name}/peer", "etcd/ca", member.name, (), dns, ips, True, True))
    for member in cluster.nodes:
        identity = f"system:node:{member.name}"
        dns, ips = split_sans(_member_sans(member))
        specs.append(LeafSpec(f"nodes/{member.name}/kubelet", "ca", identity, ("system:nodes",), dns, ips, True))
        specs.append(LeafSpec(f"nodes/{member.name}/kubelet-client", "ca", identity, ("system:nodes",), client=True))
    return specs
