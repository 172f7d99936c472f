"""Host state of a converged node, checked with testinfra on the host itself.

    pytest compliance/node --hosts=ssh://node1,ssh://node2 --ssh-config=$SPECTRA_LAB_DIR/ssh/config

Checks what deploys/node.py promises with its default settings: services, listening sockets, files and
modes, kernel settings, swap, sshd's effective configuration, the firewall and the container runtime.
Ports come from their owners (compliance.node.expected): the inventory's, when ``$SPECTRA_COMPLY_CONTEXT``
names the host, else the owners' defaults and the node exporter's own unit.
"""

from __future__ import annotations

import re

import pytest

from compliance.node.expected import Expectations
from compliance.probe import Probe

SERVICES = ["ssh", "chrony", "nftables", "containerd", "node_exporter"]

FILE_MODES = {
    "/etc/containerd/config.toml": (0o600, "root", "root"),
    "/etc/ssh/sshd_config.d/00-spectra-hardening.conf": (0o600, "root", "root"),
    "/etc/ssh/sshd_config": (0o600, "root", "root"),
    "/etc/shadow": (0o640, "root", "shadow"),
    "/etc/passwd": (0o644, "root", "root"),
    "/usr/local/bin/node_exporter": (0o755, "root", "root"),
    "/etc/systemd/system/node_exporter.service": (0o644, "root", "root"),
    "/etc/sysctl.d/90-kubernetes.conf": (0o644, "root", "root"),
    "/etc/sysctl.d/60-spectra-hardening.conf": (0o644, "root", "root"),
}

SYSCTLS = {
    "net.ipv4.ip_forward": 1,  # Kubernetes forwards pod traffic: hardening must not turn it off
    "net.bridge.bridge-nf-call-iptables": 1,
    "net.bridge.bridge-nf-call-ip6tables": 1,
    "net.ipv4.conf.all.accept_redirects": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.all.accept_source_route": 0,
    "net.ipv4.tcp_syncookies": 1,
}


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_active_and_enabled(host, name: str) -> None:
    service = host.service(name)
    assert service.is_running, f"{name} is not active"
    assert service.is_enabled, f"{name} is not enabled"


def test_only_expected_programs_listen_beyond_loopback(probe: Probe, expected: Expectations) -> None:
    # Each expected port may be held only by its program; the firewall still narrows who reaches them
    # (the exporter's port to monitoring addresses, kubelet's to control planes, etcd's to its peers).
    owners = expected.listeners
    exposed = [
        str(item)
        for item in probe.listeners()
        if not item.loopback and not (item.protocol == "tcp" and item.held_by(owners.get(item.port, "")))
    ]
    assert exposed == [], f"unexpected listening sockets: {exposed}"


@pytest.mark.parametrize("path", sorted(FILE_MODES))
def test_file_mode_and_owner(host, path: str) -> None:
    mode, user, group = FILE_MODES[path]
    target = host.file(path)
    assert target.exists, f"{path} is missing"
    assert (target.mode, target.user, target.group) == (mode, user, group)


@pytest.mark.parametrize("key", sorted(SYSCTLS))
def test_kernel_setting(host, key: str) -> None:
    assert host.sysctl(key) == SYSCTLS[key]


def test_swap_is_off_now_and_after_reboot(host) -> None:
    assert host.file("/proc/swaps").content_string.strip().splitlines()[1:] == []
    for line in host.file("/etc/fstab").content_string.splitlines():
        fields = line.split()
        assert not (fields and not fields[0].startswith("#") and len(fields) > 2 and fields[2] == "swap"), line


def test_sshd_effective_configuration_is_hardened(probe: Probe) -> None:
    effective = probe.sshd()
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["permitrootlogin"] in ("without-password", "prohibit-password", "no")
    assert effective["x11forwarding"] == "no"
    assert "cbc" not in effective["ciphers"]
    assert not any(mac.startswith("hmac-sha1") or "md5" in mac for mac in effective["macs"].split(","))
    assert effective["compression"] == "no"
    assert effective["hostkey"] == "/etc/ssh/ssh_host_ed25519_key"  # the one host key (no ECDSA, no RSA)


def test_firewall_drops_by_default_and_keeps_ssh_open(host, expected: Expectations) -> None:
    ruleset = host.check_output(f"nft list table inet {expected.firewall_table}")
    assert "policy drop" in ruleset
    assert re.search(rf"tcp dport {expected.ssh_port}\b", ruleset)
    if expected.exporter_port is not None:
        assert re.search(rf"tcp dport {expected.exporter_port}\b", ruleset)


def test_node_exporter_runs_sandboxed_as_its_own_user(host) -> None:
    show = host.check_output("systemctl show node_exporter -p User,ProtectSystem,NoNewPrivileges,ProtectHome")
    settings = dict(line.split("=", 1) for line in show.splitlines())
    assert (settings["User"], settings["ProtectSystem"], settings["NoNewPrivileges"]) == (
        "node_exporter",
        "strict",
        "yes",
    )
    assert settings["ProtectHome"] in ("yes", "read-only")
    assert host.user("node_exporter").shell in ("/usr/sbin/nologin", "/bin/false")
    assert host.file("/var/lib/node_exporter/textfile_collector").is_directory


def test_containerd_cgroup_driver_matches_the_hosts_cgroup_version(host) -> None:
    unified = host.check_output("stat -fc %T /sys/fs/cgroup") == "cgroup2fs"
    config = host.file("/etc/containerd/config.toml").content_string
    assert f"SystemdCgroup = {'true' if unified else 'false'}" in config


def test_time_is_synchronised_by_chrony(host) -> None:
    assert host.package("chrony").is_installed
    assert host.run("chronyc -n tracking").rc == 0
