"""ssh-audit 3.9.0 (an auditor this project did not write) against every lab node after the node deploy:
no failure on Debian 12 (OpenSSH 9.2) nor Debian 13 (OpenSSH 10.0), and exactly the warnings listed in
ALLOWED_WARNINGS (a new one fails the test). The deploy still logs in afterwards (pyinfra: paramiko; the
tests: OpenSSH), and a second node deploy changes nothing.

ssh-audit runs with ``--skip-rate-test``: its connection-rate (DHEat) probe opens ~40 unauthenticated
connections, which is the firewall's per-source throttling to judge (not this test's), and on OpenSSH >= 9.8
it earns the lab host a PerSourcePenalties block of a few seconds, during which no deploy can log in.

Run with ``-s`` (or ``-rP``) to see the numbers per node.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import Lab, LabNode, spectra_deploy

pytestmark = pytest.mark.lab

SSH_AUDIT = str(Path(sys.executable).parent / "ssh-audit")
SSH_AUDIT_VERSION = "3.9.0"

# Every warning ssh-audit may report on a hardened node: (section, algorithm, text) -> why it stays.
ALLOWED_WARNINGS = {
    ("kex", "curve25519-sha256@libssh.org", "does not provide protection against post-quantum attacks"): (
        "paramiko 3.5 (pyinfra's SSH client) has no post-quantum key exchange; of the modern ones this is the "
        "only one it shares with the server, so without it the next deploy could not log in"
    ),
}
# What each release's OpenSSH is, and the key exchanges it must offer
OPENSSH = {"bookworm": "9.2", "trixie": "10.0"}
POST_QUANTUM = {
    "bookworm": ["sntrup761x25519-sha512@openssh.com"],
    "trixie": ["mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com"],
}
# ssh-audit's built-in hardening policies for each release, and the fields that (must) still differ, why:
POLICIES = {
    "bookworm": (
        "Hardened Debian 12 (version 3)",
        # Key exchanges: it wants the non-post-quantum curve25519-sha256/group16/group18/group-exchange (each a
        # warning) and sntrup761x25519-sha512, which OpenSSH 9.2 lacks. Host keys: it wants RSA next to
        # ed25519, exactly. MACs: it wants hmac-sha2-256-etm before -512-etm (its Debian 13 policy the reverse).
        {"Key exchanges", "Host keys", "MACs"},
    ),
    # Key exchanges: curve25519-sha256@libssh.org, for paramiko (the one allowed warning)
    "trixie": ("Hardened Debian 13 (version 1)", {"Key exchanges"}),
}

_ALGORITHM = re.compile(r"^\((kex|key|enc|mac)\) (\S+)(?: \([^)]*\))?\s+-- \[(fail|warn|info)\] ?(.*)$")
_MORE = re.compile(r"^\s+`- \[(fail|warn|info)\] ?(.*)$")


@dataclass(frozen=True)
class Finding:
    section: str  # kex, key, enc, mac
    algorithm: str
    level: str  # fail, warn, info
    text: str


@dataclass
class Audit:
    node: LabNode
    returncode: int
    output: str
    findings: list[Finding]

    def general(self, name: str) -> str:
        match = re.search(rf"^\(gen\) {name}: (.*)$", self.output, re.M)
        return match.group(1).strip() if match else ""

    def at(self, level: str) -> list[Finding]:
        return [finding for finding in self.findings if finding.level == level]

    def algorithms(self, section: str) -> list[str]:
        return list(dict.fromkeys(f.algorithm for f in self.findings if f.section == section))


def parse(output: str) -> list[Finding]:
    """ssh-audit's text report -> one Finding per note of each algorithm (its first line and each `- line)."""
    findings: list[Finding] = []
    current: tuple[str, str] | None = None
    for line in output.splitlines():
        if match := _ALGORITHM.match(line):
            current = (match.group(1), match.group(2))
            findings.append(Finding(*current, match.group(3), match.group(4).strip()))
        elif current is not None and (more := _MORE.match(line)):
            findings.append(Finding(*current, more.group(1), more.group(2).strip()))
        else:
            current = None
    return findings


def ssh_audit(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([SSH_AUDIT, *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.fail(f"{SSH_AUDIT} is missing: install the dev extras (pip install -e '.[dev]', .ci/setup)")


def audit(node: LabNode) -> Audit:
    # exit codes: 0 good, 2 warnings, 3 failures; 1 is a connection error
    result = ssh_audit("-n", "--skip-rate-test", "-t", "10", node.address)
    assert result.returncode in (0, 2, 3), f"{node.name}: ssh-audit exit {result.returncode}\n{result.stdout}"
    found = Audit(node, result.returncode, result.stdout, parse(result.stdout))
    assert found.algorithms("kex") and found.algorithms("key"), f"unparsed ssh-audit report:\n{result.stdout}"
    return found


@pytest.fixture(scope="module")
def node_deploy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """deploys/node.py on the lab (a converge on fresh nodes, a no-op on converged ones)."""
    result, summary = spectra_deploy(tmp_path_factory.mktemp("ssh-audit") / "node.json", "inventories/lab.py",
                                     "deploys/node.py")  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    return dict(summary)


@pytest.fixture(scope="module")
def audits(lab: Lab, node_deploy: dict[str, Any]) -> list[Audit]:
    suites = {node.suite for node in lab.nodes}
    assert {"bookworm", "trixie"} <= suites, f"the lab must have Debian 12 and 13 nodes, it has {sorted(suites)}"
    try:
        installed = importlib.metadata.version("ssh-audit")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    assert installed == SSH_AUDIT_VERSION, (
        f"ssh-audit {installed} installed: ALLOWED_WARNINGS is for {SSH_AUDIT_VERSION}"
    )
    found = [audit(node) for node in lab.nodes]
    for item in found:
        warnings = ", ".join(f"{w.algorithm} ({w.text})" for w in item.at("warn")) or "none"
        print(
            f"ssh-audit {SSH_AUDIT_VERSION} {item.node.name} ({item.node.suite}, {item.general('software')}): "
            f"{len(item.at('fail'))} fail, {len(item.at('warn'))} warn: {warnings}"
        )
    return found


def test_no_failure_and_only_the_listed_warnings_on_debian_12_and_13(audits: list[Audit]) -> None:
    for item in audits:
        assert item.at("fail") == [], f"{item.node.name}: {item.at('fail')}\n{item.output}"
        warnings = {(w.section, w.algorithm, w.text) for w in item.at("warn")}
        assert warnings == set(ALLOWED_WARNINGS), f"{item.node.name}: {warnings}\n{item.output}"
        assert item.returncode == 2  # warnings, no failure


def test_the_right_openssh_offers_its_post_quantum_exchanges_and_one_ed25519_host_key(audits: list[Audit]) -> None:
    for item in audits:
        suite = item.node.suite
        assert re.fullmatch(rf"OpenSSH {re.escape(OPENSSH[suite])}(p\d+)?", item.general("software")), item.general(
            "software"
        )
        kex = [name for name in item.algorithms("kex") if not name.startswith(("ext-info", "kex-strict"))]
        assert kex == [*POST_QUANTUM[suite], "curve25519-sha256@libssh.org"], (item.node.name, kex)
        assert item.algorithms("key") == ["ssh-ed25519"], item.node.name  # no ECDSA, no RSA
        assert item.general("compression") == "disabled", item.node.name


def test_built_in_hardening_policies_differ_only_where_listed(audits: list[Audit]) -> None:
    for item in audits:
        policy, differing = POLICIES[item.node.suite]
        result = ssh_audit("-j", "--skip-rate-test", "-t", "10", "-P", policy, item.node.address)
        report = json.loads(result.stdout)
        fields = {error["mismatched_field"] for error in report["errors"]}
        print(f"{item.node.name}: policy {policy!r}: {'passed' if report['passed'] else 'failed on'} {sorted(fields)}")
        assert fields == differing, (item.node.name, report["errors"])
        if item.node.suite == "trixie":
            (kex,) = report["errors"]
            assert set(kex["actual"]) - set(kex["expected_required"]) == {"curve25519-sha256@libssh.org"}
            assert set(kex["expected_required"]) <= set(kex["actual"])


def test_the_deploy_still_logs_in_and_a_second_run_changes_nothing(
    audits: list[Audit], lab: Lab, tmp_path: Path
) -> None:
    for node in lab.nodes:  # the system OpenSSH client, as the lab tests and operators use it
        assert lab.ssh(node, "echo ok").strip() == "ok"
    started = time.monotonic()
    result, summary = spectra_deploy(tmp_path / "again.json", "inventories/lab.py", "deploys/node.py")  # paramiko
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert summary["failed_hosts"] == []
    assert summary["changed_operations"] == {node.name: [] for node in lab.nodes}
    print(f"second node deploy: no change on {len(lab.nodes)} nodes in {time.monotonic() - started:.1f} s")
