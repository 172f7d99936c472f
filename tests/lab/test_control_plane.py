"""The control plane of the lab cluster: the lab's own build of Kubernetes v1.36.3 (from the Go module proxy,
published on the lab mirror in the upstream layout), installed by the production component on the lab's
control-plane host (node1), as ``deploys/cluster.py`` runs it (test_node_converge built the cluster with
``deploys/site.py``; the converge here is then a no-op).

Checked on the host: the apiserver listens on the node's address only (127.0.0.1:6443 is the node-local
balancer's), controller manager and scheduler on loopback and leading; anonymous requests reach the health
paths only; the RBAC bootstrap gave admin.conf its rights and left no super-admin credential behind; Secrets
are encrypted in etcd with the key kept in the lab's PKI directory, requests are audited at Metadata level; a
second converge changes nothing; a changed apiserver setting restarts the apiserver only (then set back).
The cluster is left running for the tests after this one; the test's Secret is deleted.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.conftest import ETCDCTL, LAB_DIR, PKI, REPO, Lab, LabNode, spectra_deploy

pytestmark = pytest.mark.lab

CONFIG = "/etc/kubernetes"
ADMIN = f"/usr/local/bin/kubectl --kubeconfig {CONFIG}/admin.conf --request-timeout=10s"
SERVICES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
SECRET = "spectra-control-plane-test"
BUILD_TIMEOUT = 3 * 3600  # a cold build of the Kubernetes binaries (cached afterwards)


def control_plane_host(lab: Lab) -> LabNode:
    return next(node for node in lab.nodes if "control_plane" in node.roles)


def converge(node: LabNode, result_file: Path, **data: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    args = [arg for key, value in data.items() for arg in ("--data", f"{key}={value}")]
    return spectra_deploy(result_file, "inventories/lab.py", "deploys/cluster.py", "--limit", node.name, *args)


def control_plane_changes(summary: Any, node: LabNode) -> list[str]:
    prefix = "Kubernetes control plane | "
    return [name.removeprefix(prefix) for name in summary["changed_operations"][node.name] if name.startswith(prefix)]


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
    started = time.monotonic()
    result, summary = converge(node, tmp / "first.json")
    print(f"cluster converge of {node.name}: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert summary["failed_hosts"] == []
    try:
        yield node, LAB_DIR / "pki"  # the lab cluster's PKI directory (group_data/lab.py pki_dir)
    finally:
        lab.ssh(node, f"{ADMIN} -n default delete secret {SECRET} --ignore-not-found", check=False)


def test_services_run_and_the_apiserver_is_ready(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = control_plane
    for service in SERVICES:
        assert lab.ssh(node, f"systemctl is-active {service}.service").strip() == "active", service
    assert lab.ssh(node, f"{ADMIN} get --raw /readyz").strip() == "ok"
    direct = f"{ADMIN} --server https://{node.address}:6443 get --raw /readyz"
    assert lab.ssh(node, direct).strip() == "ok"
    assert "Kubernetes v1.36.3" in lab.ssh(node, "/usr/local/bin/kube-apiserver --version")
    # the apiserver listens on the node's address only: 127.0.0.1:6443 is the node-local balancer's
    sockets = [line.split() for line in lab.ssh(node, "ss -Hltnp 'sport = :6443'").splitlines()]
    apiserver = sorted(fields[3] for fields in sockets if '"kube-apiserver"' in fields[-1])
    assert apiserver == [f"{node.address}:6443"], sockets
    # controller manager and scheduler: on the node address (Prometheus scrapes them; control_plane_metrics_bind
    # "auto"), and each holds its leader lease
    assert f"{node.address}:10257" in lab.ssh(node, "ss -Hltn 'sport = :10257'")
    assert f"{node.address}:10259" in lab.ssh(node, "ss -Hltn 'sport = :10259'")
    leases = lab.ssh(node, f"{ADMIN} -n kube-system get leases -o name")
    assert "lease.coordination.k8s.io/kube-controller-manager" in leases
    assert "lease.coordination.k8s.io/kube-scheduler" in leases


def test_anonymous_requests_reach_health_endpoints_only(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = control_plane
    base = f"https://{node.address}:6443"
    for path in ("/readyz", "/livez", "/healthz"):
        assert lab.ssh(node, f"curl -sS --cacert {PKI}/ca.crt {base}{path}").strip() == "ok", path
    for path in ("/version", "/api", "/api/v1/namespaces/kube-system/secrets", "/metrics"):
        code = lab.ssh(node, f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {PKI}/ca.crt {base}{path}")
        assert code == "401", (path, code)


def test_apiserver_reaches_every_kubelet_verifying_its_certificate(
    control_plane: tuple[LabNode, Path], lab: Lab
) -> None:
    node, _ = control_plane
    # through the apiserver: its kubelet client certificate, and each kubelet's serving certificate checked
    # against the cluster CA (--kubelet-certificate-authority) at the node's InternalIP
    for other in lab.nodes:
        assert lab.ssh(node, f"{ADMIN} get --raw /api/v1/nodes/{other.name}/proxy/healthz").strip() == "ok", other


def test_rbac_bootstrap_gives_admin_its_rights(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, _ = control_plane
    assert lab.ssh(node, f"{ADMIN} auth can-i '*' '*'").strip() == "yes"
    bindings = lab.ssh(node, f"{ADMIN} get clusterrolebindings -o name")
    assert "clusterrolebinding.rbac.authorization.k8s.io/kubeadm:cluster-admins" in bindings
    assert "kubeadm:node-autoapprove-certificate-rotation" in bindings
    # the break-glass credential (system:masters) did not stay on the host
    assert lab.ssh(node, "test -e /run/spectra-rbac-bootstrap && echo left || echo gone").strip() == "gone"
    assert lab.ssh(node, f"grep -rl kubernetes-super-admin {CONFIG} /tmp /var/tmp /root", check=False) == ""


def test_secrets_are_encrypted_in_etcd_and_audited(control_plane: tuple[LabNode, Path], lab: Lab) -> None:
    node, pki_dir = control_plane
    value = f"plain-{time.time_ns()}"
    lab.ssh(node, f"{ADMIN} -n default delete secret {SECRET} --ignore-not-found")
    lab.ssh(node, f"{ADMIN} -n default create secret generic {SECRET} --from-literal=k={value}")
    read = f"{ETCDCTL} get /registry/secrets/default/{SECRET} --print-value-only"
    assert lab.ssh(node, f"{read} | head -c 26") == "k8s:enc:secretbox:v1:key1:"
    assert lab.ssh(node, f"{read} | grep -ac {value}", check=False).strip() == "0"
    assert lab.ssh(node, f"{ADMIN} -n default get secret {SECRET} -o jsonpath='{{.data.k}}' | base64 -d") == value
    # the key is the one in the PKI directory on the machine running the deploys
    key_file = pki_dir / "secrets-encryption.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    config = yaml.safe_load(lab.ssh(node, f"cat {CONFIG}/encryption-config.yaml"))
    assert config["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"] == key
    assert len(base64.b64decode(key)) == 32
    # the audit log has the request, at Metadata level: never the Secret's value
    created: list[dict[str, Any]] = []
    for _ in range(20):  # the audit backend writes in batches
        log = lab.ssh(node, "cat /var/log/kubernetes/audit/audit.log")
        created = [
            event for event in map(json.loads, log.splitlines())
            if event.get("verb") == "create" and event.get("objectRef", {}).get("resource") == "secrets"
            and event.get("objectRef", {}).get("name") == SECRET
        ]  # fmt: skip
        if created:
            break
        time.sleep(1)
    assert created and created[-1]["level"] == "Metadata" and created[-1]["user"]["username"] == "kubernetes-admin"
    assert value not in log
    assert lab.ssh(node, "stat -c '%a %U' /var/log/kubernetes/audit").split() == ["700", "root"]
    modes = lab.ssh(node, f"stat -c '%a' {CONFIG}/encryption-config.yaml {CONFIG}/audit-policy.yaml")
    assert modes.split() == ["600", "600"]


def test_second_converge_changes_nothing(control_plane: tuple[LabNode, Path], lab: Lab, tmp_path: Path) -> None:
    node, _ = control_plane
    pids = main_pids(lab, node)
    started = time.monotonic()
    result, summary = converge(node, tmp_path / "second.json")
    print(f"second converge: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert summary["changed_operations"] == {node.name: []}, summary["changed_operations"]
    assert main_pids(lab, node) == pids


def test_changed_apiserver_setting_restarts_the_apiserver_only(
    control_plane: tuple[LabNode, Path], lab: Lab, tmp_path: Path
) -> None:
    node, _ = control_plane
    pid = main_pids(lab, node)["kube-apiserver"]
    started = time.monotonic()
    result, summary = converge(node, tmp_path / "changed.json", control_plane_audit_log_maxage="20")
    print(f"converge restarting the apiserver (with the /readyz wait): {time.monotonic() - started:.1f} s")
    try:
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
        assert control_plane_changes(summary, node) == [
            "kube-apiserver systemd unit",
            "kube-apiserver running and enabled",
            "kube-apiserver ready (/readyz)",
        ], summary["changed_operations"]
        # Only the apiserver was restarted by the deploy. (With one apiserver, the controller manager and the
        # scheduler may then restart on their own: they exit when they cannot renew their leader lease while
        # it is down, and systemd starts them again. Their PIDs say nothing about the deploy here.)
        assert main_pids(lab, node)["kube-apiserver"] != pid
        assert "--audit-log-maxage=20" in lab.ssh(node, "cat /etc/systemd/system/kube-apiserver.service")
        assert lab.ssh(node, f"{ADMIN} get --raw /readyz").strip() == "ok"
    finally:
        # back to the cluster's own settings for the tests after this one
        back, back_summary = converge(node, tmp_path / "back.json")
        assert back.returncode == 0, back.stdout[-6000:] + back.stderr[-4000:]
        assert "kube-apiserver running and enabled" in control_plane_changes(back_summary, node)


def test_lost_encryption_key_stops_the_run(control_plane: tuple[LabNode, Path], lab: Lab, tmp_path: Path) -> None:
    node, pki_dir = control_plane
    key_file = pki_dir / "secrets-encryption.key"
    saved = key_file.read_bytes()
    config = lab.ssh(node, f"sha256sum {CONFIG}/encryption-config.yaml")
    key_file.unlink()  # as if the PKI directory had been restored without it: a new key would be made
    try:
        result, summary = converge(node, tmp_path / "lost.json")
        assert result.returncode != 0
        assert "encryption-config.yaml holds another key than" in result.stdout + result.stderr
        # stopped while preparing: no operation ran
        assert summary["stage"] == "Prepare" and summary["changed_operations"] == {node.name: []}, summary
        assert lab.ssh(node, f"sha256sum {CONFIG}/encryption-config.yaml") == config  # nothing was replaced
    finally:
        key_file.write_bytes(saved)
        key_file.chmod(0o600)
    assert lab.ssh(node, f"{ADMIN} get --raw /readyz").strip() == "ok"
