"""The lab itself: three booted Debian nodes that reach the package mirror and run containers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lab.images.build import build_binary, docker_archive
from tests.lab.conftest import LAB_DIR, LAB_UP_ARGS, Lab, lab_cli, pyinfra

pytestmark = pytest.mark.lab


def test_three_nodes_answer_pyinfra_with_distinct_hostnames(lab: Lab) -> None:
    result = pyinfra("inventories/lab.py", "exec", "--", "hostname")
    assert result.returncode == 0, result.stderr + result.stdout
    names = set(re.findall(r"^\[(node\d+)\] (node\d+)$", result.stdout + result.stderr, re.MULTILINE))
    assert names == {("node1", "node1"), ("node2", "node2"), ("node3", "node3")}


def test_nodes_run_debian_12_and_13(lab: Lab) -> None:
    versions = {node.name: lab.ssh(node, ". /etc/os-release; echo $VERSION_ID").strip() for node in lab.nodes}
    assert versions == {"node1": "12", "node2": "12", "node3": "13"}


def test_nodes_boot_systemd_as_pid1(lab: Lab) -> None:
    for node in lab.nodes:
        assert lab.ssh(node, "cat /proc/1/comm").strip() == "systemd"
        assert lab.ssh(node, "systemctl is-system-running", check=False).strip() in ("running", "degraded")


def test_every_node_reaches_the_debian_mirror(lab: Lab) -> None:
    for node in lab.nodes:
        output = lab.ssh(node, "apt-get update 2>&1; echo exit=$?")
        assert "exit=0" in output and "Err:" not in output, output


def test_nodes_reach_the_artifact_mirror(lab: Lab) -> None:
    for node in lab.nodes:
        body = lab.ssh(node, f"curl -fsS {shlex.quote(lab.mirror_url)}/README.txt")
        assert "Spectra lab artifact mirror" in body


def test_containerd_in_a_node_runs_a_locally_built_image(lab: Lab, tmp_path: Path) -> None:
    binary = build_binary("hello", tmp_path)
    archive = docker_archive(binary, "docker.io/spectra/hello:lab", "/hello", tmp_path / "hello.tar")
    node = lab.node("node2")
    lab.ssh(node, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd runc >/dev/null")
    scp = subprocess.run(
        ["scp", "-q", "-i", lab.ssh_key, "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "BatchMode=yes",
         str(archive), f"root@{node.address}:/tmp/hello.tar"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    lab.ssh(node, "ctr images import /tmp/hello.tar")
    output = lab.ssh(node, "ctr run --rm docker.io/spectra/hello:lab lab-hello-test")
    assert output.strip() == "hello from a Spectra lab container on node2"


def test_a_second_up_changes_nothing(lab: Lab) -> None:
    before = (LAB_DIR / "state.json").read_text()
    result = lab_cli(*LAB_UP_ARGS)
    assert result.returncode == 0, result.stderr
    assert (LAB_DIR / "state.json").read_text() == before


def netns_pids(node: str) -> list[str]:
    bridge = os.environ.get("SPECTRA_LAB_BRIDGE", "splab0")
    return subprocess.run(["ip", "netns", "pids", f"{bridge}-{node}"], capture_output=True, text=True).stdout.split()


def test_a_power_cut_stops_every_process_of_the_node(lab: Lab) -> None:
    node = lab.node("node2")
    assert netns_pids("node2") != []
    assert lab_cli("stop", "node2", "--hard").returncode == 0
    assert netns_pids("node2") == []
    assert subprocess.run(lab.ssh_args(node, "true"), capture_output=True).returncode != 0
    started = lab_cli("start", "node2")
    assert started.returncode == 0, started.stderr
    assert lab.ssh(node, "hostname").strip() == "node2"


def test_stop_and_start_power_cycle_one_node(lab: Lab) -> None:
    node = lab.node("node3")
    uptime_marker = lab.ssh(node, "systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target")
    assert lab_cli("stop", "node3").returncode == 0
    assert subprocess.run(lab.ssh_args(node, "true"), capture_output=True).returncode != 0
    assert netns_pids("node3") == []
    assert re.search(r"^node3 .* stopped$", lab_cli("status").stdout, re.MULTILINE)
    started = lab_cli("start", "node3")
    assert started.returncode == 0, started.stderr
    # boot_id belongs to the one shared kernel; systemd's own timestamps show the node booted again.
    assert lab.ssh(node, "systemctl is-system-running", check=False).strip() in ("running", "degraded")
    assert lab.ssh(node, "systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target") != (uptime_marker)


def test_lab_commands_refuse_bad_input_with_clear_errors(lab: Lab) -> None:
    result = lab_cli("stop", "no-such-node")
    assert result.returncode == 1 and "no node named 'no-such-node'" in result.stderr
    result = lab_cli("up", "--nodes", "3", "--suite", "sid")
    assert result.returncode == 1 and "suite 'sid' is not one of" in result.stderr


@pytest.mark.lab_teardown
def test_down_leaves_nothing_behind(lab: Lab) -> None:
    from lab.config import LabConfig
    from lab.lab import Lab as LabControl

    machine_ids = [node["machine_id"] for node in json.loads((LAB_DIR / "state.json").read_text())["nodes"]]
    result = lab_cli("down")
    assert result.returncode == 0, result.stderr
    assert LabControl(LabConfig(nodes=[])).leftovers(machine_ids) == []
    assert not (LAB_DIR / "nodes").exists()
    assert subprocess.run([sys.executable, "-m", "lab", "status"], capture_output=True).returncode == 1
