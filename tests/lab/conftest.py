"""Lab fixtures: real booted Debian nodes. A lab that cannot start fails the tests; it never skips them.

By default the session starts from fresh nodes (`down`, then `up`). Set SPECTRA_LAB_REUSE=1 to keep a lab
that is already up, for quicker iterations while developing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_DIR = Path(os.environ.get("SPECTRA_LAB_DIR", "/var/lib/spectra-lab"))
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
SPECTRA = str(Path(sys.executable).parent / "spectra")
# The cluster's PKI on the nodes, and etcdctl as the health-check client (tests on the lab's etcd)
PKI = "/etc/kubernetes/pki"
ETCDCTL = (
    f"/usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert={PKI}/etcd/ca.crt "
    f"--cert={PKI}/etcd/healthcheck-client.crt --key={PKI}/etcd/healthcheck-client.key"
)
# The default layout: Debian 12 on node1 and node2, Debian 13 on node3, so lab tests cover both releases.
LAB_UP_ARGS = ("up", "--nodes", "3")


@dataclass
class LabNode:
    name: str
    address: str
    roles: list[str]
    zone: str
    suite: str


@dataclass
class Lab:
    nodes: list[LabNode]
    ssh_key: str
    known_hosts: str
    mirror_url: str

    def ssh_args(self, node: LabNode, command: str) -> list[str]:
        return [
            "ssh", "-i", self.ssh_key, "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", f"root@{node.address}", command,
        ]  # fmt: skip

    def ssh(self, node: LabNode, command: str, check: bool = True, timeout: int = 600) -> str:
        result = subprocess.run(self.ssh_args(node, command), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{node.name}: `{command}` exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)


def lab_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def spectra_deploy(
    result_file: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 1800
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """``spectra deploy ARGS``; its summary (pyinfra's own per-operation results) from ``result_file``."""
    environment = dict(env if env is not None else os.environ, SPECTRA_RESULT_FILE=str(result_file))
    result = subprocess.run(
        [SPECTRA, "deploy", *args], cwd=REPO, capture_output=True, text=True, env=environment, timeout=timeout
    )
    return result, json.loads(result_file.read_text()) if result_file.exists() else {}


def pyinfra(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYINFRA, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def read_lab() -> Lab:
    data = json.loads((LAB_DIR / "inventory.json").read_text())
    return Lab(
        nodes=[LabNode(**{k: n[k] for k in ("name", "address", "roles", "zone", "suite")}) for n in data["nodes"]],
        ssh_key=data["ssh_key"],
        known_hosts=data["known_hosts"],
        mirror_url=data["mirror_url"],
    )


def reused_network() -> list[str]:
    """With SPECTRA_LAB_REUSE=1, the subnet and bridge of the lab that is up (a second lab beside the default
    one, started with --subnet/--bridge): `up` refuses other ones."""
    try:
        state = json.loads((LAB_DIR / "state.json").read_text())
    except (OSError, ValueError):
        return []
    if os.environ.get("SPECTRA_LAB_REUSE") != "1" or not state.get("subnet") or not state.get("bridge"):
        return []
    return ["--subnet", str(state["subnet"]), "--bridge", str(state["bridge"])]


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run them as root (CI does)")
    if os.environ.get("SPECTRA_LAB_REUSE") != "1":
        down = lab_cli("down")
        if down.returncode != 0:
            pytest.fail(f"`python -m lab down` failed before the session:\n{down.stderr}")
    up = lab_cli(*LAB_UP_ARGS, *reused_network())
    if up.returncode != 0:
        pytest.fail(f"the lab did not start (`python -m lab up` exit {up.returncode}):\n{up.stderr}{up.stdout}")
    yield read_lab()


@pytest.fixture(scope="module")
def converged(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The site converged, and its summary: a no-op on a converged lab, a converge on a fresh one."""
    result, summary = spectra_deploy(tmp_path_factory.mktemp("site") / "site.json", "inventories/lab.py",
                                     "deploys/site.py")  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    return dict(summary)
