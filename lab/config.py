"""Lab configuration: which nodes exist, their roles, zones and Debian releases, and where state lives."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_SUITES = ("bookworm", "trixie")
NODE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")

# 198.18.0.0/15 is set aside for network benchmark tests (RFC 2544): it will not clash with real networks.
DEFAULT_SUBNET = "198.18.0.0/24"


class LabError(Exception):
    """An error the user can act on; printed without a traceback and exits non-zero."""


@dataclass
class NodeSpec:
    name: str
    roles: list[str]
    zone: str
    suite: str = "bookworm"

    def validate(self) -> None:
        if not NODE_NAME_RE.match(self.name):
            raise LabError(f"node name {self.name!r}: use 1-15 lowercase letters, digits or '-'")
        if self.suite not in SUPPORTED_SUITES:
            raise LabError(f"node {self.name}: suite {self.suite!r} is not one of {', '.join(SUPPORTED_SUITES)}")
        if not self.roles:
            raise LabError(f"node {self.name}: at least one role is needed")


@dataclass
class LabConfig:
    nodes: list[NodeSpec]
    # SPECTRA_LAB_SUBNET/SPECTRA_LAB_BRIDGE (with SPECTRA_LAB_DIR) select a second lab beside the default one.
    subnet: str = field(default_factory=lambda: os.environ.get("SPECTRA_LAB_SUBNET", DEFAULT_SUBNET))
    bridge: str = field(default_factory=lambda: os.environ.get("SPECTRA_LAB_BRIDGE", "splab0"))
    mirror_port: int = 8080
    registry_port: int = 5000
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("SPECTRA_LAB_DIR", "/var/lib/spectra-lab")))
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("SPECTRA_LAB_CACHE", "/var/cache/spectra-lab")))
    debian_mirror: str = field(
        default_factory=lambda: os.environ.get("SPECTRA_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    )

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    def address_of(self, index: int) -> str:
        # .1 is the lab host (bridge, mirror); nodes start at .11.
        address = self.network.network_address + 11 + index
        if address not in self.network or address == self.network.broadcast_address:
            raise LabError(f"subnet {self.subnet} has no room for node number {index + 1}")
        return str(address)

    @property
    def mirror_url(self) -> str:
        return f"http://{self.gateway}:{self.mirror_port}"

    def validate(self) -> None:
        try:
            network = self.network
        except ValueError as exc:
            raise LabError(f"subnet {self.subnet!r} is not a network address with a prefix: {exc}") from exc
        if not ipaddress.IPv4Network("198.18.0.0/15").supernet_of(network):
            raise LabError(f"subnet {self.subnet} must lie inside 198.18.0.0/15 (reserved for test networks)")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise LabError(f"node names repeat: {names}")
        if not self.nodes:
            raise LabError("the lab needs at least one node")
        for node in self.nodes:
            node.validate()
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", self.bridge):
            # veth names are the bridge name plus "v<index>", and interface names stop at 15 characters.
            raise LabError(f"bridge name {self.bridge!r}: use 1-10 lowercase letters or digits, starting with a letter")


# Default three nodes, one per zone: one control plane (with etcd) and two workers. Debian 12 is the
# default release; node3 runs Debian 13 so that every converge covers both supported releases.
DEFAULT_LAYOUT: list[dict[str, Any]] = [
    {"name": "node1", "roles": ["control_plane", "etcd"], "zone": "lab-a", "suite": "bookworm"},
    # node2 also has the monitoring role: Prometheus and its node-local volume live there (not on node3,
    # which the alert test powers off)
    {"name": "node2", "roles": ["workers", "monitoring"], "zone": "lab-b", "suite": "bookworm"},
    {"name": "node3", "roles": ["workers"], "zone": "lab-c", "suite": "trixie"},
]
ZONES = ("lab-a", "lab-b", "lab-c")


def default_nodes(count: int, suite: str | None = None) -> list[NodeSpec]:
    """The default layout for `count` nodes; `suite` puts every node on one Debian release."""
    nodes = []
    for index in range(count):
        if index < len(DEFAULT_LAYOUT):
            spec = dict(DEFAULT_LAYOUT[index])
        else:
            spec = {"name": f"node{index + 1}", "roles": ["workers"], "zone": ZONES[index % len(ZONES)]}
            spec["suite"] = "bookworm"
        if suite is not None:
            spec["suite"] = suite
        nodes.append(NodeSpec(**spec))
    return nodes


def load_config_file(path: Path) -> list[NodeSpec]:
    """Read a YAML file: `nodes: [{name, roles, zone, suite}]`."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise LabError(f"lab config {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise LabError(f"lab config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list):
        raise LabError(f"lab config {path}: expected a mapping with a 'nodes' list")
    nodes = []
    for entry in raw["nodes"]:
        if not isinstance(entry, dict):
            raise LabError(f"lab config {path}: each node must be a mapping, got {entry!r}")
        unknown = set(entry) - {"name", "roles", "zone", "suite"}
        if unknown:
            raise LabError(f"lab config {path}: unknown node keys {sorted(unknown)}")
        try:
            nodes.append(
                NodeSpec(
                    name=str(entry["name"]),
                    roles=[str(r) for r in entry.get("roles", ["workers"])],
                    zone=str(entry.get("zone", "lab-a")),
                    suite=str(entry.get("suite", "bookworm")),
                )
            )
        except KeyError as exc:
            raise LabError(f"lab config {path}: a node has no {exc.args[0]!r}") from exc
    return nodes


def node_to_dict(node: NodeSpec) -> dict[str, Any]:
    return asdict(node)
