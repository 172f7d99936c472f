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
  when a file changed.
- It cannot lock the deploy out. At prepare (``preflight``, before any component of the run changes the
  host), admin CIDRs that leave out the deploy's own source address (``facts.connection.DeploySource``: the
  SSH_CONNECTION of its session as the host sees it, so a bastion's address through a bastion) are refused,
  naming the setting and the address. And since the session doing the work is established (conntrack keeps
  it through any new ruleset, so it proves nothing), a load is guarded: the live table is saved under
  ``/run/spectra-firewall`` and a transient timer (``systemd-run --on-active``) armed to restore it (table and
  file) before nftables starts or the table is reloaded; the controller must then open a NEW SSH connection
  (the host's own connection data, through its ssh config) within ``firewall_reconnect_seconds``, else the
  deploy fails and the timer restores the previous table after ``firewall_rollback_seconds``.
- Production hosts (a group ``env_<name>`` for a name of ``firewall_production_envs``) are not opened to
  anywhere (a /0 among the sources) by accident: SSH, the API server (control-plane hosts), the NodePorts, or
  the whole input chain (``firewall_policy`` "accept") so opened is refused by ``spectra validate`` and at
  prepare (:func:`exposures`), unless ``firewall_exposure_allowed`` records the reason for that setting; then
  ``spectra validate`` prints it as a warning on every run.
- NEW connections to ``ssh_port`` are throttled per source address (a dynamic set with a limit per
  address; Debian 12's OpenSSH has no PerSourcePenalties), generously enough for the deploy and the tests.

Where addresses are not given, they come from the inventory: each host's address inside the cluster
(``spectra.topology.node_address``, the one the certificates, kubelet and etcd use), grouped by ``roles``.
Ports come from their owners (cluster settings, ``ssh_port``, ``node_exporter_listen_address``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component, Exposure
from deploys.components import control_plane_flags, node_exporter
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, render_template
from deploys.operations.firewall_rollback import guarded_config_files
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.config_state import ConfigState
from facts.connection import DeploySource
from spectra import topology

ANY = ["0.0.0.0/0", "::/0"]

DEFAULTS: dict[str, Any] = {
    "firewall_enabled": True,  # manage the nftables firewall at all
    "firewall_table": "spectra",  # our nftables table (family inet); nothing else is touched
    "firewall_rules_path": "/etc/nftables.d/spectra.nft",  # file holding the table
    "firewall_policy": "drop",  # input chain policy: "drop", or "accept" to try rules without effect
    "firewall_admin_cidrs": ANY,  # who may SSH in (on ssh_port); default anywhere (narrow it in group data)
    "firewall_control_plane_cidrs": None,  # kubelet API clients; None: control_plane hosts' addresses
    "firewall_etcd_peer_cidrs": None,  # etcd clients/peers; None: control_plane + etcd hosts' addresses
    "firewall_node_cidrs": None,  # CNI overlay peers; None: every inventory host's address
    # metrics scrapers (node exporter, kubelet, etcd, controller-manager, scheduler); None: the addresses of the
    # hosts with the monitoring role, where Prometheus runs (its pods leave their node with the node's address)
    "firewall_monitoring_cidrs": None,
    "firewall_monitoring_extra_cidrs": [],  # scrapers besides those (a monitoring server outside the cluster)
    "firewall_apiserver_cidrs": ANY,  # kube-apiserver clients, on control_plane hosts
    "firewall_nodeports_enabled": True,  # open the Service NodePort range (cluster_nodeport_range)
    "firewall_nodeport_cidrs": ANY,  # who may reach NodePorts
    "firewall_overlay_udp_ports": [4789, 8472],  # CNI overlay (VXLAN: Calico 4789, Flannel/Cilium 8472)
    "firewall_overlay_tcp_ports": [],  # e.g. [179] for Calico BGP, [4240] for Cilium health
    # Interfaces of the pod network: traffic from pods to the node (DNS, API via service IP) is accepted
    "firewall_pod_interfaces": ["cni0", "cali*", "flannel.*", "vxlan.calico", "tunl0", "cilium_*", "lxc*"],
    "firewall_extra_rules": [],  # more input-chain rules, nft syntax, appended before the policy
    # input-chain rules placed BEFORE the SSH and service rules (deny lists, nft syntax). The lockout refusal
    # cannot read them: the reconnect check with its automatic rollback is what guards them
    "firewall_early_rules": [],
    # Lockout guard: refuse admin CIDRs that leave out the deploy's own source address (the SSH_CONNECTION of
    # its session on the host; through a bastion, the bastion's). True: allow it anyway (another way in exists)
    "firewall_allow_lockout": False,
    # A changed ruleset is loaded with a rollback armed on the host (a transient systemd timer restoring the
    # previous table after this many seconds) and disarmed only once the controller has opened a NEW SSH
    # connection to the host within firewall_reconnect_seconds (which must be shorter)
    "firewall_rollback_seconds": 60,
    "firewall_reconnect_seconds": 20,
    # Per-source throttle of NEW connections to ssh_port (OpenSSH 9.2 has no PerSourcePenalties): above
    # firewall_ssh_rate_per_minute, after a burst of firewall_ssh_burst, a source's new connections are dropped.
    # Generous on purpose: pyinfra's parallel connections, compliance and the lab tests must never hit it
    "firewall_ssh_throttle_enabled": True,
    "firewall_ssh_rate_per_minute": 300,
    "firewall_ssh_burst": 50,
    "firewall_log_dropped": False,  # log dropped packets (rate limited)
    # Production hosts: those in a group env_<name> for a name listed here (inventories/grouping.py makes
    # env_<env> from a host's env). On them SSH, the API server, NodePorts or the whole input chain
    # (firewall_policy "accept") open to anywhere (a /0 among the sources) is refused, by `spectra validate`
    # and at prepare, unless firewall_exposure_allowed records why
    "firewall_production_envs": ["prod", "production"],
    # Exposures allowed on production hosts anyway: {setting: reason}, the setting one of EXPOSURES
    # ("firewall_admin_cidrs", "firewall_apiserver_cidrs", "firewall_nodeport_cidrs", "firewall_policy"),
    # the reason non-empty text (printed as a warning by every `spectra validate`)
    "firewall_exposure_allowed": {},
}

TYPES: dict[str, type | tuple[type, ...]] = {
    "firewall_control_plane_cidrs": list,
    "firewall_etcd_peer_cidrs": list,
    "firewall_node_cidrs": list,
    "firewall_monitoring_cidrs": list,
}
CHOICES: dict[str, tuple[Any, ...]] = {"firewall_policy": ("drop", "accept")}
# Bounds of the SSH throttle: below them the deploy's own parallel connections (one per host and fact batch),
# `spectra comply` and the lab tests' ssh calls would be dropped; above them it throttles nothing.
SSH_RATE_BOUNDS = (30, 6000)  # new connections per minute and source
SSH_BURST_BOUNDS = (20, 1000)  # connections a source may open at once before the rate applies

_INTERFACE = re.compile(r"^[A-Za-z0-9_.:+-]{1,15}\*?$")
_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SET_NAMES = ("admin", "control_plane", "etcd_peers", "nodes", "monitoring", "apiserver", "nodeport", "gateway")
CIDR_KEYS = (
    "firewall_admin_cidrs",
    "firewall_control_plane_cidrs",
    "firewall_etcd_peer_cidrs",
    "firewall_node_cidrs",
    "firewall_monitoring_cidrs",
    "firewall_monitoring_extra_cidrs",
    "firewall_apiserver_cidrs",
    "firewall_nodeport_cidrs",
)
# The settings the production rule judges (:func:`exposures`), the keys firewall_exposure_allowed may name.
# Not gateway_cidrs: the API gateway is the cluster's public entry point, open to anywhere by design.
EXPOSURES = ("firewall_admin_cidrs", "firewall_apiserver_cidrs", "firewall_nodeport_cidrs", "firewall_policy")
ALLOWANCE_KEY = "firewall_exposure_allowed"
_ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats the nftables file depends on (pure: ``spectra validate`` runs it too)."""
    problems = []
    if not _TABLE.match(str(settings["firewall_table"])):
        problems.append(f"firewall_table={settings['firewall_table']!r}: not a plain nftables name")
    path = str(settings["firewall_rules_path"])
    if not (path.startswith("/etc/nftables.d/") and path.endswith(".nft")):
        problems.append(f"firewall_rules_path={path!r}: must be /etc/nftables.d/<name>.nft (the include glob)")
    for key in CIDR_KEYS:
        for cidr in settings[key] or []:
            try:
                ipaddress.ip_network(str(cidr), strict=False)
            except ValueError:
                problems.append(f"{key}: {cidr!r} is not an IP network")
    for key in ("firewall_overlay_udp_ports", "firewall_overlay_tcp_ports"):
        for port in settings[key] or []:
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                problems.append(f"{key}: {port!r} is not a port number")
    for interface in settings["firewall_pod_interfaces"] or []:
        if not _INTERFACE.match(str(interface)):
            problems.append(f"firewall_pod_interfaces: {interface!r} is not an interface name")
    for key in ("firewall_extra_rules", "firewall_early_rules"):
        for rule in settings[key] or []:
            if "\n" in str(rule) or str(rule).count("{") != str(rule).count("}"):
                problems.append(f"{key}: one rule per entry, not {rule!r}")
    for key, (low, high) in (
        ("firewall_ssh_rate_per_minute", SSH_RATE_BOUNDS),
        ("firewall_ssh_burst", SSH_BURST_BOUNDS),
    ):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(
                f"{key}={value!r}: an integer from {low} to {high} (lower would throttle the deploy's own connections)"
            )
    rollback, reconnect = settings["firewall_rollback_seconds"], settings["firewall_reconnect_seconds"]
    for key, value in (("firewall_rollback_seconds", rollback), ("firewall_reconnect_seconds", reconnect)):
        if not isinstance(value, int) or isinstance(value, bool) or not 5 <= value <= 3600:
            problems.append(f"{key}={value!r}: whole seconds from 5 to 3600")
    if isinstance(rollback, int) and isinstance(reconnect, int) and not reconnect + 5 <= rollback:
        problems.append(
            f"firewall_reconnect_seconds={reconnect!r}: must end at least 5 s before firewall_rollback_seconds="
            f"{rollback!r}, or the rollback could fire while the controller is still being let back in"
        )
    return problems + exposure_setting_problems(settings)


def exposure_setting_problems(settings: Mapping[str, Any]) -> list[str]:
    """The production rule's own settings: env names usable as groups, and allowances that name a setting
    the rule judges and record a reason."""
    problems = []
    envs = settings["firewall_production_envs"]
    if not isinstance(envs, (list, tuple)):
        problems.append(f"firewall_production_envs={envs!r}: a list of environment names")
        envs = []
    for name in envs:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            problems.append(
                f"firewall_production_envs: {name!r} is not an environment name as its group has it "
                "(env_<name>: lower-case letters, digits and _)"
            )
    allowed = settings[ALLOWANCE_KEY]
    if not isinstance(allowed, Mapping):
        return [*problems, f"{ALLOWANCE_KEY}={allowed!r}: a dict of setting -> reason"]
    for key, reason in allowed.items():
        if key not in EXPOSURES:
            problems.append(
                f"{ALLOWANCE_KEY}: {key!r} is not a setting the production rule judges (one of {', '.join(EXPOSURES)})"
            )
        elif not isinstance(reason, str) or not reason.strip():
            problems.append(
                f"{ALLOWANCE_KEY}[{key!r}]={reason!r}: the reason must be non-empty text "
                "(why it is open to anywhere, and who decided)"
            )
    return problems


def production_group(settings: Mapping[str, Any], groups: Iterable[str]) -> str | None:
    """The env group that makes this host a production host (``firewall_production_envs``), if any."""
    envs = settings["firewall_production_envs"]
    wanted = {f"env_{name}" for name in envs if isinstance(name, str)} if isinstance(envs, (list, tuple)) else set()
    return next((group for group in sorted(str(group) for group in groups) if group in wanted), None)


def _anywhere(cidrs: Any) -> list[str]:
    """The entries of ``cidrs`` that let in every address of a family (a /0); bad entries are check()'s."""
    found = []
    for cidr in cidrs if isinstance(cidrs, (list, tuple)) else []:
        try:
            if ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0:
                found.append(str(cidr))
        except ValueError:
            continue
    return found


def exposures(settings: Mapping[str, Any], groups: Iterable[str]) -> list[Exposure]:
    """What this host's firewall would open to anywhere, when the host is a production host (one of its
    ``groups`` is ``env_<name>`` for a name of ``firewall_production_envs``): SSH (``firewall_admin_cidrs``),
    the API server on control-plane hosts (``firewall_apiserver_cidrs``), the NodePorts when they are open
    (``firewall_nodeport_cidrs``), everything (``firewall_policy`` "accept"). Each carries the reason
    recorded for it in ``firewall_exposure_allowed``, or None: refused. Pure, like :func:`check`: `spectra
    validate` and every deploy (``deploys.component.run``) judge with it."""
    group = production_group(settings, groups)
    if group is None:
        return []
    allowed = settings[ALLOWANCE_KEY]
    reasons = allowed if isinstance(allowed, Mapping) else {}
    found: list[tuple[str, str]] = []
    if settings["firewall_policy"] == "accept":
        found.append(("firewall_policy", "every port is open to anywhere (the input policy 'accept' drops nothing)"))
    # ssh_port: None where no connector data sets it (spectra validate's view): pyinfra's default then
    sources = [("firewall_admin_cidrs", f"SSH (tcp port {settings['ssh_port'] or 22})")]
    if topology.CONTROL_PLANE in (settings["roles"] or []):
        sources.append(("firewall_apiserver_cidrs", f"the API server (tcp port {settings['apiserver_port']})"))
    if settings["firewall_nodeports_enabled"]:
        sources.append(
            (
                "firewall_nodeport_cidrs",
                f"the Service NodePort range (tcp and udp {settings['cluster_nodeport_range']})",
            )
        )
    for key, what in sources:
        anywhere = _anywhere(settings[key])
        if anywhere:
            found.append((key, f"{what} is open to anywhere ({', '.join(anywhere)})"))
    return [
        Exposure(key, what, group, ALLOWANCE_KEY, reason if isinstance(reason, str) and reason.strip() else None)
        for key, what in found
        for reason in [reasons.get(key)]
    ]


def admits(cidrs: Iterable[str], address: str) -> bool:
    """Whether ``address`` is inside one of ``cidrs``."""
    ip = ipaddress.ip_address(address)
    for cidr in cidrs:
        network = ipaddress.ip_network(str(cidr), strict=False)
        if network.version == ip.version and ip in network:
            return True
    return False


def lockout_problems(settings: Mapping[str, Any], source: Mapping[str, Any] | None) -> list[str]:
    """Firewall settings that would refuse the deploy's next SSH connection from ``source`` (the
    :class:`facts.connection.DeploySource` of this host), as problems naming the setting and the address."""
    if settings["firewall_allow_lockout"] or settings["firewall_policy"] == "accept":
        return []
    cidrs = list(settings["firewall_admin_cidrs"] or [])
    if source is None:
        networks = [ipaddress.ip_network(str(cidr), strict=False) for cidr in cidrs]
        if {network.version for network in networks if network.prefixlen == 0} == {4, 6}:
            return []  # open to every address of both families: nothing to compare
        return [
            f"firewall_admin_cidrs={cidrs!r}: refused, the deploy's source address on this host cannot be read "
            "(no SSH_CONNECTION in its session), so the SSH rule could lock it out; set "
            "firewall_allow_lockout=True if another way in exists"
        ]
    client = str(source["client"])
    if admits(cidrs, client):
        return []
    return [
        f"firewall_admin_cidrs={cidrs!r}: refused, the deploy connects from {client} (as this host sees it) and "
        f"the SSH rule on port {settings['ssh_port']} would not allow it: the next run could not log in. Add "
        f"{client} (or its network) to firewall_admin_cidrs, or set firewall_allow_lockout=True if another way "
        "in exists"
    ]


def preflight(settings: Mapping[str, Any]) -> list[str]:
    """:func:`lockout_problems` with this host's prepared :class:`DeploySource` (read with the other facts)."""
    (source,) = prepared_facts(DeploySource)
    return lockout_problems(settings, source)


def inventory_addresses(roles: Iterable[str] | None) -> list[str]:
    """Addresses (topology.node_address) of inventory hosts having any of ``roles`` (all hosts for None), as /32
    or /128."""
    try:
        found = topology.addresses(host.state.inventory, *(roles or ()), why="the firewall's peer sets")
    except topology.TopologyError as error:
        raise DeployError(f"firewall: {error}, or set the firewall_*_cidrs lists explicitly") from None
    return [str(ipaddress.ip_network(address)) for address in found]


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


def firewall_model(settings: Mapping[str, Any], roles: Iterable[str], hostname: str) -> dict[str, Any]:
    """Everything the nftables template needs: sets (with elements) and input rules, per role.

    Ports come from their owners: ``ssh_port`` (pyinfra's), the cluster settings (apiserver, kubelet, etcd,
    controller-manager, scheduler, NodePorts) and the node exporter's ``node_exporter_listen_address``.
    """
    roles = sorted(str(role) for role in roles)

    def cidrs(key: str, derived_roles: Iterable[str] | None, required: bool) -> list[str]:
        value = settings[key]
        if value is None:
            value = inventory_addresses(derived_roles)
            if required and not value:
                raise DeployError(
                    f"{key} is not set and no inventory host has the role(s) {sorted(derived_roles or [])}: "
                    f"set {key} in group data"
                )
        return list(value)

    is_control_plane = topology.CONTROL_PLANE in roles
    is_etcd = topology.ETCD in roles or is_control_plane
    # the API gateway (deploys.components.gateway) listens on the host's network of the edge hosts
    edge = bool(settings["gateway_enabled"]) and hostname in {m.name for m in topology.edge_hosts(host.state.inventory)}
    cp_and_etcd = [topology.CONTROL_PLANE, topology.ETCD]
    sources = {
        "admin": settings["firewall_admin_cidrs"],
        "control_plane": cidrs("firewall_control_plane_cidrs", [topology.CONTROL_PLANE], required=True),
        "etcd_peers": cidrs("firewall_etcd_peer_cidrs", cp_and_etcd, required=is_etcd),
        "nodes": cidrs("firewall_node_cidrs", None, required=False),
        "monitoring": [
            *cidrs("firewall_monitoring_cidrs", [topology.MONITORING], required=False),
            *(settings["firewall_monitoring_extra_cidrs"] or []),
        ],
        "apiserver": settings["firewall_apiserver_cidrs"],
        "nodeport": settings["firewall_nodeport_cidrs"],
        "gateway": settings["gateway_cidrs"] if edge else [],
    }
    sets: list[dict[str, Any]] = []
    for name in _SET_NAMES:
        v4, v6 = split_cidrs(f"firewall {name} addresses", sources[name] or [])
        sets.append({"name": f"{name}_v4", "type": "ipv4_addr", "elements": v4})
        sets.append({"name": f"{name}_v6", "type": "ipv6_addr", "elements": v6})

    ssh_port = int(settings["ssh_port"])
    meters: list[dict[str, Any]] = []
    rules: list[str] = [str(rule) for rule in settings["firewall_early_rules"] or []]
    if settings["firewall_ssh_throttle_enabled"]:
        limit = (
            f"limit rate over {int(settings['firewall_ssh_rate_per_minute'])}/minute "
            f"burst {int(settings['firewall_ssh_burst'])} packets"
        )
        for family, selector, kind in (("v4", "ip", "ipv4_addr"), ("v6", "ip6", "ipv6_addr")):
            meters.append({"name": f"ssh_throttle_{family}", "type": kind})
            rules.append(
                f"tcp dport {ssh_port} ct state new update @ssh_throttle_{family} "
                f'{{ {selector} saddr {limit} }} drop comment "ssh: new connections per source throttled"'
            )
    rules += allow("tcp", ssh_port, "admin", "ssh from admin networks")
    rules += allow("tcp", settings["kubelet_port"], "control_plane", "kubelet from the control plane")
    rules += allow("tcp", settings["kubelet_port"], "monitoring", "kubelet metrics from monitoring")
    exporter_port = node_exporter.listen_port(settings)
    if exporter_port is not None:
        rules += allow("tcp", exporter_port, "monitoring", "node exporter from monitoring only")
    if settings["firewall_overlay_udp_ports"]:
        rules += allow("udp", settings["firewall_overlay_udp_ports"], "nodes", "CNI overlay between nodes")
    if settings["firewall_overlay_tcp_ports"]:
        rules += allow("tcp", settings["firewall_overlay_tcp_ports"], "nodes", "CNI control between nodes")
    if settings["firewall_nodeports_enabled"]:
        rules += allow("tcp", settings["cluster_nodeport_range"], "nodeport", "Service NodePorts")
        rules += allow("udp", settings["cluster_nodeport_range"], "nodeport", "Service NodePorts")
    if is_control_plane:
        rules += allow("tcp", settings["apiserver_port"], "apiserver", "kube-apiserver")
    if edge:
        web = sorted({int(settings["gateway_http_port"]), int(settings["gateway_https_port"])})
        rules += allow("tcp", web, "gateway", "API gateway")
        rules += allow("tcp", int(settings["gateway_admin_port"]), "monitoring", "API gateway metrics from monitoring")
    if is_etcd:
        etcd_ports = sorted({settings["etcd_client_port"], settings["etcd_peer_port"]})
        rules += allow("tcp", etcd_ports, "etcd_peers", "etcd clients and peers")
        rules += allow("tcp", settings["etcd_client_port"], "monitoring", "etcd metrics from monitoring")
    if is_control_plane:
        ports = [settings["controller_manager_port"], settings["scheduler_port"]]
        if control_plane_flags.metrics_exposed(settings):
            rules += allow("tcp", ports, "monitoring", "controller-manager and scheduler metrics from monitoring")
        rules.append(f'tcp dport {port_spec(ports)} drop comment "controller-manager and scheduler: no one else"')

    return {
        "family": "inet",
        "table": settings["firewall_table"],
        "hostname": hostname,
        "roles": roles or ["(none)"],
        "policy": settings["firewall_policy"],
        "sets": sets,
        "meters": meters,
        "pod_interfaces": list(settings["firewall_pod_interfaces"] or []),
        "rules": rules,
        "extra_rules": [str(rule) for rule in settings["firewall_extra_rules"] or []],
        "log_dropped": bool(settings["firewall_log_dropped"]),
    }


UNITS = ["nftables.service"]
MAIN_CONFIG = "/etc/nftables.conf"
DROPIN = "/etc/systemd/system/nftables.service.d/spectra.conf"


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["firewall_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`firewall` reads at prepare time."""
    paths = [settings["firewall_rules_path"], MAIN_CONFIG, DROPIN]
    return [DebPackages, (ConfigState, {"paths": paths, "units": UNITS}), DeploySource]


def nft_check(staged: str) -> StringCommand:
    return StringCommand("nft", "-c", "-f", QuoteString(staged))


@deploy("Firewall")
def firewall() -> None:
    """Install nftables, write and check the role's table, load it only when it changed."""
    settings = Settings()
    model = firewall_model(settings, topology.roles(host), host.name)
    rules_path = settings["firewall_rules_path"]
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
    installed, current, _ = prepared_facts(*fact_requests(settings))  # what config_files(files, units) would read
    managed.apt_packages(name="Install nftables", packages=["nftables"], update=False, current=installed)
    guarded_config_files(
        name=f"Install and load nftables table inet {model['table']} (checked with nft -c first, rollback armed)",
        files=files,
        current=current,
        table=model["table"],
        rollback_seconds=int(settings["firewall_rollback_seconds"]),
        reconnect_seconds=int(settings["firewall_reconnect_seconds"]),
        units=UNITS,
    )


COMPONENT = Component(
    name="firewall",
    defaults=DEFAULTS,
    deploy=firewall,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check,),
    preflight=preflight,
    exposures=exposures,
)
