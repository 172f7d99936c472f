"""Lab configuration: layouts, addresses and the errors bad input gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.config import LabConfig, LabError, NodeSpec, default_nodes, load_config_file

pytestmark = pytest.mark.unit


def test_default_layout_has_one_node_per_zone_and_both_debian_releases() -> None:
    nodes = default_nodes(3)
    assert [(n.name, n.roles, n.zone, n.suite) for n in nodes] == [
        ("node1", ["control_plane", "etcd"], "lab-a", "bookworm"),
        ("node2", ["workers", "monitoring"], "lab-b", "bookworm"),
        ("node3", ["workers"], "lab-c", "trixie"),
    ]


def test_more_nodes_are_workers_spread_over_zones_and_suite_overrides_all() -> None:
    nodes = default_nodes(5, suite="bookworm")
    assert [n.zone for n in nodes[3:]] == ["lab-a", "lab-b"]
    assert {n.suite for n in nodes} == {"bookworm"}
    assert nodes[4].roles == ["workers"]


def test_addresses_start_at_eleven_and_gateway_is_first() -> None:
    config = LabConfig(nodes=[], subnet="198.18.4.0/24")
    assert config.gateway == "198.18.4.1"
    assert config.address_of(0) == "198.18.4.11"
    assert config.mirror_url == "http://198.18.4.1:8080"


def test_a_subnet_too_small_for_the_nodes_is_refused() -> None:
    config = LabConfig(nodes=[], subnet="198.18.0.0/28")
    assert config.address_of(2) == "198.18.0.13"
    with pytest.raises(LabError, match="no room for node number 5"):
        config.address_of(4)


@pytest.mark.parametrize(
    ("nodes", "subnet", "message"),
    [
        ([NodeSpec("node1", ["workers"], "lab-a")], "10.0.0.0/24", "must lie inside 198.18.0.0/15"),
        ([NodeSpec("node1", ["workers"], "lab-a")], "198.18.0.0/33", "not a network address"),
        ([NodeSpec("Node_1", ["workers"], "lab-a")], "198.18.0.0/24", "use 1-15 lowercase"),
        ([NodeSpec("node1", ["workers"], "lab-a", "sid")], "198.18.0.0/24", "suite 'sid' is not one of"),
        ([NodeSpec("node1", [], "lab-a")], "198.18.0.0/24", "at least one role"),
        ([NodeSpec("a", ["w"], "z"), NodeSpec("a", ["w"], "z")], "198.18.0.0/24", "node names repeat"),
        ([], "198.18.0.0/24", "at least one node"),
    ],
)
def test_invalid_configs_are_refused(nodes: list[NodeSpec], subnet: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        LabConfig(nodes=nodes, subnet=subnet).validate()


def test_config_file_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "lab.yaml"
    good.write_text("nodes:\n  - {name: cp1, roles: [control_plane], zone: lab-a, suite: trixie}\n  - {name: w1}\n")
    nodes = load_config_file(good)
    assert [(n.name, n.roles, n.zone, n.suite) for n in nodes] == [
        ("cp1", ["control_plane"], "lab-a", "trixie"),
        ("w1", ["workers"], "lab-a", "bookworm"),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - {name: cp1, role: control_plane}\n")
    with pytest.raises(LabError, match=r"unknown node keys \['role'\]"):
        load_config_file(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("nodes: [\n")
    with pytest.raises(LabError, match="not valid YAML"):
        load_config_file(broken)
    with pytest.raises(LabError, match="does not exist"):
        load_config_file(tmp_path / "missing.yaml")
