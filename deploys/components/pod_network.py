"""Pod network: the CNI bridge plugin on every node, routes between nodes' pod ranges, masquerade out.

No overlay and no extra agent: each node owns one pod range (``pod_cidr``), its pods sit on the Linux
bridge ``cni0`` with addresses from that range (host-local IPAM), and every node routes each other
node's range via that node's address. That needs the nodes on one layer-2 network (a VLAN, one VPC
subnet with source/destination checks off) — the same assumption kubenet and Flannel's host-gw mode make.
Where nodes are in different subnets, route the pod ranges in the network instead (cloud route tables)
and set ``pod_network_routes_enabled`` to False.

* Nodes: every host that runs a kubelet (``spectra.topology.kubelet_hosts``), at its ``spectra.topology``
  address; the pod network is the cluster setting ``pod_network_cidr``.
* Pod ranges: ``pod_cidr`` host data, else derived from the node's address: the node range index is
  the low bits of its IPv4 address (``10.244.0.0/16`` with /24 ranges: 198.18.0.12 -> 10.244.12.0/24),
  so it never changes when nodes are added. Two nodes with the same range stop the run and name both.
* Routes: a oneshot systemd unit runs ``ip route replace`` for each other node at boot and whenever the
  route list changes.
* Masquerade: traffic from pods to anywhere outside the pod network leaves with the node's address, in
  an nftables table of its own (``/etc/nftables.d/``, loaded at boot by ``nftables.service``, replaced
  atomically when it changes). Pod to pod, across nodes, keeps its source address.
* CNI files readable by root only (CIS 1.1.9): the network list is 0600, and host-local IPAM runs through
  ``spectra-host-local`` (beside the plugins, in containerd's CNI directory), which runs host-local with
  umask 077 and then takes group and other bits off the network's state files in
  ``/var/lib/cni/networks/<name>``: host-local writes its address files 0644 and its lock 0750 (Debian 12's
  1.1.1, checked by hand). ``pod_network_private_ipam_state`` False uses host-local directly.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy

from deploys.component import Component
from deploys.components.container_runtime import cni_bin_dir
from deploys.operations.config_files import ConfigFile, config_files, config_state_kwargs
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, require, setting
from facts.config_state import ConfigState
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "pod_network_enabled": True,  # run this component (on hosts that run a kubelet: cluster_node_roles)
    "pod_network_node_prefix": 24,  # size of each node's range
    "pod_cidr": None,  # this node's range (host data); None: derived from its address (see above)
    "pod_network_bridge": "cni0",  # the Linux bridge pods are attached to
    "pod_network_mtu": 1500,  # pods' interface MTU (the node network's, no encapsulation)
    "pod_network_routes_enabled": True,  # route other nodes' ranges via their addresses (one L2 network)
    "pod_network_masquerade": True,  # pods -> outside the pod network leave with the node's address
    "pod_network_config_file": "/etc/cni/net.d/10-spectra-bridge.conflist",  # the CNI network config
    # host-local IPAM through the spectra-host-local wrapper, so its state files are 0600 (CIS 1.1.9)
    "pod_network_private_ipam_state": True,
}

TYPES: dict[str, type | tuple[type, ...]] = {"pod_cidr": str}
REQUIRED: set[str] = set()

ROUTES_SCRIPT = "/usr/local/sbin/spectra-pod-routes"
ROUTES_SERVICE = "spectra-pod-routes.service"
ROUTES_UNIT = f"/etc/systemd/system/{ROUTES_SERVICE}"
NAT_RULES = "/etc/nftables.d/spectra-pod-nat.nft"
NAT_TABLE = "spectra_pod_nat"
NETWORK_NAME = "spectra"  # the CNI network's name: host-local keeps its state under IPAM_STATE_DIR/<name>
IPAM_STATE_DIR = "/var/lib/cni/networks"  # host-local's default dataDir
IPAM_WRAPPER = "spectra-host-local"  # the IPAM plugin name the network list uses (a script in the CNI dir)

_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def check(settings: Mapping[str, Any]) -> list[str]:
    """This host's pod network settings (pure: ``spectra validate`` runs it too; ranges that overlap between
    hosts are found at prepare, from the inventory)."""
    problems = []
    prefix = settings["pod_network_node_prefix"]
    try:
        cluster = ipaddress.ip_network(str(settings["pod_network_cidr"]), strict=True)
    except ValueError:
        cluster = None  # the cluster settings' check names it
    if not isinstance(prefix, int) or isinstance(prefix, bool):
        problems.append(f"pod_network_node_prefix={prefix!r}: a prefix length such as 24")
    elif cluster is not None and not cluster.prefixlen < prefix <= cluster.max_prefixlen - 2:
        problems.append(f"pod_network_node_prefix={prefix}: longer than pod_network_cidr {cluster} and at most "
                        f"{cluster.max_prefixlen - 2}")  # fmt: skip
    given = settings["pod_cidr"]
    if given:
        try:
            network = ipaddress.ip_network(str(given), strict=True)
        except ValueError as error:
            problems.append(f"pod_cidr={given!r}: {error}")
        else:
            if cluster is not None and not network.subnet_of(cluster):  # type: ignore[arg-type]
                problems.append(f"pod_cidr={given!r}: not inside pod_network_cidr {cluster}")
    if not _INTERFACE.match(str(settings["pod_network_bridge"])):
        problems.append(f"pod_network_bridge={settings['pod_network_bridge']!r}: an interface name (15 characters)")
    mtu = settings["pod_network_mtu"]
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 576 <= mtu <= 65535:
        problems.append(f"pod_network_mtu={mtu!r}: a whole number from 576 to 65535")
    if not isinstance(settings["pod_network_private_ipam_state"], bool):
        problems.append(f"pod_network_private_ipam_state={settings['pod_network_private_ipam_state']!r}: "
                        "true or false")  # fmt: skip
    config = str(settings["pod_network_config_file"])
    if not (config.startswith("/") and config.endswith(".conflist")):
        problems.append(f"pod_network_config_file={config!r}: an absolute path ending in .conflist")
    return problems


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
    given = setting("pod_cidr", member)
    if given:
        try:
            network = ipaddress.ip_network(str(given), strict=True)
        except ValueError as error:
            raise DeployError(f"{member.name}: pod_cidr {given!r}: {error}") from None
        if not network.subnet_of(ipaddress.ip_network(cluster_cidr)):  # type: ignore[arg-type]
            raise DeployError(f"{member.name}: pod_cidr {network} is not inside pod_network_cidr {cluster_cidr}")
        return str(network)
    address = topology.node_address(member)
    if address is None:
        raise DeployError(f"{member.name}: no address to derive a pod range from: set pod_cidr")
    try:
        return derived_pod_cidr(address, cluster_cidr, node_prefix)
    except ValueError as error:
        raise DeployError(f"{member.name}: {error}") from None


def pod_ranges(members: Iterable[Any], cluster_cidr: str, node_prefix: int) -> dict[str, tuple[str, str]]:
    """name -> (pod range, node address) for each of ``members`` (the hosts that run a kubelet); overlapping
    ranges are refused."""
    ranges: dict[str, tuple[str, str]] = {}
    for member in topology.by_name(members):
        cidr = node_pod_cidr(member, cluster_cidr, node_prefix)
        for other, (taken, _) in ranges.items():
            if ipaddress.ip_network(cidr).overlaps(ipaddress.ip_network(taken)):
                raise DeployError(
                    f"pod ranges overlap: {other} {taken} and {member.name} {cidr}: set pod_cidr on one of them"
                )
        try:
            ranges[member.name] = (cidr, topology.require_address(member, "a route to its pod range"))
        except topology.TopologyError as error:
            raise DeployError(str(error)) from None
    return ranges


def cni_config(name: str, bridge: str, pod_cidr: str, mtu: int, ipam: str = "host-local") -> str:
    """The CNI network list: bridge (the node is the pods' gateway) with host-local IPAM (``ipam``: the plugin
    that runs it), then portmap."""
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
                    "type": ipam,
                    "ranges": [[{"subnet": pod_cidr, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def state_dir(name: str = NETWORK_NAME) -> str:
    return f"{IPAM_STATE_DIR}/{name}"


def ipam_wrapper(cni_dir: str, name: str = NETWORK_NAME) -> str:
    """host-local with umask 077, then no group or other bits on the network's state files (its lock and the
    files written before): its output (the CNI result) and exit status are host-local's."""
    return "\n".join([
        "#!/bin/sh",
        "# Managed by spectra-infra (deploys/components/pod_network.py): host-local IPAM, its state files",
        "# readable by root only (CIS 1.1.9). Input, output and exit status are host-local's.",
        "umask 077",
        f"{cni_dir}/host-local \"$@\"",
        "status=$?",
        f"find {state_dir(name)} -type f -perm /0177 -exec chmod 0600 {{}} + 2>/dev/null",
        "exit $status",
    ]) + "\n"  # fmt: skip


def tighten_state() -> StringCommand:
    """The state files host-local wrote before the wrapper was in place (when the CNI files change)."""
    directory = QuoteString(state_dir())
    return StringCommand(
        "if", "[", "-d", directory, "];", "then", "find", directory, "-type", "f", "-perm", "/0177",
        "-exec", "chmod", "0600", "{}", "+;", "fi",
    )  # fmt: skip


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


def file_sets(
    settings: Mapping[str, Any], ranges: dict[str, tuple[str, str]], name: str
) -> dict[str, list[ConfigFile]]:
    """The component's files in three sets, each converged (and acted on) by one ``config_files`` operation."""
    cluster_cidr = str(settings["pod_network_cidr"])
    own_cidr = ranges[name][0]
    private = bool(settings["pod_network_private_ipam_state"])
    bridge, mtu = str(settings["pod_network_bridge"]), int(settings["pod_network_mtu"])
    # the wrapper goes live before the network list that names it
    cni_dir = cni_bin_dir(settings)
    cni = [ConfigFile(f"{cni_dir}/{IPAM_WRAPPER}", ipam_wrapper(cni_dir), mode="0755")] if private else []
    cni.append(
        ConfigFile(
            str(settings["pod_network_config_file"]),
            cni_config(NETWORK_NAME, bridge, own_cidr, mtu, IPAM_WRAPPER if private else "host-local"),
            mode="0600",  # CIS 1.1.9
        )
    )
    sets: dict[str, list[ConfigFile]] = {"cni": cni}
    if settings["pod_network_routes_enabled"]:
        others = sorted((cidr, via) for other, (cidr, via) in ranges.items() if other != name)
        sets["routes"] = [
            ConfigFile(ROUTES_SCRIPT, routes_script(others), mode="0755"),
            ConfigFile(ROUTES_UNIT, routes_unit()),
        ]
    if settings["pod_network_masquerade"]:
        sets["nat"] = [ConfigFile(NAT_RULES, nat_rules(cluster_cidr), mode="0600", validate=nft_check)]
    return sets


def _units(kind: str) -> list[str]:
    return [ROUTES_SERVICE] if kind == "routes" else []


def _ranges(settings: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Every kubelet host's pod range (the whole inventory, also under --limit: routes name every node)."""
    kubelet_hosts = topology.kubelet_hosts(host.state.inventory)
    ranges = pod_ranges(kubelet_hosts, str(settings["pod_network_cidr"]), int(settings["pod_network_node_prefix"]))
    require(host.name in ranges, "pod network: this host is not among the inventory's kubelet hosts")
    return ranges


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["pod_network_enabled"]) and topology.runs_kubelet(host)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`pod_network` reads: the state of each of its file sets (files and units)."""
    sets = file_sets(settings, _ranges(settings), host.name)
    return [
        (ConfigState, config_state_kwargs(files, enabled_units=_units(kind), running_units=_units(kind)))
        for kind, files in sets.items()
    ]


@deploy("Pod network")
def pod_network() -> None:
    settings = Settings()
    sets = file_sets(settings, _ranges(settings), host.name)
    states = dict(zip(sets, prepared_facts(*fact_requests(settings)), strict=True))

    config_files(
        name="CNI bridge network config",
        files=sets["cni"],
        on_change=[tighten_state()] if settings["pod_network_private_ipam_state"] else [],
        current=states["cni"],
    )
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


COMPONENT = Component(
    name="pod_network",
    defaults=DEFAULTS,
    deploy=pod_network,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
