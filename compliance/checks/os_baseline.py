"""OS baseline: network sysctls compatible with Kubernetes, swap, account and SSH config files, legacy
services, audit rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from compliance.model import Check, Outcome, check, failed, not_applicable, passed
from compliance.modes import FileExpectation
from compliance.probe import Probe

SECTION = "os"
SECTION_TITLE = "OS baseline"

_SYSCTL_FIX = "converge sysctl_hardening (deploys/components/hardening_sysctl.py), or `sysctl --system`"
_PERM_FIX = "converge file_permissions (deploys/components/file_permissions.py)"


# --- network sysctls -------------------------------------------------------------------------------


def evaluate_sysctls(values: Mapping[str, str | None], expected: Mapping[str, tuple[str, ...]]) -> Outcome:
    """Each key must have one of its allowed values; a key the kernel lacks fails."""
    problems = []
    for key, allowed in expected.items():
        value = values.get(key)
        if value is None:
            problems.append(f"{key} is not present in this kernel")
        elif value not in allowed:
            problems.append(f"{key} = {value} (want {' or '.join(allowed)})")
    if problems:
        return failed("; ".join(problems))
    return passed(", ".join(f"{key} = {values[key]}" for key in expected))


@dataclass(frozen=True, eq=False)
class Sysctls:
    """key -> allowed values."""

    expected: Mapping[str, tuple[str, ...]]

    def __call__(self, probe: Probe) -> Outcome:
        return evaluate_sysctls(probe.sysctls(SYSCTL_KEYS), self.expected)


NETWORK_SYSCTLS: tuple[Check, ...] = (
    Check(
        id="SPX-OS-001",
        section=SECTION,
        title="IPv4 forwarding is on (net.ipv4.ip_forward = 1)",
        rationale="Kubernetes routes pod traffic through the node; hardening must not turn forwarding off",
        fix="converge os_prerequisites (kubernetes_sysctls in /etc/sysctl.d/90-kubernetes.conf)",
        evaluate=Sysctls({"net.ipv4.ip_forward": ("1",)}),
    ),
    Check(
        id="SPX-OS-002",
        section=SECTION,
        title="Bridged traffic goes through iptables (net.bridge.bridge-nf-call-iptables/ip6tables = 1)",
        rationale="kube-proxy and network policies only see bridged pod traffic with br_netfilter hooks on",
        fix="converge os_prerequisites (br_netfilter and kubernetes_sysctls)",
        evaluate=Sysctls({"net.bridge.bridge-nf-call-iptables": ("1",), "net.bridge.bridge-nf-call-ip6tables": ("1",)}),
    ),
    Check(
        id="SPX-OS-003",
        section=SECTION,
        title="ICMP redirects are not accepted (accept_redirects, secure_redirects = 0, IPv4 and IPv6)",
        rationale="redirects let a neighbour rewrite the node's routes",
        fix=_SYSCTL_FIX,
        evaluate=Sysctls(
            {
                "net.ipv4.conf.all.accept_redirects": ("0",),
                "net.ipv4.conf.default.accept_redirects": ("0",),
                "net.ipv4.conf.all.secure_redirects": ("0",),
                "net.ipv4.conf.default.secure_redirects": ("0",),
                "net.ipv6.conf.all.accept_redirects": ("0",),
                "net.ipv6.conf.default.accept_redirects": ("0",),
            }
        ),
    ),
    Check(
        id="SPX-OS-004",
        section=SECTION,
        title="ICMP redirects are not sent (net.ipv4.conf.{all,default}.send_redirects = 0)",
        rationale="a node is not a router for its LAN; sent redirects leak topology",
        fix=_SYSCTL_FIX,
        evaluate=Sysctls({"net.ipv4.conf.all.send_redirects": ("0",), "net.ipv4.conf.default.send_redirects": ("0",)}),
    ),
    Check(
        id="SPX-OS-005",
        section=SECTION,
        title="Source-routed packets are refused (accept_source_route = 0, IPv4 and IPv6)",
        rationale="source routing lets a sender choose the path and bypass filtering",
        fix=_SYSCTL_FIX,
        evaluate=Sysctls(
            {
                "net.ipv4.conf.all.accept_source_route": ("0",),
                "net.ipv4.conf.default.accept_source_route": ("0",),
                "net.ipv6.conf.all.accept_source_route": ("0",),
                "net.ipv6.conf.default.accept_source_route": ("0",),
            }
        ),
    ),
    Check(
        id="SPX-OS-006",
        section=SECTION,
        title="Reverse path filtering is on (net.ipv4.conf.all.rp_filter = 1 or 2)",
        rationale="drops spoofed source addresses; loose mode (2) stays compatible with CNI routing",
        fix=_SYSCTL_FIX,
        evaluate=Sysctls({"net.ipv4.conf.all.rp_filter": ("1", "2")}),
    ),
    Check(
        id="SPX-OS-007",
        section=SECTION,
        title="TCP SYN cookies are on (net.ipv4.tcp_syncookies = 1)",
        rationale="keeps the node reachable under a SYN flood",
        fix=_SYSCTL_FIX,
        evaluate=Sysctls({"net.ipv4.tcp_syncookies": ("1",)}),
    ),
    Check(
        id="SPX-OS-008",
        section=SECTION,
        title="Broadcast pings and bogus ICMP errors are ignored",
        rationale="icmp_echo_ignore_broadcasts = 1 and icmp_ignore_bogus_error_responses = 1 stop smurf/log floods",
        fix=_SYSCTL_FIX,
        evaluate=Sysctls(
            {"net.ipv4.icmp_echo_ignore_broadcasts": ("1",), "net.ipv4.icmp_ignore_bogus_error_responses": ("1",)}
        ),
    ),
    Check(
        id="SPX-OS-009",
        section=SECTION,
        title="Martian packets are logged (net.ipv4.conf.all.log_martians = 1)",
        rationale="impossible source addresses are a sign of spoofing or misrouting worth seeing",
        fix=_SYSCTL_FIX,
        evaluate=Sysctls({"net.ipv4.conf.all.log_martians": ("1",)}),
    ),
)

# Every network check reads all of them: one read per host.
SYSCTL_KEYS: tuple[str, ...] = tuple(
    sorted({key for item in NETWORK_SYSCTLS if isinstance(item.evaluate, Sysctls) for key in item.evaluate.expected})
)


# --- swap --------------------------------------------------------------------------------------------


@check(
    id="SPX-OS-010",
    section=SECTION,
    title="Swap is off now and in /etc/fstab",
    rationale="kubelet expects no swap by default; memory limits are meaningless with it",
    fix="converge os_prerequisites (swapoff -a, swap lines commented out in /etc/fstab)",
)
def swap_off(probe: Probe) -> Outcome:
    swap = probe.swap()
    problems = []
    if swap["active"]:
        problems.append(f"swap is active: {swap['active'][0]}")
    if swap["fstab"]:
        problems.append(f"/etc/fstab mounts swap: {swap['fstab'][0]}")
    return failed("; ".join(problems)) if problems else passed("no active swap, none in /etc/fstab")


# --- account and SSH configuration files -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AccountFile:
    """A file every host has: missing fails."""

    path: str
    expect: FileExpectation

    def __call__(self, probe: Probe) -> Outcome:
        state = probe.files(ACCOUNT_FILES).get(self.path)
        if state is None:
            return failed(f"{self.path} is missing")
        return self.expect.evaluate({self.path: state})


ACCOUNT_FILE_CHECKS: tuple[Check, ...] = (
    Check(
        id="SPX-OS-020",
        section=SECTION,
        title="/etc/passwd is 0644 or stricter, root:root",
        rationale="world-writable or foreign-owned account database means account takeover",
        fix=_PERM_FIX,
        evaluate=AccountFile("/etc/passwd", FileExpectation(0o644, "root", ("root",))),
    ),
    Check(
        id="SPX-OS-021",
        section=SECTION,
        title="/etc/shadow is 0640 or stricter, root:shadow",
        rationale="password hashes must not be readable by ordinary users",
        fix=_PERM_FIX,
        evaluate=AccountFile("/etc/shadow", FileExpectation(0o640, "root", ("shadow", "root"))),
    ),
    Check(
        id="SPX-OS-022",
        section=SECTION,
        title="/etc/group is 0644 or stricter, root:root",
        rationale="group membership decides privileges (sudo, docker...)",
        fix=_PERM_FIX,
        evaluate=AccountFile("/etc/group", FileExpectation(0o644, "root", ("root",))),
    ),
    Check(
        id="SPX-OS-023",
        section=SECTION,
        title="/etc/gshadow is 0640 or stricter, root:shadow",
        rationale="group password hashes must not be readable by ordinary users",
        fix=_PERM_FIX,
        evaluate=AccountFile("/etc/gshadow", FileExpectation(0o640, "root", ("shadow", "root"))),
    ),
    Check(
        id="SPX-OS-024",
        section=SECTION,
        title="/etc/ssh/sshd_config is 0600 or stricter, root:root",
        rationale="the SSH server's configuration decides who may log in",
        fix=_PERM_FIX,
        evaluate=AccountFile("/etc/ssh/sshd_config", FileExpectation(0o600, "root", ("root",))),
    ),
)

# Read together: one stat per host.
ACCOUNT_FILES: tuple[str, ...] = tuple(
    item.evaluate.path for item in ACCOUNT_FILE_CHECKS if isinstance(item.evaluate, AccountFile)
)


# --- legacy services ---------------------------------------------------------------------------------

LEGACY_PACKAGES = (
    "telnetd", "inetutils-telnetd", "telnetd-ssl", "rsh-server", "rsh-redone-server", "tftpd", "tftpd-hpa",
    "atftpd", "xinetd", "openbsd-inetd", "inetutils-inetd", "rlinetd", "avahi-daemon", "nis", "talkd",
    "inetutils-talkd", "rpcbind",
)  # fmt: skip
# The protocols' well-known ports: what the check is about, not ports any component of ours owns.
LEGACY_TCP_PORTS = {23: "telnet", 111: "rpcbind", 512: "rexec", 513: "rlogin", 514: "rsh"}
LEGACY_UDP_PORTS = {69: "tftp", 111: "rpcbind", 517: "talk", 518: "ntalk", 5353: "mdns (avahi)"}


@check(
    id="SPX-OS-030",
    section=SECTION,
    title="No legacy network service packages (telnet, rsh, tftp, inetd, xinetd, avahi, NIS, talk, rpcbind)",
    rationale="cleartext or unauthenticated protocols with a long history of remote exploits",
    fix="apt-get purge the package named in the failure",
)
def no_legacy_packages(probe: Probe) -> Outcome:
    found = [name for name in LEGACY_PACKAGES if probe.installed(name)]
    if found:
        return failed(f"installed: {', '.join(found)}")
    return passed(f"none of {len(LEGACY_PACKAGES)} legacy service packages installed")


@check(
    id="SPX-OS-031",
    section=SECTION,
    title="No legacy service ports listening (23, 69/udp, 111, 512-514, 517-518/udp, 5353/udp)",
    rationale="a listener on these ports is a legacy service whatever its package is called",
    fix="stop and disable the unit holding the port (`ss -tulnp` names it), then remove it",
)
def no_legacy_ports(probe: Probe) -> Outcome:
    found = []
    for item in probe.listeners():
        service = (LEGACY_TCP_PORTS if item.protocol == "tcp" else LEGACY_UDP_PORTS).get(item.port)
        if service is not None:
            found.append(f"{item} [{service}]")
    return failed(f"listening: {', '.join(found)}") if found else passed("no legacy service port is listening")


# --- audit -------------------------------------------------------------------------------------------


@check(
    id="SPX-OS-040",
    section=SECTION,
    title="The audit rules file of the deploy is present, root-owned, not writable by others",
    rationale="the Kubernetes, runtime and identity watches must be on disk for auditd to load at boot",
    fix="converge audit_rules (deploys/components/audit.py)",
)
def audit_rules_file(probe: Probe) -> Outcome:
    path = str(probe.context.setting("audit_rules_path"))
    content = probe.content(path)
    state = probe.files([path]).get(path)
    if state is None:
        return failed(f"{path} is missing")
    problems = FileExpectation(0o644, "root", ("root",)).problems(path, state)
    watches = [line for line in (content or "").splitlines() if line.startswith("-w ")]
    if not watches:
        problems.append(f"{path} has no watch (-w) rules")
    if problems:
        return failed("; ".join(problems))
    return passed(f"{path} {int(state['mode'], 8):04o} root, {len(watches)} watches")


@check(
    id="SPX-OS-041",
    section=SECTION,
    title="auditd runs and the deploy's audit rules are loaded in the kernel",
    rationale="rules on disk record nothing until they are loaded",
    fix="converge audit_rules on a VM or bare-metal host (installs auditd, augenrules --load)",
)
def audit_rules_loaded(probe: Probe) -> Outcome:
    container = probe.container()
    if container:
        return not_applicable(
            f"the node is a {container} container (systemd-detect-virt -c): the kernel audit subsystem is the "
            "host's and is not namespaced, so rules cannot be loaded here; the rules file is checked by SPX-OS-040"
        )
    path = str(probe.context.setting("audit_rules_path"))
    unit = probe.units(["auditd.service"])["auditd.service"]
    problems = []
    if unit is None or unit["active"] != "active":
        problems.append(f"auditd is {unit['active'] if unit else 'not installed'}")
    # No fact reads audit rules: their keys (-k NAME) are matched against `auditctl -l` here.
    keys = set(re.findall(r"-k\s+(\S+)", probe.content(path) or ""))
    loaded = probe.run("auditctl -l 2>&1")
    if loaded.rc != 0:
        problems.append(f"auditctl -l failed: {loaded.stdout.strip()[:200]}")
    else:
        missing = sorted(key for key in keys if f"-k {key}" not in loaded.stdout and f"key={key}" not in loaded.stdout)
        if missing:
            problems.append(f"rules with keys {', '.join(missing)} from {path} are not loaded")
        if not keys:
            problems.append(f"no keyed rules in {path}")
    return failed("; ".join(problems)) if problems else passed(f"auditd active, keys {', '.join(sorted(keys))} loaded")


CHECKS: tuple[Check, ...] = (
    *NETWORK_SYSCTLS,
    swap_off,
    *ACCOUNT_FILE_CHECKS,
    no_legacy_packages,
    no_legacy_ports,
    audit_rules_file,
    audit_rules_loaded,
)
