"""Operator faults on real lab nodes (issue 13): a busy package manager and a silent host.

- The dpkg frontend lock held on a node (an fcntl lock, the kind unattended-upgrades and cloud-init take;
  ``flock(1)`` takes a different kind that apt does not see) while a node deploy must install a package: the
  deploy says it is waiting, then installs once the lock is free; held past a short ``apt_lock_timeout`` the
  deploy fails naming the lock and its holder, changes nothing more, and a re-run converges.
- ``spectra comply`` with one host whose ssh packets are dropped (not refused): one connection error for it
  with its cause, the normal results for the other host, exit 1.

Runs on its own lab too: ``SPECTRA_LAB_DIR=... SPECTRA_LAB_SUBNET=... SPECTRA_LAB_BRIDGE=...``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compliance.checks import check_ids
from tests.lab.conftest import LAB_DIR, REPO, SPECTRA, Lab, LabNode, spectra_deploy

pytestmark = pytest.mark.lab

NODE = "node1"
PACKAGE = "jq"  # small, not in the lab's base image, from the Debian mirror
LOCK = "/var/lib/dpkg/lock-frontend"
# Only the OS prerequisites run (their package list plus PACKAGE): the deploy is the production node.py.
OFF = ["ssh_hardening", "hardening_sysctl", "firewall", "audit", "auto_updates", "container_runtime", "node_exporter",
       "certificate_metrics", "fluentd", "file_permissions", "chrony"]  # fmt: skip
NODE_DEPLOY = [
    "inventories/lab.py", "deploys/node.py", "--limit", NODE,
    *[arg for name in OFF for arg in ("--data", f"{name}_enabled=False")],
    "--data", json.dumps(["procps", "curl", "ca-certificates", PACKAGE]).join(["os_packages=", ""]),
]  # fmt: skip
# Holds LOCK as apt does (fcntl, exclusive) for argv[1] seconds.
HOLDER = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640); "
    "fcntl.lockf(fd, fcntl.LOCK_EX); time.sleep(float(sys.argv[2]))"
)


def hold_lock(lab: Lab, node: LabNode, seconds: int) -> int:
    """Start a process on ``node`` that holds LOCK for ``seconds``; its pid once the lock is taken."""
    started = lab.ssh(node, f"nohup python3 -c {shlex.quote(HOLDER)} {LOCK} {seconds} >/dev/null 2>&1 & echo $!")
    pid = int(started.strip())
    for _ in range(50):
        if re.search(rf"\bPOSIX\s+ADVISORY\s+WRITE\s+{pid}\b", lab.ssh(node, "cat /proc/locks")):
            return pid
        time.sleep(0.1)
    raise AssertionError(f"{node.name}: the lock holder {pid} did not take {LOCK}")


def release(lab: Lab, node: LabNode, pid: int) -> None:
    lab.ssh(node, f"kill {pid} 2>/dev/null; true")


def installed(lab: Lab, node: LabNode) -> bool:
    return (
        lab.ssh(node, f"dpkg-query -W -f '${{Status}}' {PACKAGE} 2>/dev/null; true").strip() == "install ok installed"
    )


@pytest.fixture
def node(lab: Lab) -> Iterator[LabNode]:
    """NODE without PACKAGE, so the deploy must install it."""
    target = lab.node(NODE)
    lab.ssh(target, f"dpkg --purge {PACKAGE} >/dev/null 2>&1; true")
    assert not installed(lab, target)
    yield target


def test_a_held_dpkg_lock_is_waited_for_then_the_package_is_installed(lab: Lab, node: LabNode, tmp_path: Path) -> None:
    holder = hold_lock(lab, node, 20)
    try:
        started = time.monotonic()
        result, summary = spectra_deploy(tmp_path / "wait.json", *NODE_DEPLOY, timeout=300)
        took = time.monotonic() - started
    finally:
        release(lab, node, holder)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # said in pyinfra's normal output (no -v needed), once, when the operation starts waiting
    notice = f"waiting up to 300 s (apt_lock_timeout) for {LOCK}, held by process {holder} (python3)"
    assert notice in output, output[-6000:]
    assert took >= 15, f"the deploy took {took:.1f} s: it cannot have waited for the 20 s lock"
    assert installed(lab, node)
    print(f"lock held 20 s: deploy took {took:.1f} s; said: {notice}")
    # converged: the same deploy again changes nothing and runs no apt
    again, summary = spectra_deploy(tmp_path / "again.json", *NODE_DEPLOY, timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert summary["changed_operations"].get(NODE, []) == [], summary["changed_operations"]


def test_a_lock_held_past_apt_lock_timeout_fails_clearly_and_a_rerun_converges(
    lab: Lab, node: LabNode, tmp_path: Path
) -> None:
    holder = hold_lock(lab, node, 120)
    try:
        started = time.monotonic()
        result, summary = spectra_deploy(
            tmp_path / "fail.json", *NODE_DEPLOY, "--data", "apt_lock_timeout=5", timeout=300
        )
        took = time.monotonic() - started
    finally:
        release(lab, node, holder)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-6000:]
    assert NODE in summary["failed_hosts"], summary
    message = f"spectra: {LOCK} is still held by process {holder} (python3) after 5 s (apt_lock_timeout): giving up"
    assert message in output, output[-6000:]
    assert f"spectra: waiting for {LOCK}, held by process {holder} (python3) (5 s left of apt_lock_timeout=5)" in output
    assert took < 60, f"the deploy took {took:.1f} s with apt_lock_timeout=5"
    assert not installed(lab, node)
    print(f"lock held past apt_lock_timeout=5: deploy failed (exit {result.returncode}) after {took:.1f} s")
    # the lock is free again: the same deploy converges
    again, _ = spectra_deploy(tmp_path / "rerun.json", *NODE_DEPLOY, timeout=300)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert installed(lab, node)


@pytest.fixture
def silent_node3(lab: Lab) -> Iterator[LabNode]:
    """node3 drops every packet to its ssh port (no answer, no refusal), in its own network namespace."""
    node3 = lab.node("node3")
    bridge = json.loads((LAB_DIR / "state.json").read_text())["bridge"]
    rule = ["INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"]
    netns = ["ip", "netns", "exec", f"{bridge}-{node3.name}", "iptables"]
    subprocess.run([*netns, "-I", *rule], check=True, capture_output=True, timeout=30)
    try:
        yield node3
    finally:
        subprocess.run([*netns, "-D", *rule], check=True, capture_output=True, timeout=30)


def test_comply_reports_a_silent_host_as_one_error_and_checks_the_others(
    lab: Lab, silent_node3: LabNode, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    started = time.monotonic()
    result = subprocess.run(
        [SPECTRA, "comply", "inventories/lab.py", "--limit", "node2", "--limit", "node3", "--report-dir",
         str(reports), "--connect-timeout", "5"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-6000:]
    assert re.search(r"ERROR node3: cannot connect: timed out after 5 s \(no answer", result.stdout), output[-4000:]
    assert "FAIL node3" not in result.stdout

    data: dict[str, Any] = json.loads((reports / "compliance.json").read_text())
    assert data["ok"] is False and data["connection_errors"] == 1
    bad = data["hosts"]["node3"]
    assert bad["status"] == "error" and bad["checks"] == {}
    assert bad["error"].startswith("timed out after 5 s"), bad
    good = data["hosts"]["node2"]
    assert set(good["checks"]) == set(check_ids())
    assert not any("cannot reach" in check["reason"] for check in good["checks"].values())
    assert good["summary"]["pass"] > 0

    suites = {suite.get("name"): suite for suite in ET.parse(reports / "junit.xml").getroot()}
    cases = list(suites["node3"])
    assert len(cases) == 1 and cases[0].find("error") is not None and cases[0].find("failure") is None
    assert len(list(suites["node2"])) == len(check_ids())
    print(f"comply with node3 silent: exit {result.returncode} in {took:.1f} s; node2 {good['summary']}")
