"""Who is who in the cluster: roles, a host's address, control planes, etcd members, kubelet hosts.

Every component, the firewall, compliance and ``spectra validate`` ask these functions; none of them works
it out on its own. A *member* is anything with ``.name`` and ``.data.get(key, default)``: a pyinfra
``Host`` (deploys, validation) or a plain record (compliance, tests). Functions over the cluster take the
whole inventory (``host.state.inventory`` in a deploy, also under ``--limit``: a certificate, a peer list
or a firewall set names every host, not only this run's).

A host's address (:func:`node_address`), one precedence for everything inside the cluster (certificates'
SANs, etcd peer URLs, the apiserver's bind address, kubelet's node IP, pod routes, firewall peer sets):

1. ``node_address`` host data: set it where the others would be wrong;
2. ``private_ip``: set by the cloud inventories (EC2, Terraform), the address inside the VPC;
3. ``ssh_hostname``: what pyinfra connects to (bare metal, the lab);
4. the host's name, when it is an IP address.

``ssh_hostname`` comes after ``private_ip`` because in the EC2 source's public-address mode it is the
instance's public IP, which no peer inside the VPC uses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Protocol

from spectra import cluster_settings

CONTROL_PLANE = "control_plane"
ETCD = "etcd"
WORKERS = "workers"
MONITORING = "monitoring"
EDGE = "edge"  # Kubernetes nodes that take outside traffic: the API gateway listens there
# The roles the deploys know about, in the order their group data is merged (later wins).
KNOWN_ROLES: tuple[str, ...] = (CONTROL_PLANE, ETCD, WORKERS, MONITORING, EDGE)

ADDRESS_KEYS = ("node_address", "private_ip", "ssh_hostname")


class Member(Protocol):
    name: str

    @property
    def data(self) -> Any: ...


class TopologyError(ValueError):
    """The inventory cannot answer a topology question (a host without an address, ...)."""


def roles(member: Member) -> frozenset[str]:
    return frozenset(str(role) for role in (member.data.get("roles", None) or ()))


def has_role(member: Member, *wanted: str) -> bool:
    return bool(roles(member) & set(wanted))


def node_address(member: Member) -> str | None:
    """The address other hosts of the cluster reach ``member`` at (precedence in the module docstring)."""
    for key in ADDRESS_KEYS:
        value = member.data.get(key, None)
        if value:
            return str(value)
    try:
        return str(ipaddress.ip_address(str(member.name)))
    except ValueError:
        return None


def require_address(member: Member, why: str = "") -> str:
    address = node_address(member)
    if address is None:
        purpose = f" ({why})" if why else ""
        raise TopologyError(f"{member.name} has no address{purpose}: give it node_address, private_ip or ssh_hostname")
    return address


def ip_address(member: Member, why: str = "") -> str:
    """:func:`node_address` that must be an IP literal (bind addresses, firewall sets)."""
    address = require_address(member, why)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        purpose = f" for {why}" if why else ""
        raise TopologyError(
            f"{member.name}: {address!r} is not an IP address{purpose}: set node_address to the host's IP"
        ) from None


def url_host(address: str) -> str:
    """An address as it goes into a URL or ``host:port``: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def by_name(members: Iterable[Member]) -> list[Any]:
    return sorted(members, key=lambda member: member.name)


def with_role(members: Iterable[Member], *wanted: str) -> list[Any]:
    """The members having any of ``wanted``, by name."""
    return [member for member in by_name(members) if has_role(member, *wanted)]


def control_planes(members: Iterable[Member]) -> list[Any]:
    return with_role(members, CONTROL_PLANE)


def first_control_plane(members: Iterable[Member]) -> str | None:
    """The control plane that does the cluster-wide work once (RBAC bootstrap, labels, addons): the first by name."""
    found = control_planes(members)
    return found[0].name if found else None


def is_first_control_plane(member: Member, members: Iterable[Member]) -> bool:
    return member.name == first_control_plane(members)


def etcd_members(members: Iterable[Member]) -> list[tuple[str, str]]:
    """(name, address) of every etcd member, by name."""
    return [(member.name, require_address(member, "etcd member")) for member in with_role(members, ETCD)]


def node_roles(member: Member) -> frozenset[str]:
    """The roles that make a host a Kubernetes node (kubelet, kube-proxy, pod network, local balancer)."""
    default = cluster_settings.DEFAULTS["cluster_node_roles"]
    return frozenset(str(role) for role in (member.data.get("cluster_node_roles", default) or ()))


def runs_kubelet(member: Member) -> bool:
    return bool(roles(member) & node_roles(member))


def kubelet_hosts(members: Iterable[Member]) -> list[Any]:
    """Every member that is a Kubernetes node, by name."""
    return [member for member in by_name(members) if runs_kubelet(member)]


def edge_hosts(members: Iterable[Member]) -> list[Any]:
    """The Kubernetes nodes that take outside traffic (the API gateway's): those with the ``edge`` role, else
    every worker, by name."""
    chosen = with_role(members, EDGE) or with_role(members, WORKERS)
    return [member for member in chosen if runs_kubelet(member)]


def addresses(members: Iterable[Member], *wanted: str, why: str = "") -> list[str]:
    """IP addresses of the members having any of ``wanted`` (every member when none is given), sorted."""
    chosen = with_role(members, *wanted) if wanted else by_name(members)
    return sorted({ip_address(member, why) for member in chosen})
