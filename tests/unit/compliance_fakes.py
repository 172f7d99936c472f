"""A fake host for compliance probes, answering at the level of facts (as the component tests' fact sets do),
and a converged control-plane node on which every check passes."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyinfra.facts.deb import DebPackages

from compliance.context import HostContext
from compliance.probe import PathsBelow, PathsMatching, Probe
from facts.files import FileState, FileStates
from facts.security import AuditSupport
from facts.swap import Swap, SwapState
from facts.sysctl import SysctlValues
from facts.systemd import SystemdUnits, UnitState, unit_name


def file(
    mode: str = "600", user: str = "root", group: str = "root", type: str = "file", content: str = ""
) -> FileState:
    return FileState(type=type, mode=mode, user=user, group=group, size=len(content), sha256=None, content=content)


def directory(mode: str = "755", user: str = "root", group: str = "root") -> FileState:
    return file(mode, user, group, type="directory")


def unit(active: str = "active", enabled: str = "enabled") -> UnitState:
    return UnitState(
        id="", load="loaded", active=active, sub="running" if active == "active" else "dead", enabled=enabled
    )


@dataclass
class Result:
    stdout: str = ""
    rc: int = 0
    stderr: str = ""


@dataclass
class FakeNode:
    """A host's state; ``commands`` answers plain commands by prefix (empty output otherwise)."""

    files: dict[str, FileState] = field(default_factory=dict)
    units: dict[str, UnitState] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)
    swap: SwapState = field(default_factory=lambda: SwapState(active=[], fstab=[]))
    container: str | None = None
    commands: dict[str, Result] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)  # one entry per remote command: a command, or the facts read

    def run(self, command: str) -> Result:
        self.calls.append(command)
        for prefix, result in self.commands.items():
            if command.startswith(prefix):
                return result
        return Result()

    def facts(self, parts: Sequence[tuple[type, Mapping[str, Any]]]) -> list[Any]:
        self.calls.append("+".join(cls.__name__ for cls, _ in parts))
        return [self._fact(cls, dict(kwargs)) for cls, kwargs in parts]

    def _fact(self, cls: type, kwargs: dict[str, Any]) -> Any:
        if cls is SystemdUnits:
            return {unit_name(name): self.units.get(unit_name(name)) for name in kwargs["units"]}
        if cls is SysctlValues:
            return {key: self.sysctls.get(key) for key in kwargs["keys"]}
        if cls is FileStates:
            return {path: self._file(path, path in kwargs.get("contents", ())) for path in kwargs["paths"]}
        if cls is PathsMatching:
            return {
                pattern: [path for path in self.files if fnmatch.fnmatchcase(path, pattern)]
                for pattern in kwargs["patterns"]
            }
        if cls is PathsBelow:
            top = kwargs["directory"]
            return [path for path in self.files if path == top or path.startswith(top + "/")]
        if cls is DebPackages:
            return {name: {"1.0"} for name in self.packages}
        if cls is Swap:
            return self.swap
        if cls is AuditSupport:
            return {**AuditSupport.default(), "container": self.container}
        raise AssertionError(f"the fake node has no answer for {cls.__name__}")

    def _file(self, path: str, with_content: bool) -> FileState | None:
        state = self.files.get(path)
        if state is None:
            return None
        answer = FileState(**{key: value for key, value in state.items() if key != "content"})  # type: ignore[typeddict-item]
        if with_content and state["type"] == "file":
            answer["content"] = state.get("content") or ""
        return answer


SSHD_T = """\
port 22
kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,diffie-hellman-group16-sha512
ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-ctr
macs hmac-sha2-512-etm@openssh.com,umac-128-etm@openssh.com
passwordauthentication no
kbdinteractiveauthentication no
permitrootlogin without-password
permitemptypasswords no
maxauthtries 3
x11forwarding no
hostbasedauthentication no
ignorerhosts yes
hostkey /etc/ssh/ssh_host_ed25519_key
compression no
"""

SS_CONTROL_PLANE = """\
udp UNCONN 0      0      127.0.0.1:323   0.0.0.0:* users:(("chronyd",pid=613,fd=5))
tcp LISTEN 0      128      0.0.0.0:22    0.0.0.0:* users:(("sshd",pid=79,fd=3))
tcp LISTEN 0      128         [::]:22       [::]:* users:(("sshd",pid=79,fd=4))
tcp LISTEN 0      4096   127.0.0.1:46659 0.0.0.0:* users:(("containerd",pid=1579,fd=11))
tcp LISTEN 0      4096           *:9100        *:* users:(("node_exporter",pid=1653,fd=3))
tcp LISTEN 0      4096           *:10250       *:* users:(("kubelet",pid=2001,fd=9))
tcp LISTEN 0      4096           *:20244       *:* users:(("kube-router",pid=2101,fd=7))
tcp LISTEN 0      4096   127.0.0.1:6443  0.0.0.0:* users:(("haproxy",pid=7,fd=8))
tcp LISTEN 0      4096   10.0.0.11:6443  0.0.0.0:* users:(("kube-apiserver",pid=8,fd=5))
tcp LISTEN 0      4096   10.0.0.11:2379  0.0.0.0:* users:(("etcd",pid=9,fd=7))
tcp LISTEN 0      4096   10.0.0.11:2380  0.0.0.0:* users:(("etcd",pid=9,fd=8))
tcp LISTEN 0      4096   10.0.0.11:10257 0.0.0.0:* users:(("kube-controller",pid=10,fd=3))
tcp LISTEN 0      4096   10.0.0.11:10259 0.0.0.0:* users:(("kube-scheduler",pid=11,fd=3))
"""

AUDIT_RULES = "-w /etc/kubernetes -p wa -k kubernetes\n-w /etc/passwd -p wa -k identity\n"
AUDIT_RULES_PATH = "/etc/audit/rules.d/60-spectra-kubernetes.rules"

KUBELET_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
authorization: {mode: Webhook}
readOnlyPort: 0
"""

GOOD_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.secure_redirects": "0",
    "net.ipv4.conf.default.secure_redirects": "0",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.default.accept_source_route": "0",
    "net.ipv6.conf.all.accept_source_route": "0",
    "net.ipv6.conf.default.accept_source_route": "0",
    "net.ipv4.conf.all.rp_filter": "2",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.icmp_ignore_bogus_error_responses": "1",
    "net.ipv4.conf.all.log_martians": "1",
}


def converged_control_plane() -> FakeNode:
    """A control-plane and etcd host as the deploys leave it (our systemd units, no static pods)."""
    files = {
        "/etc/passwd": file("644"),
        "/etc/group": file("644"),
        "/etc/shadow": file("640", group="shadow"),
        "/etc/gshadow": file("640", group="shadow"),
        "/etc/ssh/sshd_config": file("600"),
        AUDIT_RULES_PATH: file("640", content=AUDIT_RULES),
        "/etc/systemd/system/kubelet.service": file("600"),
        "/etc/systemd/system/kubelet.service.d/10-spectra.conf": file("600"),
        "/etc/kubernetes/kube-proxy.conf": file("600"),
        "/etc/kubernetes/kube-proxy.yaml": file("600", content="metricsBindAddress: 127.0.0.1:10249\n"),
        "/etc/kubernetes/kubelet.conf": file("600"),
        "/var/lib/kubelet/config.yaml": file("600", content=KUBELET_CONFIG),
        "/etc/systemd/system/kube-apiserver.service": file("600"),
        "/etc/systemd/system/kube-controller-manager.service": file("600"),
        "/etc/systemd/system/kube-scheduler.service": file("600"),
        "/etc/systemd/system/etcd.service": file("600"),
        "/var/lib/etcd": directory("700", "etcd", "etcd"),
        "/etc/kubernetes/admin.conf": file("600"),
        "/etc/kubernetes/scheduler.conf": file("600"),
        "/etc/kubernetes/controller-manager.conf": file("600"),
        "/etc/kubernetes/pki": directory(),
        "/etc/kubernetes/pki/ca.crt": file("600"),
        "/etc/kubernetes/pki/ca.key": file("600"),
    }
    names = (
        "containerd", "node_exporter", "chrony", "ssh", "nftables", "fluentd", "kubelet", "auditd", "etcd",
        "kube-apiserver", "kube-controller-manager", "kube-scheduler",
    )  # fmt: skip
    return FakeNode(
        files=files,
        units={unit_name(name): unit() for name in names},
        sysctls=dict(GOOD_SYSCTLS),
        packages={"openssh-server", "fluent-package", "auditd"},
        commands={
            "sshd -T": Result(SSHD_T),
            "ss -Htulnp": Result(SS_CONTROL_PLANE),
            "auditctl -l": Result("-w /etc/kubernetes -p wa -k kubernetes\n-w /etc/passwd -p wa -k identity\n"),
            "nft list table inet spectra": Result("table inet spectra {\n\tchain input {\n\t\tpolicy drop;\n\t}\n}\n"),
        },
    )


CONTROL_PLANE_ROLES = ["control_plane", "etcd"]


def probe(node: FakeNode, roles: Sequence[str] = CONTROL_PLANE_ROLES, **data: Any) -> Probe:
    return Probe(node, HostContext("n1", list(roles), [], dict(data)))
