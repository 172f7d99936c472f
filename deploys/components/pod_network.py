"""Pod network: the CNI bridge plugin on every node, routes between nodes' pod ranges, masquerade out.

No overlay and no extra agent: each node owns one pod range (``pod_cidr``), its pods sit on the Linux
bridge ``cni0`` with addresses from that range (host-local IPAM), and every node routes each other
node's range via that node's address. That needs the nodes on one layer-2 network (a VLAN, one VPC
subnet with source/destination checks off) — the same assumption kubenet and Flannel's host-gw mode make.
Where nodes are in different subnets, route the pod ranges in the network instead (cloud route tables)
and set ``pod_network_routes_enabled`` to False.

* Pod ranges: ``pod_cidr`` host data, else derived from the node's address: the node range index is
  the low bits of its IPv4 address (``10.244.0.0/16`` with /24 ranges: 198.18.0.12 -> 10.244.12.0/24),
  so it never changes when nodes are added. Two nodes with the same range stop the run and name both.
* Routes: a oneshot systemd unit runs ``ip route replace`` for each other node at boot and whenever the
  route list changes.
* Masquerade: traffic from pods to anywhere outside the pod network leaves with the node's address, in
  an nftables table of its own (``/etc/nftables.d/``, loaded at boot by ``nftables.service``, replaced
  atomically when it changes). Pod to pod, across nodes, keeps its source address.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy

from deploys.component import Component
from deploys.operations.config_files import ConfigFile, config_files, config_state_kwargs
from deploys.prepare import FactRequest, component_data, prepared_facts, require, setting
from facts.config_state import ConfigState
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "pod_network_enabled": True,  # run this component (on hosts that run a kubelet: pki_node_roles)
    "pod_network_node_prefix": 24,  # size of each node's range
    "pod_cidr": None,  # this node's range (host data); None: derived from its address (see above)
    "pod_network_bridge": "cni0",  # the Linux bridge pods are attached to
    "pod_network_mtu": 1500,  # pods' interface MTU (the node network's, no encapsulation)
    "pod_network_routes_enabled": True,  # route other nodes' ranges via their addresses (one L2 network)
    "pod_network_masquerade": True,  # pods -> outside the pod network leave with the node's address
    "pod_network_config_file": "/etc/cni/net.d/10-spectra-bridge.conflist",  # the CNI network config
}

TYPES: dict[str, type | tuple[type, ...]] = {"pod_cidr": str}
REQUIRED: set[str] = set()

ROUTES_SCRIPT = "/usr/local/sbin/spectra-pod-routes"
ROUTES_SERVICE = "spectra-pod-routes.service"
ROUTES_UNIT = f"/etc/systemd/system/{ROUTES_SERVICE}"
NAT_RULES = "/etc/nftables.d/spectra-pod-nat.nft"
NAT_TABLE = "spectra_pod_nat"


def _roles(member: Any) -> set[str]:
    return {str(role) for role in (member.data.get("roles") or [])}


def node_address(member: Any) -> str | None:
    """The address other nodes reach ``member`` at (the PKI's order: pki_node_address, private_ip, ssh_hostname)."""
    for key in ("pki_node_address", "private_ip", "ssh_hostname"):
        value = member.data.get(key)
        if value:
            return str(value)
    return None


def derived_pod_cidr(address: str, cluster_cidr: str, node_prefix: int) -> str:
    """The node range whose index is the low bits of ``address`` (IPv4)."""
    network = ipaddress.ip_network(cluster_cidr, strict=True)
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"pod_network_cidr {cluster_cidr}: only IPv4 ranges are derived; set pod_cidr per host")
    if not network.prefixlen < node_prefix <= 30:
        raise ValueError(f"pod_network_node_prefix {node_prefix} must be longer than {network} and at most 30")
    bits = node_prefix - network.prefixlen
    index = int(ipaddress.IPv4Address(address)) & ((1 << bits) - 1)
    if index == 0:
        raise ValueError(f"address {address} gives node range index 0 (reserved): set pod_cidr for this host")
    return str(ipaddress.IPv4Network((int(network.network_address) + (index << (32 - node_prefix)), node_prefix)))


def node_pod_cidr(member: Any, cluster_cidr: str, node_prefix: int) -> str:
    """``member``'s pod range: its ``pod_cidr`` (checked to lie inside the pod network) or the derived one."""
    given = member.data.get("pod_cidr")
    if given:
        try:
            network = ipaddress.ip_network(str(given), strict=True)
        except ValueError as error:
            raise DeployError(f"{member.name}: pod_cidr {given!r}: {error}") from None
        if not network.subnet_of(ipaddress.ip_network(cluster_cidr)):  # type: ignore[arg-type]
            raise DeployError(f"{member.name}: pod_cidr {network} is not inside pod_network_cidr {cluster_cidr}")
        return str(network)
    address = node_address(member)
    if address is None:
        raise DeployError(f"{member.name}: no address to derive a pod range from: set pod_cidr")
    try:
        return derived_pod_cidr(address, cluster_cidr, node_prefix)
    except ValueError as error:
        raise DeployError(f"{member.name}: {error}") from None


def pod_ranges(members: list[Any], cluster_cidr: str, node_prefix: int) -> dict[str, tuple[str, str]]:
    """name -> (pod range, node address) for every host that runs a kubelet; overlapping ranges are refused."""
    ranges: dict[str, tuple[str, str]] = {}
    for member in sorted(members, key=lambda m: m.name):
        cidr = node_pod_cidr(member, cluster_cidr, node_prefix)
        for other, (taken, _) in ranges.items():
            if ipaddress.ip_network(cidr).overlaps(ipaddress.ip_network(taken)):
                raise DeployError(
                    f"pod ranges overlap: {other} {taken} and {member.name} {cidr}: set pod_cidr on one of them"
                )
        ranges[member.name] = (cidr, str(node_address(member)))
    return ranges


def kubelet_hosts() -> list[Any]:
    """Every inventory host (not only this run's --limit) with a role in ``pki_node_roles``."""
    node_roles = set(host.data.get("pki_node_roles") or ["control_plane", "workers"])
    return [member for member in host.state.inventory if _roles(member) & node_roles]


def runs_kubelet() -> bool:
    return bool(_roles(host) & set(host.data.get("pki_node_roles") or ["control_plane", "workers"]))


def cni_config(name: str, bridge: str, pod_cidr: str, mtu: int) -> str:
    """The CNI network list: bridge (the node is the pods' gateway) with host-local IPAM, then portmap."""
    gateway = str(next(ipaddress.ip_network(pod_cidr).hosts()))
    document = {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,  # masquerade is ours (nftables), so pod-to-pod keeps source addresses
                "hairpinMode": True,  # a pod reaching itself through a Service
                "mtu": mtu,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def routes_script(routes: list[tuple[str, str]]) -> str:
    lines = [
        "#!/bin/sh",
        "# Managed by spectra-infra (deploys/components/pod_network.py): other nodes' pod ranges.",
        "set -e",
    ]
    lines += [f"ip route replace {cidr} via {via} proto static" for cidr, via in routes]
    return "\n".join(lines) + "\n"


def routes_unit() -> str:
    return (
        "# Managed by spectra-infra (deploys/components/pod_network.py)\n"
        "[Unit]\n"
        "Description=Routes to the other Kubernetes nodes' pod ranges\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "Before=kubelet.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={ROUTES_SCRIPT}\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def nat_rules(cluster_cidr: str) -> str:
    return (
        "#!/usr/sbin/nft -f\n"
        "# Managed by spectra-infra (deploys/components/pod_network.py): pods -> outside leave as the node.\n"
        f"table ip {NAT_TABLE}\n"
        f"delete table ip {NAT_TABLE}\n"
        f"table ip {NAT_TABLE} {{\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"        ip saddr {cluster_cidr} ip daddr != {cluster_cidr} masquerade\n"
        "    }\n"
        "}\n"
    )


def nft_check(path: str) -> StringCommand:
    return StringCommand("nft", "-c", "-f", QuoteString(path))


def file_sets(data: dict[str, Any], ranges: dict[str, tuple[str, str]], name: str) -> dict[str, list[ConfigFile]]:
    """The component's files in three sets, each converged (and acted on) by one ``config_files`` operation."""
    cluster_cidr = str(data["pod_network_cidr"])
    own_cidr = ranges[name][0]
    sets: dict[str, list[ConfigFile]] = {
        "cni": [
            ConfigFile(
                str(data["pod_network_config_file"]),
                cni_config("spectra", str(data["pod_network_bridge"]), own_cidr, int(data["pod_network_mtu"])),
            )
        ]
    }
    if data["pod_network_routes_enabled"]:
        others = sorted((cidr, via) for other, (cidr, via) in ranges.items() if other != name)
        sets["routes"] = [
            ConfigFile(ROUTES_SCRIPT, routes_script(others), mode="0755"),
            ConfigFile(ROUTES_UNIT, routes_unit()),
        ]
    if data["pod_network_masquerade"]:
        sets["nat"] = [ConfigFile(NAT_RULES, nat_rules(cluster_cidr), mode="0600", validate=nft_check)]
    return sets


def _units(kind: str) -> list[str]:
    return [ROUTES_SERVICE] if kind == "routes" else []


def _ranges(data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    cluster_cidr = str(data["pod_network_cidr"])
    try:
        ipaddress.ip_network(cluster_cidr, strict=True)
    except ValueError as error:
        raise DeployError(f"{host.name}: pod_network_cidr {cluster_cidr!r}: {error}") from None
    ranges = pod_ranges(kubelet_hosts(), cluster_cidr, int(data["pod_network_node_prefix"]))
    require(host.name in ranges, "pod network: this host is not among the inventory's kubelet hosts")
    return ranges


def fact_requests() -> list[FactRequest]:
    data = {**component_data(DEFAULTS), "pod_network_cidr": setting("pod_network_cidr")}
    if not data["pod_network_enabled"] or not runs_kubelet():
        return []
    sets = file_sets(data, _ranges(data), host.name)
    return [
        (ConfigState, config_state_kwargs(files, enabled_units=_units(kind), running_units=_units(kind)))
        for kind, files in sets.items()
    ]


@deploy("Pod network", data_defaults=DEFAULTS)
def pod_network() -> None:
    if not setting("pod_network_enabled") or not runs_kubelet():
        host.noop("pod network: not a Kubernetes node here (pod_network_enabled, pki_node_roles)")
        return
    data = {**component_data(DEFAULTS), "pod_network_cidr": setting("pod_network_cidr")}
    sets = file_sets(data, _ranges(data), host.name)
    states = dict(zip(sets, prepared_facts(*fact_requests()), strict=True))

    config_files(name="CNI bridge network config", files=sets["cni"], current=states["cni"])
    if "routes" in sets:
        config_files(
            name="Routes to other nodes' pod ranges (now and at boot)",
            files=sets["routes"],
            daemon_reload=True,
            enabled_units=[ROUTES_SERVICE],
            running_units=[ROUTES_SERVICE],
            on_change=[StringCommand("systemctl", "restart", ROUTES_SERVICE)],
            current=states["routes"],
        )
    if "nat" in sets:
        config_files(
            name=f"Pod masquerade: nftables table ip {NAT_TABLE} (checked with nft -c first)",
            files=sets["nat"],
            on_change=[StringCommand("nft", "-f", QuoteString(NAT_RULES))],
            current=states["nat"],
        )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["pod_network_enabled"]) and topology.runs_kubelet(host)


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="pod_network",
    defaults=DEFAULTS,
    deploy=pod_network,
    should_run=should_run,
    fact_requests=_fact_requests,
)
