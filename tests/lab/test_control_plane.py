"""The Kubernetes control plane on a real lab node: the lab's own build of Kubernetes v1.36.3 (from the Go module
proxy, published on the lab mirror in the upstream layout), installed by the production components with the
cluster PKI's certificates and a TLS etcd member.

On the lab's control-plane host (node1: control_plane + etcd), one converge of
``tests/lab/deploys/control_plane.py`` (PKI, etcd, control plane) must give a ready apiserver on the node's
address (never on 127.0.0.1:6443, the node-local balancer's), admin.conf able to act (the RBAC bootstrap ran
as a one-shot super-admin that is not left on the host), Secrets encrypted in etcd, an audit log, and a
second converge that changes nothing; a changed apiserver setting restarts the apiserver only.

No balancer runs in this test: the kubeconfigs point straight at the node's apiserver
(``pki_kubeconfig_server``). The PKI files go to a directory of the test's own, made from a PKI directory
of the test's own, so no CA is left where a real cluster deploy would find it. At the end every service is
stopped and disabled, and units, data, logs and the test's certificates are removed (the binaries stay, as
the etcd test leaves etcd's): node1 is left as the other lab tests expect it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.conftest import REPO, Lab, LabNode

pytestmark = pytest.mark.lab

SPECTRA = str(Path(sys.executable).parent / "spectra")
ROOT = "/etc/kubernetes/spectra-cp-test"
PKI = f"{ROOT}/pki"
ADMIN = f"/usr/local/bin/kubectl --kubeconfig {ROOT}/admin.conf --request-timeout=10s"
ETCDCTL = (
    f"/usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert={PKI}/etcd/ca.crt "
    f"--cert={PKI}/etcd/healthcheck-client.crt --key={PKI}/etcd/healthcheck-client.key"
)
SERVICES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
CLEANUP = (
    "systemctl disable --now kube-apiserver.service kube-controller-manager.service kube-scheduler.service "
    "etcd-snapshot.timer etcd.service 2>/dev/null; "
    "rm -f /etc/systemd/system/kube-apiserver.service /etc/systemd/system/kube-controller-manager.service "
    "/etc/systemd/system/kube-scheduler.service /etc/systemd/system/etcd.service "
    "/etc/systemd/system/etcd-snapshot.service /etc/systemd/system/etcd-snapshot.timer /usr/local/sbin/etcd-snapshot "
    "/var/lib/spectra-infra/kube-apiserver-credentials.sha256 "
    "/var/lib/spectra-infra/kube-controller-manager-credentials.sha256 "
    "/var/lib/spectra-infra/kube-scheduler-credentials.sha256 /var/lib/spectra-infra/etcd-credentials.sha256; "
    "systemctl daemon-reload; systemctl reset-failed 2>/dev/null; "
    f"rm -rf /var/lib/etcd /var/backups/etcd /var/log/kubernetes /run/spectra-rbac-bootstrap {ROOT}"
)
BUILD_TIMEOUT = 3 * 3600  # a cold build of the Kubernetes binaries (cached afterwards)


def control_plane_host(lab: Lab) -> LabNode:
    return next(node for node in lab.nodes if {"control_plane", "etcd"} <= set(node.roles))


def converge(
    node: LabNode, pki_dir: Path, result_file: Path, **extra: str
) -> tuple[subprocess.CompletedProcess[str], Any]:
    data = {
        "pki_enabled": "True",
        "pki_dir": str(pki_dir),
        "pki_remote_dir": PKI,
        "pki_kubeconfig_dir": ROOT,
        # no node-local balancer in this test: the kubeconfigs name this node's apiserver
        "pki_kubeconfig_server": f"https://{node.address}:6443",
        "etcd_enabled": "True",
        "etcd_ca_file": f"{PKI}/etcd/ca.crt",
        "etcd_cert_file": f"{PKI}/etcd/server.crt",
        "etcd_key_file": f"{PKI}/etcd/server.key",
        "etcd_peer_cert_file": f"{PKI}/etcd/peer.crt",
        "etcd_peer_key_file": f"{PKI}/etcd/peer.key",
        "etcd_healthcheck_cert_file": f"{PKI}/etcd/healthcheck-client.crt",
        "etcd_healthcheck_key_file": f"{PKI}/etcd/healthcheck-client.key",
        "control_plane_enabled": "True",
        "control_plane_pki_dir": PKI,
        "control_plane_config_dir": ROOT,
        **extra,
    }
    args = [arg for key, value in data.items() for arg in ("--data", f"{key}={value}")]
    env = dict(os.environ, SPECTRA_RESULT_FILE=str(result_file))
    result = subprocess.run(
        [SPECTRA, "deploy", "inventories/lab.py", "tests/lab/deploys/control_plane.py", "--limit", node.name, *args],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    return result, json.loads(result_file.read_text()) if result_file.exists() else {}


def main_pids(lab: Lab, node: LabNode) -> dict[str, str]:
    return {
        service: lab.ssh(node, f"systemctl show -p MainPID --value {service}.service").strip() for service in SERVICES
    }


@pytest.fixture(scope="module")
def control_plane(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabNode, Path]]:
    node = control_plane_host(lab)
    tmp = tmp_path_factory.mktemp("control-plane")
    # the binaries on the lab mirror and their sums in the lab's table (quick when the cache holds them)
    build = subprocess.run(
        [sys.executable, "-m", "lab.kubernetes_build", "build"],
        cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    assert build.returncode == 0, f"the Kubernetes build failed:\n{build.stdout}\n{build.stderr}"
    lab.ssh(node, CLEANUP, check=False)  # a run interrupted earlier may have left its control plane behind
    try:
        started = time.monotonic()
        result, summary = converge(node, tmp / "pki", tmp / "first.json")
        print(f"first converge (PKI, etcd, control plane): {time.monotonic() - started:.1f} s")
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
        assert summary["failed_hosts"] == []
        yield node, tmp / "pki"
    finally:
        lab.ssh(node, CLEANUP, check=False)


def test_services_run_and_the_apiserver_is_ready(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = control_plane
    for service in SERVICES:
        assert lab.ssh(node, f"systemctl is-active {service}.service").strip() == "active", service
    assert lab.ssh(node, f"{ADMIN} get --raw /readyz").strip() == "ok"
    assert "Kubernetes v1.36.3" in lab.ssh(node, "/usr/local/bin/kube-apiserver --version")
    # the apiserver listens on the node's address only: 127.0.0.1:6443 is the node-local balancer's
    listening = lab.ssh(node, "ss -Hltn 'sport = :6443'").split()
    assert f"{node.address}:6443" in listening and "127.0.0.1:6443" not in listening and "*:6443" not in listening
    # controller manager and scheduler: loopback only, and each holds its leader lease
    assert "127.0.0.1:10257" in lab.ssh(node, "ss -Hltn 'sport = :10257'")
    assert "127.0.0.1:10259" in lab.ssh(node, "ss -Hltn 'sport = :10259'")
    leases = lab.ssh(node, f"{ADMIN} -n kube-system get leases -o name")
    assert "lease.coordination.k8s.io/kube-controller-manager" in leases
    assert "lease.coordination.k8s.io/kube-scheduler" in leases


def test_anonymous_requests_reach_health_endpoints_only(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = control_plane
    base = f"https://{node.address}:6443"
    assert lab.ssh(node, f"curl -sS --cacert {PKI}/ca.crt {base}/readyz").strip() == "ok"
    for path in ("/version", "/api", "/api/v1/namespaces/kube-system/secrets"):
        code = lab.ssh(node, f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {PKI}/ca.crt {base}{path}")
        assert code == "401", (path, code)


def test_rbac_bootstrap_gives_admin_its_rights(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = control_plane
    assert lab.ssh(node, f"{ADMIN} auth can-i '*' '*'").strip() == "yes"
    bindings = lab.ssh(node, f"{ADMIN} get clusterrolebindings -o name")
    assert "clusterrolebinding.rbac.authorization.k8s.io/kubeadm:cluster-admins" in bindings
    assert "kubeadm:node-autoapprove-certificate-rotation" in bindings
    # the break-glass credential did not stay on the host
    assert lab.ssh(node, "test -e /run/spectra-rbac-bootstrap && echo left || echo gone").strip() == "gone"
    assert lab.ssh(node, "grep -rl kubernetes-super-admin /etc/kubernetes /run 2>/dev/null", check=False) == ""


def test_secrets_are_encrypted_in_etcd_and_audited(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, pki_dir = control_plane
    value = f"plain-{time.time_ns()}"
    lab.ssh(node, f"{ADMIN} -n default delete secret x --ignore-not-found")
    lab.ssh(node, f"{ADMIN} -n default create secret generic x --from-literal=k={value}")
    read = f"{ETCDCTL} get /registry/secrets/default/x --print-value-only"
    assert lab.ssh(node, f"{read} | head -c 26") == "k8s:enc:secretbox:v1:key1:"
    assert lab.ssh(node, f"{read} | grep -ac {value}", check=False).strip() == "0"
    assert lab.ssh(node, f"{ADMIN} -n default get secret x -o jsonpath='{{.data.k}}' | base64 -d") == value
    # the key is the one in the PKI directory on the machine running the deploys
    key = (pki_dir / "secrets-encryption.key").read_text().strip()
    assert (pki_dir / "secrets-encryption.key").stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(lab.ssh(node, f"cat {ROOT}/encryption-config.yaml"))
    assert config["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"] == key
    assert len(base64.b64decode(key)) == 32
    # the audit log has the request, at Metadata level: never the Secret's value
    time.sleep(2)  # the audit backend writes in batches
    log = lab.ssh(node, "cat /var/log/kubernetes/audit/audit.log")
    created = [
        event for event in map(json.loads, log.splitlines())
        if event.get("verb") == "create" and event.get("objectRef", {}).get("resource") == "secrets"
        and event.get("objectRef", {}).get("name") == "x"
    ]  # fmt: skip
    assert created and created[-1]["level"] == "Metadata" and created[-1]["user"]["username"] == "kubernetes-admin"
    assert value not in log
    assert lab.ssh(node, "stat -c '%a %U' /var/log/kubernetes/audit").split() == ["700", "root"]
    modes = lab.ssh(node, f"stat -c '%a %n' {ROOT}/encryption-config.yaml {ROOT}/audit-policy.yaml")
    assert [line.split()[0] for line in modes.splitlines()] == ["600", "600"]


def test_second_converge_changes_nothing(control_plane: tuple[LabNode, Path], lab: Lab, tmp_path: Path) -> None:
    node, pki_dir = control_plane
    pids = main_pids(lab, node)
    started = time.monotonic()
    result, summary = converge(node, pki_dir, tmp_path / "second.json")
    print(f"second converge: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert summary["changed_operations"] == {node.name: []}, summary["changed_operations"]
    assert main_pids(lab, node) == pids


def test_changed_apiserver_setting_restarts_the_apiserver_only(
    control_plane: tuple[LabNode, Path], lab: Lab, tmp_path: Path
) -> None:
    node, pki_dir = control_plane
    pids = main_pids(lab, node)
    started = time.monotonic()
    result, summary = converge(node, pki_dir, tmp_path / "changed.json", control_plane_audit_log_maxage="20")
    print(f"converge restarting the apiserver (with the /readyz wait): {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    changed = [name.split(" | ", 1)[1] for name in summary["changed_operations"][node.name]]
    assert changed == [
        "kube-apiserver systemd unit",
        "kube-apiserver running and enabled",
        "kube-apiserver ready (/readyz)",
    ], changed
    # Only the apiserver was restarted by the deploy. (With one apiserver, the controller manager and the
    # scheduler may then restart on their own: they exit when they cannot renew their leader lease while it is
    # down, and systemd starts them again. Their PIDs say nothing about the deploy here.)
    assert main_pids(lab, node)["kube-apiserver"] != pids["kube-apiserver"]
    assert "--audit-log-maxage=20" in lab.ssh(node, "cat /etc/systemd/system/kube-apiserver.service")
    assert lab.ssh(node, f"{ADMIN} get --raw /readyz").strip() == "ok"
