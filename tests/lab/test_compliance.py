"""`spectra comply` and `spectra drift` on the lab: a converged lab passes every applicable check; hosts
broken on purpose are caught with the right check ids; waivers and --limit by zone; drift caught and
cleared by a converge. Every test leaves the nodes converged (it re-converges at the end)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import REPO, Lab, LabNode

pytestmark = pytest.mark.lab

SPECTRA = str(Path(sys.executable).parent / "spectra")
DROPIN = "/etc/ssh/sshd_config.d/00-spectra-hardening.conf"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
HTTP_UNIT = "spectra-comply-extra-port"
SYSCTL_FILE = "/etc/sysctl.d/60-spectra-hardening.conf"


def spectra(*args: str, env: dict[str, str] | None = None, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SPECTRA, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ)
    )


def converge() -> None:
    result = spectra("deploy", "inventories/lab.py", "deploys/site.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def comply(report_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = spectra("comply", "inventories/lab.py", "--report-dir", str(report_dir), *args, timeout=900)
    report = report_dir / "compliance.json"
    return result, json.loads(report.read_text()) if report.exists() else {}


def statuses(report: dict[str, Any], status: str) -> set[tuple[str, str]]:
    return {
        (host, check_id)
        for host, entry in report["hosts"].items()
        for check_id, result in entry["checks"].items()
        if result["status"] == status
    }


@pytest.fixture(scope="module")
def converged(lab: Lab) -> Lab:
    converge()
    return lab


def test_a_converged_lab_passes_every_applicable_check(converged: Lab, tmp_path: Path) -> None:
    result, report = comply(tmp_path, "-n", "4")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "COMPLIANT" in result.stderr
    hosts = sorted(node.name for node in converged.nodes)
    assert sorted(report["hosts"]) == hosts and report["ok"] is True
    assert report["summary"]["fail"] == 0 and report["summary"]["waived"] == 0
    passed = statuses(report, "pass")
    for host in hosts:
        for check_id in ("SPX-OS-001", "SPX-OS-003", "SPX-OS-021", "SPX-OS-040", "SPX-SSH-001", "SPX-SSH-004",
                         "SPX-SVC-001", "SPX-SVC-002", "SPX-SVC-005", "SPX-SVC-010", "SPX-SVC-011"):  # fmt: skip
            assert (host, check_id) in passed, (host, check_id, report["hosts"][host]["checks"][check_id])
        checks = report["hosts"][host]["checks"]
        # Not applicable here, each for its stated reason (never a pass):
        assert checks["SPX-SVC-006"] == {
            "status": "not_applicable",
            "reason": "fluent-package is not installed and fluentd_enabled is false for this host",
        }
        assert checks["SPX-OS-041"]["status"] == "not_applicable"
        assert "systemd-nspawn container" in checks["SPX-OS-041"]["reason"]
        # The cluster runs on every node (site.py): the CIS worker checks apply and pass everywhere.
        for check_id in ("SPX-SVC-007", "4.1.1", "4.1.3", "4.1.5", "4.1.7", "4.1.9", "4.2.1", "4.2.2", "4.2.4",
                         "4.2.10", "4.3.1"):  # fmt: skip
            assert checks[check_id]["status"] == "pass", (host, check_id, checks[check_id])
    # CIS 1.1 (control-plane files: units, kubeconfigs, PKI, etcd data) on the control plane only.
    control_plane = [node.name for node in converged.nodes if "control_plane" in node.roles]
    for host in hosts:
        checks = report["hosts"][host]["checks"]
        for check_id in ("1.1.1", "1.1.3", "1.1.5", "1.1.7", "1.1.11", "1.1.13", "1.1.19", "1.1.20", "1.1.21"):
            expected = "pass" if host in control_plane else "not_applicable"
            assert checks[check_id]["status"] == expected, (host, check_id, checks[check_id])

    junit = ET.parse(tmp_path / "junit.xml").getroot()
    assert junit.get("failures") == "0" and [suite.get("name") for suite in junit] == hosts
    assert "COMPLIANT: no failing check" in (tmp_path / "index.html").read_text()


def wait_for_ssh(lab: Lab, node: LabNode, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        probe = subprocess.run(lab.ssh_args(node, "true"), capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return
        assert time.monotonic() < deadline, f"{node.name}: ssh does not answer: {probe.stderr}"
        time.sleep(0.2)


def _break(lab: Lab) -> None:
    node1, node2, node3 = (lab.node(name) for name in ("node1", "node2", "node3"))
    lab.ssh(node1, "chmod 0644 /etc/shadow")
    lab.ssh(node1, f"systemd-run --unit {HTTP_UNIT} --property=WorkingDirectory=/tmp python3 -m http.server 8081")
    lab.ssh(node1, "for i in $(seq 50); do ss -Htln | grep -q ':8081 ' && exit 0; sleep 0.1; done; exit 1")
    password_on = "s/^PasswordAuthentication no$/PasswordAuthentication yes/"
    lab.ssh(node2, f"sed -i '{password_on}' {DROPIN} && systemctl reload ssh")
    wait_for_ssh(lab, node2)  # sshd re-executes itself on reload: its port is closed for a moment
    assert "passwordauthentication yes" in lab.ssh(node2, "sshd -T")
    lab.ssh(node2, f"chmod 0644 {KUBELET_CONFIG}")  # the running kubelet's own configuration, loosened
    lab.ssh(node3, "sysctl -qw net.ipv4.conf.all.accept_redirects=1")  # per network namespace in the lab


def _restore(lab: Lab) -> None:
    lab.ssh(lab.node("node1"), f"systemctl stop {HTTP_UNIT} 2>/dev/null; true", check=False)
    # The sysctl hardening component loads its file only when the file changed: a converge does not undo a
    # runtime change (and drift does not see it; SPX-OS-003 does). Load the file as boot would.
    lab.ssh(lab.node("node3"), f"sysctl -q -p {SYSCTL_FILE}", check=False)
    converge()
    assert lab.ssh(lab.node("node3"), "sysctl -n net.ipv4.conf.all.accept_redirects").strip() == "0"
    assert lab.ssh(lab.node("node1"), "stat -c %a /etc/shadow; ss -Htln").split()[0] == "640"
    assert ":8081 " not in lab.ssh(lab.node("node1"), "ss -Htln")
    assert "passwordauthentication no" in lab.ssh(lab.node("node2"), "sshd -T")
    assert lab.ssh(lab.node("node2"), f"stat -c %a {KUBELET_CONFIG}").strip() == "600"


@pytest.fixture
def broken(converged: Lab) -> Iterator[Lab]:
    try:
        _break(converged)
        yield converged
    finally:
        _restore(converged)


def test_broken_hosts_are_caught_with_the_right_ids(broken: Lab, tmp_path: Path) -> None:
    result, report = comply(tmp_path / "all")
    assert result.returncode == 1, result.stderr[-3000:]
    assert statuses(report, "fail") == {
        ("node1", "SPX-OS-021"),  # /etc/shadow 0644
        ("node1", "SPX-SVC-010"),  # python3 -m http.server 8081
        ("node2", "SPX-SSH-004"),  # PasswordAuthentication yes
        ("node2", "4.1.9"),  # kubelet config.yaml 0644
        ("node3", "SPX-OS-003"),  # accept_redirects=1
    }, result.stdout
    checks = {host: entry["checks"] for host, entry in report["hosts"].items()}
    assert checks["node1"]["SPX-OS-021"]["reason"] == "/etc/shadow is 0644 (want 0640 or stricter)"
    assert "tcp 0.0.0.0:8081 (python3)" in checks["node1"]["SPX-SVC-010"]["reason"]
    assert checks["node2"]["SPX-SSH-004"]["reason"] == "passwordauthentication yes (want no)"
    assert checks["node2"]["4.1.9"]["reason"] == f"{KUBELET_CONFIG} is 0644 (want 0600 or stricter)"
    assert checks["node2"]["4.1.10"]["status"] == checks["node2"]["4.2.4"]["status"] == "pass"  # present: checked
    assert checks["node1"]["4.1.9"]["status"] == "pass"
    assert "net.ipv4.conf.all.accept_redirects = 1 (want 0)" in checks["node3"]["SPX-OS-003"]["reason"]
    junit = ET.parse(tmp_path / "all" / "junit.xml").getroot()
    assert junit.get("failures") == "5"
    page = (tmp_path / "all" / "index.html").read_text()
    assert "NOT COMPLIANT: 5 failing check(s) on 3 host(s)" in page
    assert "FAIL node2 SPX-SSH-004" in result.stdout and "fix: converge ssh_hardening" in result.stdout

    # One zone only: --limit takes a zone name.
    result, report = comply(tmp_path / "zone", "--limit", "lab-c")
    assert result.returncode == 1 and sorted(report["hosts"]) == ["node3"]
    assert statuses(report, "fail") == {("node3", "SPX-OS-003")}

    # Waivers: an active one turns its failure into "waived"; an expired one waives nothing and fails the run.
    today = datetime.date.today()
    waivers = tmp_path / "waivers.yaml"
    next_week, yesterday = today + datetime.timedelta(days=7), today - datetime.timedelta(days=1)
    waivers.write_text(
        f"- {{check: SPX-OS-021, host: node1, reason: 'lab test SEC-1', expires: {next_week}}}\n"
        f"- {{check: SPX-OS-003, group: az_lab_c, reason: 'lab test SEC-2', expires: {today}}}\n"
        f"- {{check: SPX-SSH-004, group: workers, reason: 'lab test SEC-3', expires: {yesterday}}}\n"
    )
    result, report = comply(tmp_path / "waived", "--waivers", str(waivers))
    assert result.returncode == 1
    assert statuses(report, "waived") == {("node1", "SPX-OS-021"), ("node3", "SPX-OS-003")}
    assert statuses(report, "fail") == {("node1", "SPX-SVC-010"), ("node2", "SPX-SSH-004"), ("node2", "4.1.9")}
    assert len(report["waiver_problems"]) == 1 and "SPX-SSH-004 for group workers" in report["waiver_problems"][0]
    assert "EXPIRED WAIVER" in result.stdout and "expired waiver" in result.stderr

    # A waiver naming a check or group that does not exist stops the run before anything is checked.
    waivers.write_text(f"- {{check: SPX-SSH-042, group: workers, reason: r, expires: {today}}}\n")
    result, report = comply(tmp_path / "bad", "--waivers", str(waivers))
    assert result.returncode == 2 and "unknown check id 'SPX-SSH-042'" in result.stderr and report == {}


def drift(result_file: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = dict(os.environ, SPECTRA_RESULT_FILE=str(result_file))
    result = spectra("drift", "inventories/lab.py", "deploys/site.py", env=env)
    return result, json.loads(result_file.read_text()) if result_file.exists() else {}


def test_drift_catches_a_manual_change_and_is_clean_after_a_converge(converged: Lab, tmp_path: Path) -> None:
    result, summary = drift(tmp_path / "before.json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # operations that run only after another one changed (etcd health, apiserver /readyz: their _if cannot be
    # decided in a dry run) are listed as conditional, never as drift
    changes = {
        host: [item for item in items if not item.get("conditional")] for host, items in summary["would_change"].items()
    }
    assert changes == {node.name: [] for node in converged.nodes}
    assert "no drift" in result.stderr

    node3 = converged.node("node3")
    try:
        converged.ssh(node3, "chmod 0644 /etc/ssh/sshd_config")
        result, summary = drift(tmp_path / "drift.json")
        assert result.returncode == 3, result.stderr[-3000:]
        changed = {
            host: [item for item in items if not item.get("conditional")]
            for host, items in summary["would_change"].items()
        }
        assert [host for host, items in changed.items() if items] == ["node3"]
        (change,) = changed["node3"]
        assert "File permissions" in change["operation"] and any(
            "chmod 600" in command and "/etc/ssh/sshd_config" in command for command in change["commands"]
        ), change
        assert f"DRIFT node3 | {change['operation']}" in result.stdout
        assert "drift per host: node1 0, node2 0, node3 1" in result.stdout
        # A dry run changes nothing.
        assert converged.ssh(node3, "stat -c %a /etc/ssh/sshd_config").strip() == "644"
    finally:
        converge()

    result, summary = drift(tmp_path / "after.json")
    assert result.returncode == 0, result.stdout[-3000:]
    assert converged.ssh(node3, "stat -c %a /etc/ssh/sshd_config").strip() == "600"


def test_host_keys_are_checked_strictly(converged: Lab, tmp_path: Path) -> None:
    """A host whose key is not in the inventory's known_hosts file is not checked: one connection error with
    its cause, no check results, and the run is not compliant."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result, report = comply(tmp_path / "r", "--limit", "node1", "--data", f"ssh_known_hosts_file={empty}")
    assert result.returncode == 1
    node1 = report["hosts"]["node1"]
    assert node1["status"] == "error" and node1["checks"] == {}, node1
    assert "host key unknown" in node1["error"], node1
    assert report["connection_errors"] == 1 and report["ok"] is False
