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
from facts.connection import DeploySource
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
# the deploy's session as the host sees it (facts.connection.DeploySource)
SOURCE = {"client": "198.18.0.1", "server": "198.18.0.11", "server_port": 22}
UNITS_OK = {
    "nftables.service": {
        "id": "nftables.service",
        "load": "loaded",
        "active": "active",
        "sub": "exited",
        "enabled": "enabled",
    }
}


def run(
    roles: list[str],
    files: dict[str, Any] | None = None,
    units: dict[str, Any] | None = None,
    source: dict[str, Any] | None = SOURCE,
    **data: Any,
):
    state = {"files": files or {}, "units": UNITS_OK if units is None else units}
    return run_component(
        COMPONENT,
        facts={DebPackages: {"nftables": {"1.0.6-2"}}, ConfigState: state, DeploySource: source},
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
    assert result.facts_read == ["deb.DebPackages", "facts.config_state.ConfigState", "facts.connection.DeploySource"]


def test_control_plane_addresses_from_inventory() -> None:
    data = {k: v for k, v in BASE.items() if k != "firewall_control_plane_cidrs"}
    result = run_deploy(
        firewall,
        facts={DebPackages: {"nftables": {"1"}}, ConfigState: {"files": {}, "units": UNITS_OK}, DeploySource: SOURCE},
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
        facts={
            DebPackages: {"nftables": {"1.0.6-2"}},
            ConfigState: {"files": {}, "units": UNITS_OK},
            DeploySource: SOURCE,
        },
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


# --- lockout guard, rollback, SSH throttle (issue 13) -------------------------------------------------------

ARM = [
    'sh -c \'mkdir -p "$(dirname "$3")" && { printf "table inet %s\\ndelete table inet %s\\n" "$1" "$1"; '
    'nft -s list table inet "$1" 2>/dev/null || true; } > "$3".new && mv -f "$3".new "$3"\' '
    "spectra-firewall-save spectra /etc/nftables.d/spectra.nft /run/spectra-firewall/rollback.nft",
    "systemctl stop spectra-firewall-rollback.timer spectra-firewall-rollback.service 2>/dev/null || true",
    "systemctl reset-failed spectra-firewall-rollback.service 2>/dev/null || true",
    "systemd-run --quiet --unit=spectra-firewall-rollback --on-active=60s --timer-property=AccuracySec=1s "
    'sh -c \'nft -f "$1" && cp "$1" "$2"\' spectra-firewall-rollback /run/spectra-firewall/rollback.nft '
    "/etc/nftables.d/spectra.nft",
]
CHECK_AND_DISARM = [
    "function new_connection",
    "systemctl stop spectra-firewall-rollback.timer 2>/dev/null || true",
    "rm -f /run/spectra-firewall/rollback.nft",
]


def converged_files(result: Any, changed: tuple[str, ...] = ()) -> dict[str, Any]:
    """ConfigState files matching ``result``'s uploads, except the paths in ``changed``."""
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
        digest = hashlib.sha256(result.uploads[staged].encode()).hexdigest()
        files[path] = {
            "type": "file",
            "mode": mode,
            "user": "root",
            "group": "root",
            "sha256": "0" * 64 if path in changed else digest,
        }
    return files


def test_changed_table_loads_with_rollback_armed_then_reconnects_and_disarms() -> None:
    wanted = run(["workers"])
    result = run(["workers"], files=converged_files(wanted, changed=(RULES,)))
    digest = hashlib.sha256(result.uploads[STAGED].encode()).hexdigest()
    assert result.commands == [
        f"upload {STAGED} sha256={digest}",
        f"chown root:root {STAGED} && chmod 640 {STAGED}",
        f"( nft -c -f {STAGED} ) || {{ rm -f {STAGED} ; echo 'validation failed, {RULES} left unchanged' >&2 ; "
        "exit 1 ; }",
        f"mv -f {STAGED} {RULES}",
        "systemctl daemon-reload",
        *ARM,
        f"nft -f {RULES}",
        *CHECK_AND_DISARM,
    ]


def test_fresh_host_arms_the_rollback_before_nftables_starts() -> None:
    commands = run(["workers"], units={"nftables.service": None}).commands
    start = commands.index("systemctl start nftables.service")
    assert commands[start - len(ARM) : start] == ARM
    assert commands[start + 1 :] == CHECK_AND_DISARM
    assert f"nft -f {RULES}" not in commands  # the start loads the table


def test_bounds_reach_the_timer_and_the_check() -> None:
    result = run(["workers"], firewall_rollback_seconds=30, firewall_reconnect_seconds=10)
    assert any(
        c.startswith("systemd-run --quiet --unit=spectra-firewall-rollback --on-active=30s ") for c in result.commands
    )
    guarded = next(op for op in result.ops if "function new_connection" in op.commands)
    assert guarded.commands.index("function new_connection") > guarded.commands.index(f"nft -f {RULES}")


def test_only_units_to_enable_loads_nothing_and_arms_nothing() -> None:
    wanted = run(["workers"])
    units = {"nftables.service": {**UNITS_OK["nftables.service"], "enabled": "disabled"}}
    result = run(["workers"], files=converged_files(wanted), units=units)
    assert result.commands == ["systemctl enable nftables.service"]


def test_lockout_refused_before_any_operation_naming_setting_and_address() -> None:
    with pytest.raises(DeployError) as raised:
        run(["workers"], firewall_admin_cidrs=["203.0.113.0/24"])
    message = str(raised.value)
    assert "refused before any change" in message
    assert "firewall_admin_cidrs=['203.0.113.0/24']" in message
    assert "the deploy connects from 198.18.0.1" in message


@pytest.mark.parametrize(
    ("cidrs", "source", "data"),
    [
        (["198.18.0.0/24"], SOURCE, {}),  # the controller's network
        (["198.18.0.1"], SOURCE, {}),  # the controller itself
        (["10.9.0.0/16"], {**SOURCE, "client": "10.9.1.1"}, {}),  # through a bastion: the bastion's address
        (["2001:db8::/32"], {**SOURCE, "client": "2001:db8::5"}, {}),
        (["203.0.113.0/24"], SOURCE, {"firewall_allow_lockout": True}),  # another way in, said explicitly
        (["203.0.113.0/24"], SOURCE, {"firewall_policy": "accept"}),  # nothing dropped
        (["0.0.0.0/0", "::/0"], None, {}),  # source unknown, SSH open to all
    ],
)
def test_lockout_guard_allows(cidrs: list[str], source: Any, data: dict[str, Any]) -> None:
    result = run(["workers"], source=source, firewall_admin_cidrs=cidrs, **data)
    assert "function new_connection" in result.commands


@pytest.mark.parametrize(
    ("cidrs", "source", "match"),
    [
        (["198.18.1.0/24"], SOURCE, "connects from 198.18.0.1"),
        (["::/0"], SOURCE, "connects from 198.18.0.1"),  # v6 open to all, the deploy comes over v4
        (["10.9.0.0/16"], {**SOURCE, "client": "192.0.2.7"}, "connects from 192.0.2.7"),  # the bastion is outside
        (["10.0.0.0/8"], None, "cannot be read"),
        (["0.0.0.0/0"], None, "cannot be read"),  # could be an IPv6 session
    ],
)
def test_lockout_guard_refuses(cidrs: list[str], source: Any, match: str) -> None:
    with pytest.raises(DeployError, match=match):
        run(["workers"], source=source, firewall_admin_cidrs=cidrs)


def test_deploy_source_fact_parses_ssh_connection() -> None:
    fact = DeploySource()
    assert fact.process(["198.18.0.1 50514 198.18.0.11 22"]) == SOURCE
    assert fact.process(["::ffff:198.18.0.1 50514 198.18.0.11 22"]) == SOURCE
    assert fact.process(["2001:db8::5 4242 2001:db8::11 2222"]) == {
        "client": "2001:db8::5",
        "server": "2001:db8::11",
        "server_port": 2222,
    }
    assert fact.process([""]) is None
    assert fact.process(["not an ssh connection"]) is None
    assert "SSH_CONNECTION" in fact.command() and "/proc/$p/environ" in fact.command()


def test_ssh_throttle_comes_before_the_ssh_accept_and_after_established() -> None:
    text = run(["workers"]).uploads[STAGED]
    rules = chain(text)
    throttle_v4 = (
        "tcp dport 22 ct state new update @ssh_throttle_v4 { ip saddr limit rate over 300/minute burst 50 packets } "
        'drop comment "ssh: new connections per source throttled"'
    )
    throttle_v6 = throttle_v4.replace("_v4 { ip saddr", "_v6 { ip6 saddr")
    accept = 'tcp dport 22 ip saddr @admin_v4 accept comment "ssh from admin networks"'
    assert rules.index("ct state established,related accept") < rules.index(throttle_v4)
    assert rules.index(throttle_v4) + 1 == rules.index(throttle_v6) < rules.index(accept)
    meter = text.split("set ssh_throttle_v4 {", 1)[1].split("}", 1)[0].split()
    assert meter == ["type", "ipv4_addr", "size", "65535", "flags", "dynamic,timeout", "timeout", "1m"]
    assert "set ssh_throttle_v6 {" in text


def test_ssh_throttle_follows_its_settings_and_switch() -> None:
    rules = chain(
        run(["workers"], ssh_port=2222, firewall_ssh_rate_per_minute=60, firewall_ssh_burst=30).uploads[STAGED]
    )
    assert any(
        r.startswith(
            "tcp dport 2222 ct state new update @ssh_throttle_v4 { ip saddr limit rate over 60/minute burst 30 "
        )
        for r in rules
    )
    text = run(["workers"], firewall_ssh_throttle_enabled=False).uploads[STAGED]
    assert "ssh_throttle" not in text


def test_early_rules_come_before_the_ssh_rule() -> None:
    deny = "ip saddr 192.0.2.0/24 drop"
    rules = chain(run(["workers"], firewall_early_rules=[deny]).uploads[STAGED])
    assert rules.index('iifname "lxc*" accept comment "pod network interface"') < rules.index(deny)
    assert rules.index(deny) < next(i for i, r in enumerate(rules) if "ssh_throttle_v4" in r)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"firewall_ssh_rate_per_minute": 10}, "firewall_ssh_rate_per_minute=10: an integer from 30 to 6000"),
        ({"firewall_ssh_rate_per_minute": "300"}, "firewall_ssh_rate_per_minute='300'"),
        ({"firewall_ssh_burst": 5}, "firewall_ssh_burst=5: an integer from 20 to 1000"),
        ({"firewall_rollback_seconds": 2}, "firewall_rollback_seconds=2: whole seconds"),
        ({"firewall_reconnect_seconds": 58}, "firewall_reconnect_seconds=58: must end at least 5 s before"),
        ({"firewall_early_rules": ["ip saddr 1.2.3.4 drop\nflush ruleset"]}, "firewall_early_rules: one rule"),
    ],
)
def test_throttle_and_rollback_settings_checked(data: dict[str, Any], match: str) -> None:
    with pytest.raises(DeployError, match=re.escape(match)):
        run(["workers"], **data)


class FakeClient:
    """Stands in for pyinfra's SSHClient in :func:`new_connection`: refuses ``refusals`` connects, then lets in."""

    refusals = 0
    connects: list[tuple[str, dict[str, Any]]] = []

    def connect(self, hostname: str, **kwargs: Any) -> None:
        FakeClient.connects.append((hostname, kwargs))
        if len(FakeClient.connects) <= FakeClient.refusals:
            raise TimeoutError("timed out")

    def exec_command(self, command: str, timeout: float) -> tuple[None, Any, None]:
        class Channel:
            @staticmethod
            def recv_exit_status() -> int:
                return 0

        return None, type("Out", (), {"channel": Channel})(), None

    def close(self) -> None:
        pass


class FakeConnector:
    def make_paramiko_kwargs(self) -> dict[str, Any]:
        return {"hostname": "198.18.0.13", "port": 22, "username": "root", "_pyinfra_ssh_config_file": "cfg"}


@pytest.mark.parametrize("refusals", [0, 1])
def test_new_connection_uses_the_hosts_connection_data(monkeypatch: pytest.MonkeyPatch, refusals: int) -> None:
    from pyinfra.connectors import sshuserclient

    from deploys.operations.firewall_rollback import new_connection

    monkeypatch.setattr(sshuserclient, "SSHClient", FakeClient)
    monkeypatch.setattr(FakeClient, "refusals", refusals)
    monkeypatch.setattr(FakeClient, "connects", [])
    fake_host = type("Host", (), {"name": "node3", "connector": FakeConnector()})()
    new_connection(None, fake_host, seconds=5)
    assert len(FakeClient.connects) == refusals + 1
    hostname, kwargs = FakeClient.connects[-1]
    assert (hostname, kwargs["port"], kwargs["username"], kwargs["_pyinfra_ssh_config_file"]) == (
        "198.18.0.13",
        22,
        "root",
        "cfg",
    )
    assert 1.0 <= kwargs["timeout"] <= 5.0


def test_new_connection_fails_clearly_when_nothing_gets_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyinfra.connectors import sshuserclient

    from deploys.operations import firewall_rollback

    monkeypatch.setattr(sshuserclient, "SSHClient", FakeClient)
    monkeypatch.setattr(FakeClient, "refusals", 1000)
    monkeypatch.setattr(FakeClient, "connects", [])
    monkeypatch.setattr("time.sleep", lambda _: None)
    clock = iter(range(0, 1000, 2))
    monkeypatch.setattr("time.monotonic", lambda: next(clock))
    fake_host = type("Host", (), {"name": "node3", "connector": FakeConnector()})()
    with pytest.raises(DeployError, match=r"node3: the new firewall refuses new SSH connections .*TimeoutError"):
        firewall_rollback.new_connection(None, fake_host, seconds=5)
    assert 2 <= len(FakeClient.connects) <= 4
