"""A port has one owner: moving the node exporter to :9200 moves the exporter, the firewall rule and the
compliance expectation together, on a real node (and moving it back restores all three)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import REPO, SPECTRA, Lab, LabNode, spectra_deploy

pytestmark = pytest.mark.lab

MOVED = "node_exporter_listen_address=0.0.0.0:9200"


def deploy_node(tmp_path: Path, name: str, *data: str) -> dict[str, Any]:
    args = ["inventories/lab.py", "deploys/node.py", "--limit", "node2"]
    for item in data:
        args += ["--data", item]
    result, summary = spectra_deploy(tmp_path / f"{name}.json", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return summary


def metrics(node: LabNode, port: int) -> str:
    return urllib.request.urlopen(f"http://{node.address}:{port}/metrics", timeout=10).read().decode()


def closed(node: LabNode, port: int) -> bool:
    """Nothing answers: refused (no listener) or dropped (firewall)."""
    try:
        with socket.create_connection((node.address, port), timeout=3):
            return False
    except OSError:
        return True


def comply_node2(tmp_path: Path, *data: str) -> dict[str, Any]:
    args = ["comply", "inventories/lab.py", "--limit", "node2", "--report-dir", str(tmp_path), "-n", "0"]
    for item in data:
        args += ["--data", item]
    subprocess.run([SPECTRA, *args], cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    return json.loads((tmp_path / "compliance.json").read_text())["hosts"]["node2"]["checks"]


def test_node_exporter_port_moves_exporter_firewall_and_compliance_together(lab: Lab, tmp_path: Path) -> None:
    node = lab.node("node2")
    deploy_node(tmp_path, "before")
    assert "node_exporter_build_info{" in metrics(node, 9100)
    try:
        deploy_node(tmp_path, "moved", MOVED)
        assert "node_exporter_build_info{" in metrics(node, 9200)  # from the lab host: a monitoring address
        assert closed(node, 9100)
        table = lab.ssh(node, "nft list table inet spectra")
        assert "tcp dport 9200 ip saddr @monitoring_v4 accept" in table
        assert "dport 9100" not in table
        checks = comply_node2(tmp_path / "moved-report", MOVED)
        for check_id in ("SPX-SVC-010", "SPX-SVC-011"):
            assert checks[check_id]["status"] == "pass", (check_id, checks[check_id])
        # compliance told the old port expects node_exporter on 9100 and finds nothing there
        stale = comply_node2(tmp_path / "stale-report")
        assert stale["SPX-SVC-011"]["status"] == "fail" and "9100" in str(stale["SPX-SVC-011"])
    finally:
        deploy_node(tmp_path, "restored")
    assert "node_exporter_build_info{" in metrics(node, 9100)
    assert closed(node, 9200)
