"""spectra.topology: one answer to who is who, for every component (pure: records in, answers out)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from spectra import topology

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Member:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


def test_address_precedence_is_node_address_private_ip_ssh_hostname_name() -> None:
    everything = {"node_address": "10.0.0.1", "private_ip": "10.0.0.2", "ssh_hostname": "203.0.113.3"}
    assert topology.node_address(Member("a", everything)) == "10.0.0.1"
    assert topology.node_address(Member("a", {**everything, "node_address": None})) == "10.0.0.2"
    assert topology.node_address(Member("a", {"ssh_hostname": "203.0.113.3"})) == "203.0.113.3"
    assert topology.node_address(Member("10.0.0.9")) == "10.0.0.9"
    assert topology.node_address(Member("node1")) is None
    with pytest.raises(topology.TopologyError, match="node1 has no address"):
        topology.require_address(Member("node1"))


def test_ip_address_refuses_names() -> None:
    assert topology.ip_address(Member("a", {"ssh_hostname": "fd00::1"})) == "fd00::1"
    with pytest.raises(topology.TopologyError, match="'cp1.example' is not an IP address"):
        topology.ip_address(Member("a", {"ssh_hostname": "cp1.example"}))


def test_url_host_brackets_ipv6() -> None:
    assert topology.url_host("10.0.0.1") == "10.0.0.1"
    assert topology.url_host("fd00::1") == "[fd00::1]"


INVENTORY = [
    Member("w2", {"roles": ["workers"], "ssh_hostname": "10.0.0.22"}),
    Member("cp2", {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.12"}),
    Member("cp1", {"roles": ["control_plane", "etcd"], "private_ip": "10.0.0.11", "ssh_hostname": "203.0.113.11"}),
    Member("mon", {"roles": ["monitoring"], "ssh_hostname": "10.0.0.30"}),
    Member("w1", {"roles": ["workers"], "ssh_hostname": "10.0.0.21"}),
]


def test_control_planes_first_by_name_and_etcd_members() -> None:
    assert [member.name for member in topology.control_planes(INVENTORY)] == ["cp1", "cp2"]
    assert topology.first_control_plane(INVENTORY) == "cp1"
    assert topology.is_first_control_plane(INVENTORY[2], INVENTORY)
    assert not topology.is_first_control_plane(INVENTORY[1], INVENTORY)
    assert topology.first_control_plane(INVENTORY[3:]) is None
    assert topology.etcd_members(INVENTORY) == [("cp1", "10.0.0.11"), ("cp2", "10.0.0.12")]


def test_kubelet_hosts_follow_cluster_node_roles() -> None:
    assert [member.name for member in topology.kubelet_hosts(INVENTORY)] == ["cp1", "cp2", "w1", "w2"]
    monitored = [Member(m.name, {**m.data, "cluster_node_roles": ["workers", "monitoring"]}) for m in INVENTORY]
    assert [member.name for member in topology.kubelet_hosts(monitored)] == ["mon", "w1", "w2"]


def test_addresses_by_role() -> None:
    assert topology.addresses(INVENTORY, topology.CONTROL_PLANE) == ["10.0.0.11", "10.0.0.12"]
    assert len(topology.addresses(INVENTORY)) == 5


def test_one_definition_of_each_topology_answer() -> None:
    """No component works out an address, the first control plane or a URL host on its own."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    sources = sorted(path for path in set(listed) if (ROOT / path).is_file())
    patterns = {
        "address": re.compile(r"^def (node_address|member_address|host_address)\(", re.M),
        "first control plane": re.compile(r"^def first_control_plane\(", re.M),
        "url host": re.compile(r"^def _?url_host\(", re.M),
    }
    for what, pattern in patterns.items():
        found = [path for path in sources if pattern.search((ROOT / path).read_text())]
        assert found == ["spectra/topology.py"], (what, found)
