"""nftables firewall: per-role rules, own table only, nft -c before load, load only on change."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from pyinfra.api import DeployError
from pyinfra.facts.deb import DebPackages

from deploys.components.firewall import COMPONENT, firewall
from facts.config_state import ConfigState
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

RULES = "/etc/nftables.d/spectra.nft"
STAGED = "/etc/nftables.d/.spectra.nft.spectra-new"
BASE = {
    "firewall_control_plane_cidrs": ["10.0.0.10/32", "10.0.0.11/32"],
    "firewall_etcd_peer_cidrs": ["10.0.0.10/32", "10.0.0.11/32"],
    "firewall_node_cidrs": ["10.0.0.0/24"],
    "firewall_monitoring_cidrs": ["10.0.5.5/32"],
}
UNITS_OK = {
    "nftables.service": {
        "id": "nftables.service",
        "load": "loaded",
        "active": "active",
        "sub": "exited",
        "enabled": "enabled",
    }
}


def run(roles: list[str], files: dict[str, Any] | None = None, units: dict[str, Any] | None = None, **data: Any):
    state = {"files": files or {}, "units": UNITS_OK if units is None else units}
    return run_component(
        COMPONENT,
        facts={DebPackages: {"nftables": {"1.0.6-2"}}, ConfigState: state},
        data={"roles": roles, **BASE, **data},
    )


def chain(text: str) -> list[str]:
    body = text.split("chain input {", 1)[1]
    return [line.strip() for line in body.splitlines() if line.strip() and line.strip() != "}"]


def set_elements(text: str, name: str) -> list[str]:
    match = re.search(r"set " + name + r" \{[^}]*?elements = \{ ([^}]*) \}", text)
    return match.group(1).split(", ") if match else []


def test_worker_rules() -> None:
    result = run(["workers"])
    text = result.uploads[STAGED]
    rules = chain(text)
    assert rules[0] == "type filter hook input priority filter; policy drop;"
    assert "ct state established,related accept" in rules
    assert 'iifname "lo" accept' in rules
    assert "meta l4proto 1 accept" in rules and "meta l4proto 58 accept" in rules
    assert 'tcp dport 22 ip saddr @admin_v4 accept comment "ssh from admin networks"' in rules
    assert any(r.startswith("tcp dport 10250 ip saddr @control_plane_v4 accept") for r in rules)
    assert any(r.startswith("tcp dport 9100 ip saddr @monitoring_v4 accept") for r in rules)
    assert any(r.startswith("tcp dport 30000-32767 ip saddr @nodeport_v4 accept") for r in rules)
    assert not any("6443" in r or "2379" in r for r in rules), "workers do not expose control-plane ports"
    assert set_elements(text, "admin_v4") == ["0.0.0.0/0"]  # default: nobody is locked out of SSH
    assert set_elements(text, "monitoring_v4") == ["10.0.5.5/32"]
    assert set_elements(text, "control_plane_v4") == ["10.0.0.10/32", "10.0.0.11/32"]


def test_control_plane_rules() -> None:
    rules = chain(run(["control_plane", "etcd"]).uploads[STAGED])
    assert any(r.startswith("tcp dport 6443 ip saddr @apiserver_v4 accept") for r in rules)
    assert any(r.startswith("tcp dport { 2379, 2380 } ip saddr @etcd_peers_v4 accept") for r in rules)
    assert any(r.startswith("tcp dport { 10257, 10259 } drop") for r in rules)
    # the local-only drop comes after loopback is accepted
    assert rules.index('iifname "lo" accept') < next(i for i, r in enumerate(rules) if "10257" in r)


def test_etcd_only_host_gets_etcd_not_apiserver() -> None:
    rules = chain(run(["etcd"]).uploads[STAGED])
    assert any("{ 2379, 2380 }" in r for r in rules)
    assert not any("6443" in r for r in rules)


def test_nodeports_switchable_and_no_forward_chain_and_own_table_only() -> None:
    text = run(["workers"], firewall_nodeports_enabled=False).uploads[STAGED]
    assert "30000-32767" not in text
    assert "chain forward" not in text and "hook forward" not in text
    assert "flush ruleset" not in text
    statements = [line for line in text.splitlines() if "table inet spectra" in line and not line.startswith("#")]
    # create-if-missing, delete, define: one nft -f transaction replaces only our table
    assert statements == ["table inet spectra", "delete table inet spectra", "table inet spectra {"]
    conf = run(["workers"]).uploads["/etc/.nftables.conf.spectra-new"]
    assert "flush ruleset" not in conf.replace('"flush ruleset"', "").split("include")[1]
    assert 'include "/etc/nftables.d/*.nft"' in conf


def test_validate_before_load_and_load_our_table_only() -> None:
    commands = run(["workers"], units=UNITS_OK).commands
    check = next(i for i, c in enumerate(commands) if c.startswith(f"( nft -c -f {STAGED} ) || {{ rm -f {STAGED}"))
    move = commands.index(f"mv -f {STAGED} {RULES}")
    load = commands.index(f"nft -f {RULES}")
    assert check < move < load
    assert "systemctl daemon-reload" in commands  # the nftables.service drop-in changed
    assert not any("flush" in c for c in commands)


def test_fresh_host_enables_and_starts_nftables() -> None:
    commands = run(["workers"], units={"nftables.service": None}).commands
    assert "systemctl enable nftables.service" in commands
    assert "systemctl start nftables.service" in commands
    assert commands.index("systemctl daemon-reload") < commands.index("systemctl start nftables.service")


def test_noop_when_everything_matches() -> None:
    first = run(["workers"])
    files = {}
    for path, staged, mode in (
        (RULES, STAGED, "640"),
        ("/etc/nftables.conf", "/etc/.nftables.conf.spectra-new", "755"),
        (
            "/etc/systemd/system/nftables.service.d/spectra.conf",
            "/etc/systemd/system/nftables.service.d/.spectra.conf.spectra-new",
            "644",
        ),
    ):
        files[path] = {
            "type": "file",
            "mode": mode,
            "user": "root",
            "group": "root",
            "sha256": hashlib.sha256(first.uploads[staged].encode()).hexdigest(),
        }
    result = run(["workers"], files=files)
    assert result.commands == []
    # packages and files/units in ONE remote command, at prepare time
    assert len(result.fact_reads) == 1
    assert result.facts_read == ["deb.DebPackages", "facts.config_state.ConfigState"]


def test_control_plane_addresses_from_inventory() -> None:
    data = {k: v for k, v in BASE.items() if k != "firewall_control_plane_cidrs"}
    result = run_deploy(
        firewall,
        facts={DebPackages: {"nftables": {"1"}}, ConfigState: {"files": {}, "units": UNITS_OK}},
        data={"roles": ["control_plane"], "ssh_hostname": "198.18.0.11", **data},
    )
    assert set_elements(result.uploads[STAGED], "control_plane_v4") == ["198.18.0.11/32"]


def test_missing_control_plane_addresses_refused() -> None:
    data = {k: v for k, v in BASE.items() if k != "firewall_control_plane_cidrs"}
    with pytest.raises(DeployError, match="firewall_control_plane_cidrs"):
        run_deploy(firewall, facts={}, data={"roles": ["workers"], "ssh_hostname": "198.18.0.12", **data})


def test_bad_cidr_and_interface_refused() -> None:
    with pytest.raises(DeployError, match="not an IP network"):
        run(["workers"], firewall_admin_cidrs=["10.0.0.0/33"])
    with pytest.raises(DeployError, match="interface"):
        run(["workers"], firewall_pod_interfaces=['eth0"; flush ruleset; "'])


def test_disabled() -> None:
    assert run(["workers"], firewall_enabled=False).ops == []


# EC2 in public-address mode (SPECTRA_EC2_ADDRESS=public): pyinfra connects to the public IP (ssh_hostname),
# while certificates, kubelet and etcd use the address inside the VPC (private_ip). Peers talk over the VPC.
PUBLIC_MODE = {
    "cp2": {"roles": ["control_plane", "etcd"], "ssh_hostname": "203.0.113.12", "private_ip": "10.0.1.12"},
    "cp3": {"roles": ["control_plane", "etcd"], "ssh_hostname": "203.0.113.13", "private_ip": "10.0.1.13"},
    "mon1": {"roles": ["monitoring"], "ssh_hostname": "203.0.113.20", "private_ip": "10.0.1.20"},
    "w1": {"roles": ["workers"], "ssh_hostname": "203.0.113.30", "private_ip": "10.0.1.30"},
}


def test_public_address_inventory_peer_sets_hold_the_private_addresses() -> None:
    result = run_deploy(
        firewall,
        facts={DebPackages: {"nftables": {"1.0.6-2"}}, ConfigState: {"files": {}, "units": UNITS_OK}},
        data={"roles": ["control_plane", "etcd"], "ssh_hostname": "203.0.113.11", "private_ip": "10.0.1.11"},
        others=PUBLIC_MODE,
    )
    text = result.uploads[STAGED]
    control_planes = ["10.0.1.11/32", "10.0.1.12/32", "10.0.1.13/32"]
    assert set_elements(text, "control_plane_v4") == control_planes  # apiserver -> kubelet:10250
    assert set_elements(text, "etcd_peers_v4") == control_planes  # etcd peers on 2380
    assert set_elements(text, "monitoring_v4") == ["10.0.1.20/32"]
    assert set_elements(text, "nodes_v4") == [*control_planes, "10.0.1.20/32", "10.0.1.30/32"]
    assert "203.0.113" not in text.split("chain input", 1)[0]
