"""nftables host firewall per role, in its own table so kube-proxy's and the CNI's rules survive.

- Only ``table inet spectra`` is written (``/etc/nftables.d/spectra.nft``) and replaced, atomically, in
  one ``nft -f`` transaction; the ruleset is never flushed. ``/etc/nftables.conf`` becomes a plain
  include of ``/etc/nftables.d/*.nft`` and a drop-in stops ``nftables.service`` from flushing the whole
  ruleset when it is stopped.
- Input policy drop; accepted: established/related, loopback, ICMP/ICMPv6, pod network interfaces,
  SSH from admin CIDRs (default: anywhere, so a first run cannot lock anyone out), kubelet from the
  control plane, node exporter from monitoring CIDRs only, NodePorts (switchable), CNI overlay ports
  from the nodes; on ``control_plane`` hosts the API server and etcd (from its peers); scheduler and
  controller-manager health ports stay local. No forward chain: pod traffic is not filtered here.
- Every file is checked with ``nft -c -f`` before it replaces the live one; the table is (re)loaded only
  when a file changed. The SSH session doing the work is an established connection and stays up.

Where addresses are not given, they come from the inventory: every host's ``ssh_hostname`` (or name)
when it is an IP address, grouped by the host's ``roles``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, render_template
from deploys.prepare import FactRequest, component_data, prepared_facts
from facts.config_state import ConfigState

ANY = ["0.0.0.0/0", "::/0"]

DEFAULTS: dict[str, Any] = {
    "firewall_enabled": True,  # manage the nftables firewall at all
    "firewall_table": "spectra",  # our nftables table (family inet); nothing else is touched
    "firewall_rules_path": "/etc/nftables.d/spectra.nft",  # file holding the table
    "firewall_policy": "drop",  # input chain policy: "drop", or "accept" to try rules without effect
    "firewall_ssh_port": 22,  # sshd port
    "firewall_admin_cidrs": ANY,  # who may SSH in; default anywhere (narrow it in group data)
    "firewall_control_plane_cidrs": None,  # kubelet (10250) clients; None: control_plane hosts' addresses
    "firewall_etcd_peer_cidrs": None,  # etcd 2379-2380 clients/peers; None: control_plane + etcd hosts
    "firewall_node_cidrs": None,  # CNI overlay peers; None: every inventory host's address
    "firewall_monitoring_cidrs": None,  # node exporter scrapers; None: hosts with the monitoring role
    "firewall_apiserver_cidrs": ANY,  # kube-apiserver (6443) clients, on control_plane hosts
    "firewall_apiserver_port": 6443,  # kube-apiserver secure port
    "firewall_kubelet_port": 10250,  # kubelet API port
    "firewall_node_exporter_port": 9100,  # node exporter port
    "firewall_nodeports_enabled": True,  # open the Service NodePort range
    "firewall_nodeport_range": "30000-32767",  # Service NodePort range (kube-apiserver default)
    "firewall_nodeport_cidrs": ANY,  # who may reach NodePorts
    "firewall_overlay_udp_ports": [4789, 8472],  # CNI overlay (VXLAN: Calico 4789, Flannel/Cilium 8472)
    "firewall_overlay_tcp_ports": [],  # e.g. [179] for Calico BGP, [4240] for Cilium health
    # Interfaces of the pod network: traffic from pods to the node (DNS, API via service IP) is accepted
    "firewall_pod_interfaces": ["cni0", "cali*", "flannel.*", "vxlan.calico", "tunl0", "cilium_*", "lxc*"],
    "firewall_extra_rules": [],  # more input-chain rules, nft syntax, appended before the policy
    "firewall_log_dropped": False,  # log dropped packets (rate limited)
}

TYPES: dict[str, type | tuple[type, ...]] = {
    "firewall_control_plane_cidrs": list,
    "firewall_etcd_peer_cidrs": list,
    "firewall_node_cidrs": list,
    "firewall_monitoring_cidrs": list,
}

CONTROL_PLANE = "control_plane"
ETCD = "etcd"
MONITORING = "monitoring"
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:+-]{1,15}\*?$")
_SET_NAMES = ("admin", "control_plane", "etcd_peers", "nodes", "monitoring", "apiserver", "nodeport")


def host_address(candidate: Any) -> str | None:
    """The IP literal a host is reached at (``ssh_hostname`` or its name), or None."""
    for value in (candidate.data.get("ssh_hostname"), candidate.name):
        if not value:
            continue
        try:
            return str(ipaddress.ip_address(str(value)))
        except ValueError:
            continue
    return None


def inventory_addresses(roles: Iterable[str] | None) -> list[str]:
    """Addresses of inventory hosts having any of ``roles`` (all hosts for None), as /32 or /128."""
    wanted = set(roles) if roles is not None else None
    addresses: list[str] = []
    for candidate in host.inventory:
        host_roles = set(candidate.data.get("roles") or [])
        if wanted is not None and not host_roles & wanted:
            continue
        address = host_address(candidate)
        if address is None:
            raise DeployError(
                f"firewall: cannot tell the IP address of {candidate.name} (roles {sorted(host_roles)}): "
                "give it an IP ssh_hostname, or set the firewall_*_cidrs lists explicitly"
            )
        addresses.append(str(ipaddress.ip_network(address)))
    return sorted(set(addresses))


def split_cidrs(name: str, cidrs: Iterable[str]) -> tuple[list[str], list[str]]:
    """Validated, normalised (v4, v6) network lists; raises on anything that is not a CIDR/address."""
    v4: list[str] = []
    v6: list[str] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError as error:
            raise DeployError(f"{name}: {cidr!r} is not an IP network") from error
        (v4 if network.version == 4 else v6).append(str(network))
    return sorted(set(v4)), sorted(set(v6))


def port_spec(ports: Any) -> str:
    """``22`` -> ``22``; ``"30000-32767"`` -> ``30000-32767``; ``[4789, 8472]`` -> ``{ 4789, 8472 }``."""
    if isinstance(ports, int) and not isinstance(ports, bool):
        items = [ports]
    elif isinstance(ports, str):
        low, sep, high = ports.partition("-")
        if not (low.isdigit() and (not sep or high.isdigit())):
            raise DeployError(f"bad port or port range {ports!r}")
        if sep and not 0 < int(low) <= int(high) < 65536:
            raise DeployError(f"bad port range {ports!r}")
        return ports
    else:
        items = list(ports)
    for item in items:
        if not isinstance(item, int) or isinstance(item, bool) or not 0 < item < 65536:
            raise DeployError(f"bad port {item!r}")
    return str(items[0]) if len(items) == 1 else "{ " + ", ".join(str(item) for item in items) + " }"


def allow(proto: str, ports: Any, set_name: str, comment: str) -> list[str]:
    spec = port_spec(ports)
    return [
        f'{proto} dport {spec} ip saddr @{set_name}_v4 accept comment "{comment}"',
        f'{proto} dport {spec} ip6 saddr @{set_name}_v6 accept comment "{comment}"',
    ]


def firewall_model(data: dict[str, Any], roles: list[str], hostname: str) -> dict[str, Any]:
    """Everything the nftables template needs: sets (with elements) and input rules, per role."""
    if data["firewall_policy"] not in ("drop", "accept"):
        raise DeployError("firewall_policy must be 'drop' or 'accept'")
    if not re.match(r"^[a-z][a-z0-9_]{0,31}$", str(data["firewall_table"])):
        raise DeployError(f"firewall_table {data['firewall_table']!r} is not a plain nftables name")

    def cidrs(key: str, derived_roles: Iterable[str] | None, required: bool) -> list[str]:
        value = data[key]
        if value is None:
            value = inventory_addresses(derived_roles)
            if required and not value:
                raise DeployError(
                    f"{key} is not set and no inventory host has the role(s) {sorted(derived_roles or [])}: "
                    f"set {key} in group data"
                )
        return list(value)

    is_control_plane = CONTROL_PLANE in roles
    is_etcd = ETCD in roles or is_control_plane
    sources = {
        "admin": data["firewall_admin_cidrs"],
        "control_plane": cidrs("firewall_control_plane_cidrs", [CONTROL_PLANE], required=True),
        "etcd_peers": cidrs("firewall_etcd_peer_cidrs", [CONTROL_PLANE, ETCD], required=is_etcd),
        "nodes": cidrs("firewall_node_cidrs", None, required=False),
        "monitoring": cidrs("firewall_monitoring_cidrs", [MONITORING], required=False),
        "apiserver": data["firewall_apiserver_cidrs"],
        "nodeport": data["firewall_nodeport_cidrs"],
    }
    sets: list[dict[str, Any]] = []
    for name in _SET_NAMES:
        v4, v6 = split_cidrs(f"firewall {name} addresses", sources[name] or [])
        sets.append({"name": f"{name}_v4", "type": "ipv4_addr", "elements": v4})
        sets.append({"name": f"{name}_v6", "type": "ipv6_addr", "elements": v6})

    rules: list[str] = []
    rules += allow("tcp", data["firewall_ssh_port"], "admin", "ssh from admin networks")
    rules += allow("tcp", data["firewall_kubelet_port"], "control_plane", "kubelet from the control plane")
    rules += allow("tcp", data["firewall_node_exporter_port"], "monitoring", "node exporter from monitoring only")
    if data["firewall_overlay_udp_ports"]:
        rules += allow("udp", data["firewall_overlay_udp_ports"], "nodes", "CNI overlay between nodes")
    if data["firewall_overlay_tcp_ports"]:
        rules += allow("tcp", data["firewall_overlay_tcp_ports"], "nodes", "CNI control between nodes")
    if data["firewall_nodeports_enabled"]:
        rules += allow("tcp", data["firewall_nodeport_range"], "nodeport", "Service NodePorts")
        rules += allow("udp", data["firewall_nodeport_range"], "nodeport", "Service NodePorts")
    if is_control_plane:
        rules += allow("tcp", data["firewall_apiserver_port"], "apiserver", "kube-apiserver")
    if is_etcd:
        rules += allow("tcp", "2379-2380", "etcd_peers", "etcd clients and peers")
    if is_control_plane:
        rules.append('tcp dport { 10257, 10259 } drop comment "controller-manager and scheduler: local only"')

    interfaces = list(data["firewall_pod_interfaces"] or [])
    for interface in interfaces:
        if not _INTERFACE.match(str(interface)):
            raise DeployError(f"firewall_pod_interfaces: {interface!r} is not an interface name")
    extra = [str(rule) for rule in data["firewall_extra_rules"] or []]
    for rule in extra:
        if "\n" in rule or rule.count("{") != rule.count("}"):
            raise DeployError(f"firewall_extra_rules: one rule per entry, not {rule!r}")

    return {
        "family": "inet",
        "table": data["firewall_table"],
        "hostname": hostname,
        "roles": roles or ["(none)"],
        "policy": data["firewall_policy"],
        "sets": sets,
        "pod_interfaces": interfaces,
        "rules": rules,
        "extra_rules": extra,
        "log_dropped": bool(data["firewall_log_dropped"]),
    }


UNITS = ["nftables.service"]
MAIN_CONFIG = "/etc/nftables.conf"
DROPIN = "/etc/systemd/system/nftables.service.d/spectra.conf"


def fact_requests(data: dict[str, Any] | None = None) -> list[FactRequest]:
    """What :func:`firewall` reads at prepare time (node.py reads it with other components' facts)."""
    data = data or component_data(DEFAULTS)
    if not data["firewall_enabled"]:
        return []
    paths = [data["firewall_rules_path"], MAIN_CONFIG, DROPIN]
    return [DebPackages, (ConfigState, {"paths": paths, "units": UNITS})]


def nft_check(staged: str) -> StringCommand:
    return StringCommand("nft", "-c", "-f", QuoteString(staged))


@deploy("Firewall", data_defaults=DEFAULTS)
def firewall() -> None:
    """Install nftables, write and check the role's table, load it only when it changed."""
    data = {key: host.data.get(key) for key in DEFAULTS}
    if not data["firewall_enabled"]:
        host.noop("firewall disabled (firewall_enabled=False)")
        return
    roles = [str(role) for role in host.data.get("roles") or []]
    model = firewall_model(data, roles, host.name)
    rules_path = data["firewall_rules_path"]
    if not (rules_path.startswith("/etc/nftables.d/") and rules_path.endswith(".nft")):
        raise DeployError("firewall_rules_path must be /etc/nftables.d/<name>.nft (the include glob)")

    files = [
        ConfigFile(
            path=rules_path,
            content=render_template("etc/nftables.d/spectra.nft.j2", **model),
            mode="640",
            validate=nft_check,
        ),
        ConfigFile(
            path=MAIN_CONFIG,
            content=render_template("etc/nftables.conf.j2"),
            mode="755",
            validate=nft_check,
        ),
        ConfigFile(
            path=DROPIN,
            content=render_template(
                "etc/systemd/system/nftables.service.d/spectra.conf.j2",
                family=model["family"],
                table=model["table"],
            ),
        ),
    ]
    units = UNITS
    installed, current = prepared_facts(*fact_requests(data))  # what config_files(files, units) would read
    managed.apt_packages(name="Install nftables", packages=["nftables"], update=False, current=installed)
    config_files(
        name=f"Install and load nftables table inet {model['table']} (checked with nft -c first)",
        files=files,
        daemon_reload=True,
        enabled_units=units,
        running_units=units,
        current=current,
        # Replaces our table only, in one transaction (the file deletes and redefines it)
        on_change=[StringCommand("nft", "-f", QuoteString(rules_path))],
    )
