"""The check registry, and the checks' decisions on fake hosts (facts in, outcomes out)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from compliance import checks
from compliance.checks import cis_worker, os_baseline, services, ssh
from compliance.context import CONTEXT_KEYS, HostContext
from compliance.listeners import Listener, exposed_listeners, parse_ss
from compliance.model import Outcome, failed
from compliance.modes import FileExpectation
from compliance.probe import Probe, SshReader
from tests.unit.compliance_fakes import (
    SS_CONTROL_PLANE,
    FakeNode,
    Result,
    converged_control_plane,
    file,
    probe,
    unit,
)

pytestmark = pytest.mark.unit

IDS = [
    "SPX-OS-001", "SPX-OS-002", "SPX-OS-003", "SPX-OS-004", "SPX-OS-005", "SPX-OS-006", "SPX-OS-007", "SPX-OS-008",
    "SPX-OS-009", "SPX-OS-010", "SPX-OS-020", "SPX-OS-021", "SPX-OS-022", "SPX-OS-023", "SPX-OS-024", "SPX-OS-030",
    "SPX-OS-031", "SPX-OS-040", "SPX-OS-041",
    "SPX-SSH-001", "SPX-SSH-002", "SPX-SSH-003", "SPX-SSH-004", "SPX-SSH-005", "SPX-SSH-006", "SPX-SSH-007",
    "SPX-SSH-008", "SPX-SSH-009", "SPX-SSH-010", "SPX-SSH-011", "SPX-SSH-012", "SPX-SSH-013",
    "SPX-SVC-001", "SPX-SVC-002", "SPX-SVC-003", "SPX-SVC-004", "SPX-SVC-005", "SPX-SVC-006", "SPX-SVC-007",
    "SPX-SVC-010", "SPX-SVC-011",
    "4.1.1", "4.1.2", "4.1.3", "4.1.4", "4.1.5", "4.1.6", "4.1.7", "4.1.8", "4.1.9", "4.1.10",
    "4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5", "4.2.6", "4.2.10", "4.3.1",
    "1.1.1", "1.1.2", "1.1.3", "1.1.4", "1.1.5", "1.1.6", "1.1.7", "1.1.8", "1.1.11", "1.1.12", "1.1.13", "1.1.14",
    "1.1.15", "1.1.16", "1.1.17", "1.1.18", "1.1.19", "1.1.20", "1.1.21",
]  # fmt: skip


def outcomes(target: Probe) -> dict[str, Outcome]:
    return {check.id: check.run(target) for check in checks.CHECKS}


def failing(target: Probe) -> dict[str, str]:
    return {check_id: outcome.reason for check_id, outcome in outcomes(target).items() if outcome.status == "fail"}


# --- the registry -----------------------------------------------------------------------------------


def test_the_registry_lists_every_check_in_report_order() -> None:
    assert checks.check_ids() == IDS
    assert list(checks.BY_ID) == IDS


def test_each_check_is_one_complete_record_in_its_sections_module() -> None:
    for module in checks.MODULES:
        assert module.SECTION in checks.SECTIONS
        for check in module.CHECKS:
            assert check.section == module.SECTION, check.id
            assert re.fullmatch(r"SPX-(OS|SSH|SVC)-\d{3}|[14]\.\d\.\d+", check.id), check.id
            for text in (check.title, check.rationale, check.fix):
                assert text.strip() and "\n" not in text, check.id
            assert bool(check.reference) == check.section.startswith("cis"), check.id
            assert callable(check.evaluate), check.id
    assert list(checks.SECTIONS) == ["os", "ssh", "services", "cis-worker", "cis-control-plane"]


def test_registry_covers_the_cis_numbers_it_claims() -> None:
    ids = set(checks.check_ids())
    assert {f"4.1.{n}" for n in range(1, 11)} <= ids
    assert {"4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.3.1", "1.1.1", "1.1.11", "1.1.12", "1.1.19", "1.1.21"} <= ids
    with pytest.raises(KeyError, match="unknown check id"):
        checks.get("9.9.9")


# --- whole hosts ------------------------------------------------------------------------------------


def test_a_converged_control_plane_passes_every_check() -> None:
    results = outcomes(probe(converged_control_plane()))
    assert {check_id: outcome.status for check_id, outcome in results.items()} == dict.fromkeys(IDS, "pass")
    assert results["SPX-SVC-011"].reason == (
        "22/tcp: sshd, 2379/tcp: etcd, 2380/tcp: etcd, 6443/tcp: kube-apiserver, 9100/tcp: node_exporter, "
        "10250/tcp: kubelet, 10257/tcp: kube-controller-manager, 10259/tcp: kube-scheduler, 20244/tcp: kube-router"
    )


def test_on_a_worker_the_control_plane_checks_are_out_of_scope_and_its_ports_unexpected() -> None:
    results = outcomes(probe(converged_control_plane(), roles=["workers"]))
    assert results["1.1.1"].status == "not_applicable" and results["1.1.1"].reason.startswith("not a control_plane")
    assert results["1.1.11"].reason == "not a control_plane or etcd host"
    assert results["SPX-SVC-010"] == failed(
        "also listening beyond loopback: tcp 10.0.0.11:6443 (kube-apiserver), tcp 10.0.0.11:2379 (etcd), "
        "tcp 10.0.0.11:2380 (etcd), tcp 10.0.0.11:10257 (kube-controller), tcp 10.0.0.11:10259 (kube-scheduler)"
    )


def _with(node: FakeNode, **changes: Any) -> FakeNode:
    for name, value in changes.items():
        getattr(node, name).update(value)
    return node


def test_broken_hosts_are_caught_with_the_right_ids_and_reasons() -> None:
    shadow = _with(converged_control_plane(), files={"/etc/shadow": file("644", group="shadow")})
    assert failing(probe(shadow)) == {"SPX-OS-021": "/etc/shadow is 0644 (want 0640 or stricter)"}

    extra = SS_CONTROL_PLANE + 'tcp LISTEN 0 5 0.0.0.0:8081 0.0.0.0:* users:(("python3",pid=9,fd=3))\n'
    listener = _with(converged_control_plane(), commands={"ss -Htulnp": Result(extra)})
    assert failing(probe(listener)) == {"SPX-SVC-010": "also listening beyond loopback: tcp 0.0.0.0:8081 (python3)"}

    sshd = converged_control_plane()
    sshd.commands["sshd -T"] = Result(
        sshd.commands["sshd -T"].stdout.replace("passwordauthentication no", "passwordauthentication yes")
    )
    assert failing(probe(sshd)) == {"SPX-SSH-004": "passwordauthentication yes (want no)"}

    config = converged_control_plane()
    config.files["/var/lib/kubelet/config.yaml"]["mode"] = "644"
    assert failing(probe(config)) == {"4.1.9": "/var/lib/kubelet/config.yaml is 0644 (want 0600 or stricter)"}

    redirects = _with(converged_control_plane(), sysctls={"net.ipv4.conf.all.accept_redirects": "1"})
    assert failing(probe(redirects)) == {"SPX-OS-003": "net.ipv4.conf.all.accept_redirects = 1 (want 0)"}


def test_reads_are_batched_and_cached_per_host() -> None:
    node = FakeNode(sysctls={"net.ipv4.ip_forward": "1"})
    target = probe(node)
    for check in os_baseline.NETWORK_SYSCTLS:
        check.run(target)
    assert node.calls == ["SysctlValues"]

    node = converged_control_plane()
    outcomes(probe(node))
    # units: at most one read per module that asks (OS for auditd, services, control plane); every other kind
    # of read once, files once per set of paths
    assert node.calls.count("SystemdUnits") <= 3
    others = [call for call in node.calls if call not in ("SystemdUnits", "FileStates")]
    assert len(others) == len(set(others)), others


class RecordingData(dict[str, Any]):
    """Host data that remembers every key read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("checks read keys by name")


def test_checks_read_only_the_settings_compliance_copies_from_the_inventory() -> None:
    context = HostContext("n1", ["control_plane", "etcd"])
    context.data = RecordingData(context.data)
    outcomes(Probe(converged_control_plane(), context))
    assert context.data.read <= set(CONTEXT_KEYS), sorted(context.data.read - set(CONTEXT_KEYS))


# --- single decisions ---------------------------------------------------------------------------------


def test_listeners_parsed_and_only_ssh_and_node_exporter_exposed() -> None:
    listeners = parse_ss(SS_CONTROL_PLANE)
    assert Listener("tcp", "*", 9100, "node_exporter") in listeners
    assert Listener("tcp", "::", 22, "sshd") in listeners
    local = [item for item in listeners if item.port in (22, 9100, 323, 46659)]
    assert exposed_listeners(local, [22, 9100]) == []
    extra = parse_ss('tcp LISTEN 0 5 0.0.0.0:8081 0.0.0.0:* users:(("python3",pid=9,fd=3))\n')
    assert [str(item) for item in exposed_listeners(local + extra, [22, 9100])] == ["tcp 0.0.0.0:8081 (python3)"]
    scoped = parse_ss("udp UNCONN 0 0 [fe80::1%eth0]:546 [::]:*\n")
    assert scoped == [Listener("udp", "fe80::1", 546, "")] and not scoped[0].loopback


def test_port_owners() -> None:
    listeners = parse_ss(SS_CONTROL_PLANE)
    assert services.evaluate_port_owners(listeners, {22: "sshd", 9100: "node_exporter"}).status == "pass"
    impostor = parse_ss('tcp LISTEN 0 5 0.0.0.0:9100 0.0.0.0:* users:(("nc",pid=9,fd=3))\n')
    outcome = services.evaluate_port_owners(impostor, {9100: "node_exporter", 22: "sshd"})
    assert outcome.status == "fail" and "held by nc" in outcome.reason and "nothing listens on 22/tcp" in outcome.reason
    # the node-local balancer holds 127.0.0.1:6443 on a control plane: only the exposed holder counts
    assert services.evaluate_port_owners(listeners, {6443: "kube-apiserver"}).status == "pass"


def test_sysctls() -> None:
    values = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2"}
    assert os_baseline.evaluate_sysctls(values, {"net.ipv4.conf.all.rp_filter": ("1", "2")}).status == "pass"
    off = os_baseline.evaluate_sysctls({"net.ipv4.ip_forward": "0"}, {"net.ipv4.ip_forward": ("1",)})
    assert off == failed("net.ipv4.ip_forward = 0 (want 1)")
    missing = checks.run_check("SPX-OS-002", probe(FakeNode(sysctls={"net.bridge.bridge-nf-call-ip6tables": "1"})))
    assert missing == failed("net.bridge.bridge-nf-call-iptables is not present in this kernel")


def test_sshd_baseline() -> None:
    weak = ssh.evaluate_algorithms({"macs": "hmac-sha2-256,hmac-sha1,umac-64@openssh.com"}, "macs", ssh.WEAK_MACS)
    assert weak.reason == "macs offers hmac-sha1, umac-64@openssh.com"
    cbc = ssh.evaluate_algorithms({"ciphers": "aes128-ctr,aes256-cbc"}, "ciphers", ssh.WEAK_CIPHERS)
    assert cbc.status == "fail"
    kex = ssh.evaluate_algorithms({"kexalgorithms": "diffie-hellman-group14-sha1"}, "kexalgorithms", ssh.WEAK_KEX)
    assert kex.status == "fail"
    password = ssh.evaluate_sshd_setting({"passwordauthentication": "yes"}, "passwordauthentication", ("no",))
    assert password.reason == "passwordauthentication yes (want no)"
    tries = converged_control_plane()
    tries.commands["sshd -T"] = Result("maxauthtries 6\n")
    assert checks.run_check("SPX-SSH-008", probe(tries)) == failed("maxauthtries 6 (want 4 or less)")


def test_modes_are_at_most_and_owners_exact() -> None:
    shadow = {"/etc/shadow": file("640", group="shadow")}
    assert FileExpectation(0o640, "root", ("shadow",)).evaluate(shadow).status == "pass"
    assert FileExpectation(0o640).evaluate({"/etc/shadow": file("600", group="shadow")}).status == "pass"
    loose = FileExpectation(0o640).evaluate({"/etc/shadow": file("644")})
    assert loose.reason == "/etc/shadow is 0644 (want 0640 or stricter)"
    owned = FileExpectation(user="root", groups=("root",)).evaluate({"/x": file(user="nobody")})
    assert owned.reason == "/x is owned by user nobody (want root)"
    dangling = FileExpectation(0o600).evaluate({"/x": file("", "", "", type="link")})
    assert dangling.reason == "/x is a dangling symbolic link"


GOOD_KUBELET = """\
authentication: {anonymous: {enabled: false}, x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}}
authorization: {mode: Webhook}
readOnlyPort: 0
"""
BAD_KUBELET = """\
authentication: {anonymous: {enabled: true}}
authorization: {mode: AlwaysAllow}
readOnlyPort: 10255
streamingConnectionIdleTimeout: "0"
makeIPTablesUtilChains: false
rotateCertificates: false
"""
KUBELET_SETTINGS = ("4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5", "4.2.6", "4.2.10")


@pytest.mark.parametrize(("content", "status"), [(GOOD_KUBELET, "pass"), (BAD_KUBELET, "fail")])
def test_kubelet_config_settings(content: str, status: str) -> None:
    node = FakeNode(files={cis_worker.KUBELET_CONFIG: file("600", content=content)})
    for check_id in KUBELET_SETTINGS:
        assert checks.run_check(check_id, probe(node)).status == status, check_id


def test_kube_proxy_metrics() -> None:
    assert cis_worker.evaluate_proxy_metrics({"metricsBindAddress": "0.0.0.0:10249"}, "p").status == "fail"
    assert cis_worker.evaluate_proxy_metrics({"metricsBindAddress": "127.0.0.1:10249"}, "p").status == "pass"
    assert cis_worker.evaluate_proxy_metrics({"metricsBindAddress": "[::1]:10249"}, "p").status == "pass"
    assert cis_worker.evaluate_proxy_metrics({}, "p").status == "pass"


def test_fluentd_not_applicable_only_when_disabled_for_the_host() -> None:
    absent = FakeNode(packages={"openssh-server"})
    assert checks.run_check("SPX-SVC-006", probe(absent, fluentd_enabled=False)).status == "not_applicable"
    enabled = checks.run_check("SPX-SVC-006", probe(absent))  # the deploy's default is on
    assert enabled == failed("fluentd_enabled is true for this host but fluent-package is not installed")


def test_kubernetes_files_absent_are_not_applicable_present_are_checked() -> None:
    empty = probe(FakeNode())
    for check_id in ("4.1.1", "4.1.5", "4.1.9", "4.2.1", "4.3.1", "1.1.1", "1.1.11", "1.1.19", "SPX-SVC-007"):
        outcome = checks.run_check(check_id, empty)
        assert outcome.status == "not_applicable", (check_id, outcome)
    assert "no kubelet.service" in checks.run_check("4.1.9", empty).reason
    assert checks.run_check("1.1.13", probe(FakeNode(), roles=["workers"])).reason.startswith("not a control_plane")

    present = probe(FakeNode(files={cis_worker.KUBELET_CONFIG: file("644", content="readOnlyPort: 10255\n")}))
    assert checks.run_check("4.1.9", present) == failed("/var/lib/kubelet/config.yaml is 0644 (want 0600 or stricter)")
    assert checks.run_check("4.1.10", present).status == "pass"
    assert checks.run_check("4.2.4", present).status == "fail"


def test_drop_ins_of_the_kubelet_unit_are_checked_by_glob() -> None:
    node = converged_control_plane()
    node.files["/etc/systemd/system/kubelet.service.d/20-extra.conf"] = file("644")
    assert failing(probe(node)) == {
        "4.1.1": "/etc/systemd/system/kubelet.service.d/20-extra.conf is 0644 (want 0600 or stricter)"
    }


def test_installed_components_missing_their_files_fail() -> None:
    kubelet = probe(FakeNode(units={"kubelet.service": unit()}))
    assert checks.run_check("4.1.5", kubelet) == failed(
        "/etc/kubernetes/kubelet.conf missing although kubelet.service is installed"
    )
    assert checks.run_check("4.1.9", kubelet).status == "not_applicable"  # "if the config file is used"
    assert checks.run_check("4.2.1", kubelet).status == "fail"
    etcd = probe(FakeNode(units={"etcd.service": unit()}))
    assert checks.run_check("1.1.11", etcd) == failed("/var/lib/etcd missing although etcd is installed here")
    control_plane = probe(FakeNode(units={"kube-apiserver.service": unit()}))
    assert checks.run_check("1.1.19", control_plane) == failed(
        "/etc/kubernetes/pki missing although the control plane is installed here"
    )


def test_services_must_be_active_now_and_at_boot() -> None:
    node = converged_control_plane()
    node.units["chrony.service"] = unit(active="activating", enabled="disabled")
    del node.units["containerd.service"]
    assert failing(probe(node)) == {
        "SPX-SVC-001": "containerd.service is not installed",
        "SPX-SVC-003": "chrony.service is activating; chrony.service is disabled at boot",
    }


def test_loaded_audit_rules_are_not_applicable_in_a_container_only() -> None:
    node = converged_control_plane()
    node.container = "systemd-nspawn"
    container = checks.run_check("SPX-OS-041", probe(node))
    assert container.status == "not_applicable" and "systemd-nspawn container" in container.reason
    unloaded = converged_control_plane()
    unloaded.commands["auditctl -l"] = Result("No rules\n")
    assert failing(probe(unloaded)) == {
        "SPX-OS-041": "rules with keys identity, kubernetes from /etc/audit/rules.d/60-spectra-kubernetes.rules "
        "are not loaded"
    }


def test_an_error_reading_the_host_fails_the_check_with_the_cause() -> None:
    class Broken:
        def run(self, command: str) -> Any:
            raise RuntimeError("ssh: connect to host 10.0.0.1 port 22: No route to host")

    outcome = checks.run_check("SPX-SSH-004", Probe(SshReader(Broken(), "n1"), HostContext("n1")))
    assert outcome.status == "fail" and "No route to host" in outcome.reason


def test_an_unreachable_host_is_tried_once_then_every_check_fails_with_the_ssh_error() -> None:
    class NoRoute:
        calls = 0

        def run(self, command: str) -> Any:
            NoRoute.calls += 1
            raise RuntimeError(Result("", 255, "ssh: connect to host 10.0.0.1 port 22: No route to host\n"))

    target = Probe(SshReader(NoRoute(), "n1"), HostContext("n1"))
    results = [checks.run_check(check_id, target) for check_id in ("SPX-SSH-004", "SPX-OS-001", "SPX-SVC-001")]
    assert NoRoute.calls == 1
    reason = "cannot reach n1 over ssh: ssh: connect to host 10.0.0.1 port 22: No route to host"
    assert {outcome.reason for outcome in results} == {reason}
