"""The lab network: one bridge on the host, one network namespace and veth pair per node, NAT out."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path

from lab.config import LabConfig, LabError
from lab.shell import run, succeeds

NAT_COMMENT = "spectra-lab"


def nat_comment(config: LabConfig) -> str:
    # One comment per lab (bridge), so two labs side by side never remove each other's rules.
    return f"{NAT_COMMENT}:{config.bridge}"


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def netns_name(config: LabConfig, node: str) -> str:
    return f"{config.bridge}-{node}"


def host_veth(config: LabConfig, index: int) -> str:
    # Interface names are limited to 15 characters: the bridge name (at most 10) plus "v" and the index.
    return f"{config.bridge}v{index}"


def _links() -> list[dict]:
    return json.loads(run(["ip", "-j", "address", "show"]).stdout or "[]")


def link_exists(name: str) -> bool:
    return succeeds(["ip", "link", "show", "dev", name])


def check_bridge_free(config: LabConfig, lab_owns_bridge: bool) -> None:
    """Refuse to take over a bridge or an address that something else is using."""
    if link_exists(config.bridge) and not lab_owns_bridge:
        raise LabError(
            f"interface {config.bridge} already exists and was not made by this lab; "
            "remove it or choose another bridge name"
        )
    lab_net = config.network
    for link in _links():
        if link.get("ifname") == config.bridge and lab_owns_bridge:
            continue
        for addr in link.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            other = ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
            if other.overlaps(lab_net):
                raise LabError(
                    f"address {addr['local']}/{addr['prefixlen']} on {link['ifname']} overlaps the lab "
                    f"subnet {config.subnet}; choose another subnet inside 198.18.0.0/15"
                )


def _nat_rule(config: LabConfig) -> list[str]:
    return [
        "POSTROUTING", "-s", config.subnet, "!", "-o", config.bridge,
        "-j", "MASQUERADE", "-m", "comment", "--comment", nat_comment(config),
    ]  # fmt: skip


def _forward_rules(config: LabConfig) -> list[list[str]]:
    # Hosts with a FORWARD policy of DROP (Docker sets one) would otherwise block the nodes.
    return [
        ["FORWARD", "-i", config.bridge, "-j", "ACCEPT", "-m", "comment", "--comment", nat_comment(config)],
        ["FORWARD", "-o", config.bridge, "-j", "ACCEPT", "-m", "comment", "--comment", nat_comment(config)],
    ]


def bridge_up(config: LabConfig) -> dict:
    """Create the bridge, NAT and forwarding. Returns what was changed on the host, for `down`."""
    changed: dict = {}
    if not link_exists(config.bridge):
        run(["ip", "link", "add", config.bridge, "type", "bridge"])
        run(["ip", "address", "add", f"{config.gateway}/{config.network.prefixlen}", "dev", config.bridge])
    run(["ip", "link", "set", config.bridge, "up"])
    if IP_FORWARD.read_text().strip() != "1":
        changed["ip_forward_was"] = IP_FORWARD.read_text().strip()
        IP_FORWARD.write_text("1\n")
    if not succeeds(["iptables", "-t", "nat", "-C", *_nat_rule(config)]):
        run(["iptables", "-t", "nat", "-A", *_nat_rule(config)])
    for rule in _forward_rules(config):
        if not succeeds(["iptables", "-C", *rule]):
            run(["iptables", "-I", *rule])
    return changed


def bridge_down(config: LabConfig, ip_forward_was: str | None) -> None:
    while succeeds(["iptables", "-t", "nat", "-D", *_nat_rule(config)]):
        pass
    for rule in _forward_rules(config):
        while succeeds(["iptables", "-D", *rule]):
            pass
    if link_exists(config.bridge):
        run(["ip", "link", "delete", config.bridge])
    # Forwarding is the host's, shared by every lab on it: turned back off only when no other lab's NAT is left
    # (a second lab's `down` once cut the first one's nodes off the Debian mirror mid-run).
    if ip_forward_was is not None and not other_labs_up():
        IP_FORWARD.write_text(ip_forward_was + "\n")


def other_labs_up() -> bool:
    """Whether a NAT rule of any lab is still in place (``bridge_down`` has removed this lab's)."""
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    return f"{NAT_COMMENT}:" in rules


def node_network_up(config: LabConfig, node: str, index: int, address: str) -> None:
    ns = netns_name(config, node)
    if not Path(f"/run/netns/{ns}").exists():
        run(["ip", "netns", "add", ns])
    veth = host_veth(config, index)
    if not link_exists(veth):
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", config.bridge, "up"])
    in_ns = ["ip", "netns", "exec", ns]
    run([*in_ns, "ip", "link", "set", "lo", "up"])
    current = run([*in_ns, "ip", "-4", "-o", "address", "show", "dev", "eth0"]).stdout
    if f" {address}/" not in current:
        run([*in_ns, "ip", "address", "add", f"{address}/{config.network.prefixlen}", "dev", "eth0"])
    run([*in_ns, "ip", "link", "set", "eth0", "up"])
    run([*in_ns, "ip", "route", "replace", "default", "via", config.gateway])


def node_network_down(config: LabConfig, node: str, index: int) -> None:
    veth = host_veth(config, index)
    if link_exists(veth):
        run(["ip", "link", "delete", veth])
    ns = netns_name(config, node)
    if Path(f"/run/netns/{ns}").exists():
        # Nothing may outlive the lab inside its namespace (a node init orphaned by a crash, say).
        for pid in run(["ip", "netns", "pids", ns]).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "delete", ns])
