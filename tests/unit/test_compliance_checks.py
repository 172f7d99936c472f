"""The check registry and the decisions of compliance/probes.py on recorded host output."""

from __future__ import annotations

import re
from typing import Any

import pytest

from compliance import checks, probes
from compliance.probes import FileStat, HostContext, Listener, Probe

pytestmark = pytest.mark.unit

SS_OUTPUT = """\
udp UNCONN 0      0      127.0.0.1:323   0.0.0.0:* users:(("chronyd",pid=613,fd=5))
udp UNCONN 0      0          [::1]:323      [::]:* users:(("chronyd",pid=613,fd=6))
tcp LISTEN 0      128      0.0.0.0:22    0.0.0.0:* users:(("sshd",pid=79,fd=3))
tcp LISTEN 0      4096   127.0.0.1:46659 0.0.0.0:* users:(("containerd",pid=1579,fd=11))
tcp LISTEN 0      128         [::]:22       [::]:* users:(("sshd",pid=79,fd=4))
tcp LISTEN 0      4096           *:9100        *:* users:(("node_exporter",pid=1653,fd=3))
"""

SSHD_T = """\
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
"""


def test_ids_are_unique_stable_and_every_check_is_implemented() -> None:
    ids = checks.check_ids()
    assert len(ids) == len(set(ids))
    assert set(probes.CHECK_FUNCTIONS) == set(ids)
    for check in checks.CHECKS:
        assert re.fullmatch(r"SPX-(OS|SSH|SVC)-\d{3}|[14]\.\d\.\d+", check.id), check.id
        assert check.section in checks.SECTIONS
        for text in (check.title, check.rationale, check.fix):
            assert text.strip() and "\n" not in text, check.id
        assert bool(check.reference) == check.section.startswith("cis"), check.id


def test_registry_covers_the_cis_numbers_it_claims() -> None:
    ids = set(checks.check_ids())
    assert {f"4.1.{n}" for n in range(1, 11)} <= ids
    assert {"4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.3.1", "1.1.1", "1.1.11", "1.1.12", "1.1.19", "1.1.21"} <= ids
    with pytest.raises(KeyError, match="unknown check id"):
        checks.get("9.9.9")


def test_listeners_parsed_and_only_ssh_and_node_exporter_exposed() -> None:
    listeners = probes.parse_ss(SS_OUTPUT)
    assert Listener("tcp", "", 9100, "node_exporter") not in listeners
    assert Listener("tcp", "*", 9100, "node_exporter") in listeners
    assert Listener("tcp", "::", 22, "sshd") in listeners
    assert probes.exposed_listeners(listeners, [22, 9100]) == []
    extra = probes.parse_ss('tcp LISTEN 0 5 0.0.0.0:8081 0.0.0.0:* users:(("python3",pid=9,fd=3))\n')
    assert [str(item) for item in probes.exposed_listeners(listeners + extra, [22, 9100])] == [
        "tcp 0.0.0.0:8081 (python3)"
    ]
    scoped = probes.parse_ss("udp UNCONN 0 0 [fe80::1%eth0]:546 [::]:*\n")
    assert scoped == [Listener("udp", "fe80::1", 546, "")] and not scoped[0].loopback


def test_port_owners() -> None:
    listeners = probes.parse_ss(SS_OUTPUT)
    assert probes.evaluate_port_owners(listeners, {22: "sshd", 9100: "node_exporter"}).status == "pass"
    impostor = probes.parse_ss('tcp LISTEN 0 5 0.0.0.0:9100 0.0.0.0:* users:(("nc",pid=9,fd=3))\n')
    outcome = probes.evaluate_port_owners(impostor, {9100: "node_exporter", 22: "sshd"})
    assert outcome.status == "fail" and "held by nc" in outcome.reason and "nothing listens on 22/tcp" in outcome.reason


def test_expected_listeners_by_role() -> None:
    worker = probes.HostContext("w", roles=["workers"])
    assert probes.expected_listeners(worker) == {22: "sshd", 9100: "node_exporter", 10250: "kubelet"}
    control = probes.HostContext("cp", roles=["control_plane", "etcd"])
    assert probes.expected_listeners(control) == {
        22: "sshd", 2379: "etcd", 2380: "etcd", 6443: "kube-apiserver", 9100: "node_exporter", 10250: "kubelet",
    }  # fmt: skip
    plain = probes.HostContext("m", roles=["monitoring"])
    assert probes.expected_listeners(plain) == {22: "sshd", 9100: "node_exporter"}
    # the node-local balancer holds 127.0.0.1:6443 on a control plane: only the exposed holder counts
    both = probes.parse_ss(
        'tcp LISTEN 0 5 127.0.0.1:6443 0.0.0.0:* users:(("haproxy",pid=7,fd=8))\n'
        'tcp LISTEN 0 5 10.0.0.11:6443 0.0.0.0:* users:(("kube-apiserver",pid=8,fd=5))\n'
    )
    assert probes.evaluate_port_owners(both, {6443: "kube-apiserver"}).status == "pass"


def test_sysctls() -> None:
    values = probes.parse_sysctl("net.ipv4.ip_forward = 1\nnet.ipv4.conf.all.rp_filter = 2\n")
    assert probes.evaluate_sysctls(values, probes.SYSCTL_RULES["SPX-OS-001"]).status == "pass"
    assert probes.evaluate_sysctls(values, probes.SYSCTL_RULES["SPX-OS-006"]).status == "pass"
    off = probes.evaluate_sysctls({"net.ipv4.ip_forward": "0"}, probes.SYSCTL_RULES["SPX-OS-001"])
    assert off == probes.failed("net.ipv4.ip_forward = 0 (want 1)")
    missing = probes.evaluate_sysctls({}, probes.SYSCTL_RULES["SPX-OS-002"])
    assert "net.bridge.bridge-nf-call-iptables is not present" in missing.reason


def test_sshd_baseline() -> None:
    settings = probes.parse_sshd_config(SSHD_T)
    for check_id, (keyword, patterns) in probes.SSH_ALGORITHMS.items():
        assert probes.evaluate_algorithms(settings, keyword, patterns).status == "pass", check_id
    weak = probes.evaluate_algorithms({"macs": "hmac-sha2-256,hmac-sha1,umac-64@openssh.com"}, "macs", probes.WEAK_MACS)
    assert weak.reason == "macs offers hmac-sha1, umac-64@openssh.com"
    cbc = probes.evaluate_algorithms({"ciphers": "aes128-ctr,aes256-cbc"}, "ciphers", probes.WEAK_CIPHERS)
    assert cbc.status == "fail"
    kex = probes.evaluate_algorithms({"kexalgorithms": "diffie-hellman-group14-sha1"}, "kexalgorithms", probes.WEAK_KEX)
    assert kex.status == "fail"
    root = probes.evaluate_sshd_setting(settings, "permitrootlogin", ("prohibit-password", "without-password"))
    assert root.status == "pass"
    password = probes.evaluate_sshd_setting({"passwordauthentication": "yes"}, "passwordauthentication", ("no",))
    assert password.reason == "passwordauthentication yes (want no)"


def test_modes_are_at_most_and_owners_exact() -> None:
    shadow = FileStat("/etc/shadow", 0o640, "root", "shadow", "regular file")
    assert probes.evaluate_files([shadow], 0o640, "root", ["shadow"]).status == "pass"
    strict = FileStat("/etc/shadow", 0o600, "root", "shadow", "regular file")
    assert probes.evaluate_files([strict], 0o640).status == "pass"
    loose = probes.evaluate_files([FileStat("/etc/shadow", 0o644, "root", "shadow", "regular file")], 0o640)
    assert loose.reason == "/etc/shadow is 0644 (want 0640 or stricter)"
    foreign = FileStat("/x", 0o600, "nobody", "root", "regular file")
    owned = probes.evaluate_files([foreign], user="root", groups=["root"])
    assert owned.reason == "/x is owned by user nobody (want root)"
    stats = probes.parse_stat("600\troot\troot\tregular file\t/etc/kubernetes/pki/ca.key\n")
    assert stats["/etc/kubernetes/pki/ca.key"].mode == 0o600


def test_kubelet_config_settings() -> None:
    good = {
        "authentication": {"anonymous": {"enabled": False}, "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}},
        "authorization": {"mode": "Webhook"},
        "readOnlyPort": 0,
    }
    for check_id in ("4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5", "4.2.6", "4.2.10"):
        assert probes.evaluate_kubelet_config(check_id, good, "c.yaml").status == "pass", check_id
    bad = {"authentication": {"anonymous": {"enabled": True}}, "authorization": {"mode": "AlwaysAllow"},
           "readOnlyPort": 10255, "streamingConnectionIdleTimeout": "0", "makeIPTablesUtilChains": False,
           "rotateCertificates": False}  # fmt: skip
    for check_id in ("4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5", "4.2.6", "4.2.10"):
        assert probes.evaluate_kubelet_config(check_id, bad, "c.yaml").status == "fail", check_id
    assert probes.evaluate_proxy_metrics({"metricsBindAddress": "0.0.0.0:10249"}, "p").status == "fail"
    assert probes.evaluate_proxy_metrics({"metricsBindAddress": "127.0.0.1:10249"}, "p").status == "pass"
    assert probes.evaluate_proxy_metrics({}, "p").status == "pass"


class FakeResult:
    def __init__(self, stdout: str = "", rc: int = 0) -> None:
        self.stdout, self.stderr, self.rc = stdout, "", rc


class FakeHost:
    """A testinfra-like host answering commands by their first word."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.commands: list[str] = []

    def run(self, command: str) -> FakeResult:
        self.commands.append(command)
        for prefix, output in self.answers.items():
            if command.startswith(prefix):
                return FakeResult(output)
        return FakeResult("")


UNITS_ABSENT = "\n\n".join(
    f"Id={name}\nLoadState=not-found\nActiveState=inactive\nUnitFileState=" for name in probes.ALL_UNITS
)


def _probe(answers: dict[str, str], roles: list[str] | None = None, **data: Any) -> Probe:
    return Probe(FakeHost({"systemctl show": UNITS_ABSENT, **answers}), HostContext("n1", roles or [], [], data))


def test_fluentd_not_applicable_only_when_disabled_for_the_host() -> None:
    absent = {"dpkg-query": "openssh-server\tii \n"}
    assert probes.run_check("SPX-SVC-006", _probe(absent, fluentd_enabled=False)).status == "not_applicable"
    enabled = probes.run_check("SPX-SVC-006", _probe(absent))  # the deploy's default is on
    assert enabled == probes.failed("fluentd_enabled is true for this host but fluent-package is not installed")


def test_kubernetes_files_absent_are_not_applicable_present_are_checked() -> None:
    probe = _probe({}, roles=["control_plane", "etcd"])
    for check_id in ("4.1.1", "4.1.5", "4.1.9", "4.2.1", "4.3.1", "1.1.1", "1.1.11", "1.1.19", "SPX-SVC-007"):
        outcome = probes.run_check(check_id, probe)
        assert outcome.status == "not_applicable", (check_id, outcome)
    assert "no kubelet.service" in probes.run_check("4.1.9", probe).reason
    worker = probes.run_check("1.1.13", _probe({}, roles=["workers"]))
    assert worker.reason.startswith("not a control_plane host")

    present = _probe({"stat": "644\troot\troot\tregular file\t/var/lib/kubelet/config.yaml\n",
                      "cat": "readOnlyPort: 10255\n"})  # fmt: skip
    assert probes.run_check("4.1.9", present) == probes.failed(
        "/var/lib/kubelet/config.yaml is 0644 (want 0600 or stricter)"
    )
    assert probes.run_check("4.1.10", present).status == "pass"
    assert probes.run_check("4.2.4", present).status == "fail"


def test_kubelet_installed_but_its_kubeconfig_missing_fails() -> None:
    units = UNITS_ABSENT.replace("Id=kubelet.service\nLoadState=not-found", "Id=kubelet.service\nLoadState=loaded")
    probe = Probe(FakeHost({"systemctl show": units}), HostContext("n1"))
    assert probes.run_check("4.1.5", probe).status == "fail"
    assert probes.run_check("4.1.9", probe).status == "not_applicable"  # "if the config file is used"


def test_loaded_audit_rules_are_not_applicable_in_a_container_only() -> None:
    container = probes.run_check("SPX-OS-041", _probe({"systemd-detect-virt": "systemd-nspawn\n"}))
    assert container.status == "not_applicable" and "systemd-nspawn container" in container.reason
    answers = {"systemd-detect-virt": "none\n", "cat": "-w /etc/passwd -p wa -k identity\n", "auditctl": "No rules\n"}
    vm = probes.run_check("SPX-OS-041", _probe(answers))
    assert vm.status == "fail" and "identity" in vm.reason


def test_an_error_reading_the_host_fails_the_check_with_the_cause() -> None:
    class Broken:
        def run(self, command: str) -> Any:
            raise RuntimeError("ssh: connect to host 10.0.0.1 port 22: No route to host")

    outcome = probes.run_check("SPX-SSH-004", Probe(Broken(), HostContext("n1")))
    assert outcome.status == "fail" and "No route to host" in outcome.reason


def test_reads_are_batched_and_cached_per_host() -> None:
    host = FakeHost({"sysctl": "net.ipv4.ip_forward = 1\n"})
    probe = Probe(host, HostContext("n1"))
    for check_id in probes.SYSCTL_RULES:
        probes.run_check(check_id, probe)
    assert [command.split()[0] for command in host.commands] == ["sysctl"]


def test_an_unreachable_host_is_tried_once_then_every_check_fails_with_the_ssh_error() -> None:
    class Unreachable:
        calls = 0

        def run(self, command: str) -> Any:
            Unreachable.calls += 1
            raise RuntimeError(FakeResult("", 255).__class__)  # not a CommandResult: re-raised as is

    class NoRoute:
        calls = 0

        def run(self, command: str) -> Any:
            NoRoute.calls += 1
            result = FakeResult("", 255)
            result.stderr = "ssh: connect to host 10.0.0.1 port 22: No route to host\n"
            raise RuntimeError(result)

    probe = Probe(NoRoute(), HostContext("n1"))
    outcomes = [probes.run_check(check_id, probe) for check_id in ("SPX-SSH-004", "SPX-OS-001", "SPX-SVC-001")]
    assert NoRoute.calls == 1
    reason = "cannot reach n1 over ssh: ssh: connect to host 10.0.0.1 port 22: No route to host"
    assert {o.reason for o in outcomes} == {reason}
    assert probes.run_check("SPX-OS-001", Probe(Unreachable(), HostContext("n1"))).status == "fail"
