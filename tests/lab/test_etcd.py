"""etcd of the lab cluster: the lab's own build of etcd 3.6.16 (from its Go modules, published on the lab
mirror like a GitHub release), installed by the production component with the cluster PKI's certificates.

On the lab's etcd host (node1: control_plane + etcd), a converge of ``deploys/cluster.py`` (a no-op when an
earlier test built the cluster) must give a healthy TLS member; a key is written, the snapshot service the
timer runs takes a snapshot, ``etcdutl snapshot restore`` puts it in a scratch data directory, a throwaway
etcd on other ports serves it and gives the key back; a reissued serving certificate restarts the member;
a second converge changes nothing. The cluster is left running (scratch directories are removed).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import ETCDCTL, LAB_DIR, PKI, Lab, LabNode, spectra_deploy

pytestmark = pytest.mark.lab

SNAPSHOTS = "/var/backups/etcd"
RESTORE_DIR = "/var/tmp/etcd-restore-test"
CLEANUP = (
    "systemctl stop etcd-restore-test.service 2>/dev/null; systemctl reset-failed etcd-restore-test.service "
    f"2>/dev/null; rm -rf {RESTORE_DIR}"
)


def etcd_host(lab: Lab) -> LabNode:
    return next(node for node in lab.nodes if "etcd" in node.roles)


def converge(node: LabNode, result_file: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    return spectra_deploy(result_file, "inventories/lab.py", "deploys/cluster.py", "--limit", node.name)


@pytest.fixture(scope="module")
def member(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabNode, Path]]:
    node = etcd_host(lab)
    tmp = tmp_path_factory.mktemp("etcd")
    lab.ssh(node, CLEANUP, check=False)  # a run interrupted earlier may have left its scratch member behind
    try:
        result, summary = converge(node, tmp / "first.json")
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
        assert summary["failed_hosts"] == []
        yield node, LAB_DIR / "pki"  # the lab cluster's PKI directory (group_data/lab.py pki_dir)
    finally:
        lab.ssh(node, CLEANUP, check=False)


def test_member_is_healthy_over_tls(member: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = member
    assert lab.ssh(node, "systemctl is-active etcd.service").strip() == "active"
    out = lab.ssh(node, f"{ETCDCTL} endpoint health")
    assert "is healthy" in out, out
    # the member listens on its own address too, and refuses a client without a certificate
    lab.ssh(node, f"{ETCDCTL.replace('127.0.0.1', node.address)} endpoint health")
    refused = lab.ssh(
        node,
        f"/usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert={PKI}/etcd/ca.crt "
        "--command-timeout=3s endpoint health 2>&1; echo rc=$?",
        check=False,
    )
    assert "rc=0" not in refused, refused
    assert lab.ssh(node, "stat -c '%a %U' /var/lib/etcd").split() == ["700", "etcd"]
    assert lab.ssh(node, "ps -o user= -C etcd").split() == ["etcd"]
    assert "etcd Version: 3.6.16" in lab.ssh(node, "/usr/local/bin/etcd --version")


def test_snapshot_restores_a_key(member: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = member
    value = f"written-{time.time_ns()}"
    lab.ssh(node, f"{ETCDCTL} put /spectra/test {value}")
    assert lab.ssh(node, "systemctl is-enabled etcd-snapshot.timer").strip() == "enabled"
    lab.ssh(node, "systemctl start etcd-snapshot.service")
    snapshot = lab.ssh(node, f"ls -1 {SNAPSHOTS} | sort | tail -n 1").strip()
    assert snapshot.startswith("etcd-snapshot-") and snapshot.endswith(".db"), snapshot
    lab.ssh(
        node,
        f"rm -rf {RESTORE_DIR} && /usr/local/bin/etcdutl snapshot restore {SNAPSHOTS}/{snapshot} "
        f"--data-dir {RESTORE_DIR} --name restore --initial-cluster restore=http://127.0.0.1:23800 "
        "--initial-advertise-peer-urls http://127.0.0.1:23800",
    )
    lab.ssh(
        node,
        f"systemd-run --unit etcd-restore-test /usr/local/bin/etcd --name restore --data-dir {RESTORE_DIR} "
        "--listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 "
        "--listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 "
        "--initial-cluster restore=http://127.0.0.1:23800",
    )
    try:
        read = (
            "for i in $(seq 30); do /usr/local/bin/etcdctl --endpoints=http://127.0.0.1:23790 "
            "--command-timeout=2s get /spectra/test --print-value-only && exit 0; sleep 1; done; exit 1"
        )
        assert lab.ssh(node, read).strip() == value
    finally:
        lab.ssh(node, f"systemctl stop etcd-restore-test.service; rm -rf {RESTORE_DIR}", check=False)


def test_snapshot_retention(member: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = member
    # older snapshots than the newest 7 (etcd_snapshot_keep) go after the next snapshot
    lab.ssh(node, f"for d in 01 02 03 04 05 06 07 08; do touch {SNAPSHOTS}/etcd-snapshot-200001${{d}}T000000Z.db; done")
    lab.ssh(node, "systemctl start etcd-snapshot.service")
    names = lab.ssh(node, f"ls -1 {SNAPSHOTS}").split()
    assert len(names) == 7, names
    assert "etcd-snapshot-20000101T000000Z.db" not in names and "etcd-snapshot-20000108T000000Z.db" in names


def test_reissued_certificate_restarts_member(member: tuple[LabNode, Path], lab: Lab, tmp_path: Path) -> None:
    node, pki_dir = member
    pid = lab.ssh(node, "systemctl show -p MainPID --value etcd.service").strip()
    # the PKI directory loses this member's serving pair: the PKI issues a new one and installs it, and etcd
    # (which gets its TLS files from systemd only at start) is restarted in the same run
    for name in ("server.crt", "server.key"):
        (pki_dir / "etcd" / node.name / name).unlink()
    result, summary = converge(node, tmp_path / "reissue.json")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    changed = [name for name in summary["changed_operations"][node.name] if name.startswith("etcd |")]
    assert changed == ["etcd | etcd restarted on new TLS files", "etcd | etcd endpoint health"], changed
    assert lab.ssh(node, "systemctl show -p MainPID --value etcd.service").strip() != pid
    served = lab.ssh(
        node,
        f"openssl s_client -connect 127.0.0.1:2379 -CAfile {PKI}/etcd/ca.crt -cert {PKI}/etcd/healthcheck-client.crt "
        f"-key {PKI}/etcd/healthcheck-client.key </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
    )
    installed = lab.ssh(node, f"openssl x509 -in {PKI}/etcd/server.crt -noout -fingerprint -sha256")
    assert served.strip() == installed.strip() != ""


def test_second_converge_changes_nothing(member: tuple[LabNode, Path], lab: Lab, tmp_path: Path) -> None:
    node, _ = member
    pid = lab.ssh(node, "systemctl show -p MainPID --value etcd.service").strip()
    result, summary = converge(node, tmp_path / "second.json")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert summary["changed_operations"] == {node.name: []}, summary["changed_operations"]
    assert lab.ssh(node, "systemctl show -p MainPID --value etcd.service").strip() == pid
