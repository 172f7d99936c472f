"""deploys/site.py on fresh lab nodes (Debian 12 and 13): converge, converge again with zero changes, host
state checked by the testinfra suite in compliance/node, survive a power cycle, refuse a bad checksum."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import LAB_DIR, REPO, Lab, lab_cli

pytestmark = pytest.mark.lab

SPECTRA = str(Path(sys.executable).parent / "spectra")


def spectra_deploy(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result_file = tmp_path / f"result-{len(list(tmp_path.iterdir()))}.json"
    env = dict(os.environ, SPECTRA_RESULT_FILE=str(result_file))
    result = subprocess.run(
        [SPECTRA, "deploy", "inventories/lab.py", *args], cwd=REPO, capture_output=True, text=True, env=env,
        timeout=1800,
    )  # fmt: skip
    summary = json.loads(result_file.read_text()) if result_file.exists() else {}
    return result, summary


def host_state_suite(lab: Lab) -> subprocess.CompletedProcess[str]:
    hosts = ",".join(f"ssh://{node.name}" for node in lab.nodes)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "compliance/node",
         f"--hosts={hosts}", f"--ssh-config={LAB_DIR / 'ssh' / 'config'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def converged(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("converge")
    result, summary = spectra_deploy(tmp, "deploys/site.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return summary


def test_first_converge_changes_every_node(converged: dict[str, Any]) -> None:
    assert sorted(converged["activated_hosts"]) == ["node1", "node2", "node3"]
    assert converged["failed_hosts"] == []
    if os.environ.get("SPECTRA_LAB_REUSE") != "1":  # fresh nodes: everything is to do
        for host, changed in converged["changed_operations"].items():
            assert len(changed) > 10, f"{host} changed only {changed}"


def test_second_run_reports_zero_changes(converged: dict[str, Any], tmp_path: Path) -> None:
    result, summary = spectra_deploy(tmp_path, "deploys/site.py")
    assert result.returncode == 0, result.stderr[-4000:]
    assert summary["changed_operations"] == {"node1": [], "node2": [], "node3": []}


def test_host_state_suite_passes(converged: dict[str, Any], lab: Lab) -> None:
    suite = host_state_suite(lab)
    assert suite.returncode == 0, suite.stdout[-6000:]
    assert " passed" in suite.stdout and "failed" not in suite.stdout


def test_node_exporter_metrics_are_scraped_from_the_lab_host(converged: dict[str, Any], lab: Lab) -> None:
    for node in lab.nodes:
        body = urllib.request.urlopen(f"http://{node.address}:9100/metrics", timeout=10).read().decode()
        assert "node_exporter_build_info{" in body and "node_cpu_seconds_total" in body


def test_containerd_pulls_upstream_names_through_the_lab_registry_and_runs_them(
    converged: dict[str, Any], lab: Lab
) -> None:
    # Images are referenced by their upstream names; containerd's hosts.toml sends the pull to the lab
    # registry (no upstream registry answers here). hosts.toml is what the CRI plugin, hence kubelet, uses.
    hosts_dir = "--hosts-dir /etc/containerd/certs.d"
    for node in lab.nodes:
        lab.ssh(node, f"ctr -n spectra-test images pull {hosts_dir} docker.io/spectra/hello:lab >/dev/null")
        output = lab.ssh(node, f"ctr -n spectra-test run --rm docker.io/spectra/hello:lab hello-{node.name}")
        assert output.strip() == f"hello from a Spectra lab container on {node.name}"
        pulled = lab.ssh(node, f"ctr -n spectra-test images pull {hosts_dir} registry.k8s.io/pause:3.10")
        assert "done" in pulled or "elapsed" in pulled, pulled
        # The sandbox image is the pause program the lab built: it keeps running until told to stop.
        lab.ssh(node, "ctr -n spectra-test run -d registry.k8s.io/pause:3.10 pause-test")
        assert "RUNNING" in lab.ssh(node, "ctr -n spectra-test tasks ls")
        lab.ssh(
            node,
            "ctr -n spectra-test tasks kill -s SIGTERM pause-test; sleep 1; "
            "ctr -n spectra-test tasks delete pause-test; ctr -n spectra-test containers delete pause-test",
        )
        assert "pause-test" not in lab.ssh(node, "ctr -n spectra-test containers ls")


def test_a_power_cycled_node_still_passes_the_suite(converged: dict[str, Any], lab: Lab) -> None:
    restarted = lab_cli("restart", "node2", "--hard")
    assert restarted.returncode == 0, restarted.stderr
    suite = host_state_suite(lab)
    assert suite.returncode == 0, suite.stdout[-6000:]


def test_a_checksum_mismatch_installs_nothing_and_fails(converged: dict[str, Any], lab: Lab, tmp_path: Path) -> None:
    node = lab.node("node3")
    # node3 as if fresh for the node exporter, and the mirror serving a tampered tarball.
    lab.ssh(node, "systemctl stop node_exporter && rm -f /usr/local/bin/node_exporter "
                  "/var/lib/spectra-infra/downloads/usr_local_bin_node_exporter.sha256")  # fmt: skip
    release = next((LAB_DIR / "mirror" / "prometheus" / "node_exporter" / "releases" / "download").iterdir())
    tarball = next(release.glob("*.linux-amd64.tar.gz"))
    original = tmp_path / "original.tar.gz"
    shutil.copy2(tarball, original)
    try:
        tarball.write_bytes(original.read_bytes() + b"tampered")
        result, summary = spectra_deploy(tmp_path, "deploys/node.py", "--limit", "node3")
        assert result.returncode != 0
        assert summary["failed_hosts"] == ["node3"] or summary["hosts_with_errors"] == ["node3"]
        assert "sha256 mismatch" in result.stdout + result.stderr
        leftovers = lab.ssh(node, "ls -a /usr/local/bin")
        assert "node_exporter" not in leftovers, leftovers
    finally:
        shutil.copy2(original, tarball)
    result, summary = spectra_deploy(tmp_path, "deploys/node.py", "--limit", "node3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert lab.ssh(node, "systemctl is-active node_exporter").strip() == "active"


def test_rollout_converges_zone_by_zone_and_stops_at_the_first_failing_zone(
    converged: dict[str, Any], lab: Lab
) -> None:
    ok = subprocess.run(
        [SPECTRA, "rollout", "inventories/lab.py", "deploys/node.py", "--by-zone"],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-3000:]
    limits = [line.split("--limit ")[1].split()[0] for line in ok.stderr.splitlines() if "--limit az_" in line]
    assert limits == ["az_lab_a", "az_lab_b", "az_lab_c"]

    # node2 (zone lab-b) loses power: its zone fails and the zone after it is never started.
    assert lab_cli("stop", "node2", "--hard").returncode == 0
    try:
        failed = subprocess.run(
            [SPECTRA, "rollout", "inventories/lab.py", "deploys/node.py", "--by-zone", "--zones", "lab-b,lab-c"],
            cwd=REPO, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        assert failed.returncode != 0
        assert "--limit az_lab_c" not in failed.stderr
        summary = failed.stdout + failed.stderr
        assert "az_lab_b" in summary and "failed" in summary
    finally:
        assert lab_cli("start", "node2").returncode == 0
