"""The cluster PKI on real lab nodes: every host gets the files of its roles, chains verify with openssl on the
node, SANs name the node, TLS handshakes succeed with the issued pairs, a second run changes nothing.

Files go under /etc/kubernetes/spectra-pki-test (removed at the end), with a PKI directory of the test's own,
so the test never meets or leaves a CA that a real cluster deploy on the same lab would have to replace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from facts.certificates import Certificates
from tests.lab.conftest import REPO, Lab, LabNode

pytestmark = pytest.mark.lab

SPECTRA = str(Path(sys.executable).parent / "spectra")
ROOT = "/etc/kubernetes/spectra-pki-test"
PKI = f"{ROOT}/pki"


def deploy(pki_dir: Path, result_file: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    data = {"pki_enabled": "True", "pki_dir": str(pki_dir), "kubernetes_pki_dir": PKI, "kubernetes_config_dir": ROOT}
    args = [arg for key, value in data.items() for arg in ("--data", f"{key}={value}")]
    env = dict(os.environ, SPECTRA_RESULT_FILE=str(result_file))
    result = subprocess.run(
        [SPECTRA, "deploy", "inventories/lab.py", "deploys/certs.py", *args],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    return result, json.loads(result_file.read_text()) if result_file.exists() else {}


@pytest.fixture(scope="module")
def installed(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("pki")
    for node in lab.nodes:  # a run interrupted earlier may have left its files (and its CA) behind
        lab.ssh(node, f"rm -rf {ROOT}")
    try:
        result, summary = deploy(tmp / "pki", tmp / "first.json")
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        assert summary["failed_hosts"] == []
        yield tmp / "pki"
    finally:
        for node in lab.nodes:
            lab.ssh(node, f"rm -rf {ROOT}", check=False)


def control_planes(lab: Lab) -> list[LabNode]:
    return [node for node in lab.nodes if "control_plane" in node.roles]


def test_second_run_changes_nothing(installed: Path, lab: Lab, tmp_path: Path) -> None:
    result, summary = deploy(installed, tmp_path / "second.json")
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(summary["changed_operations"]) == sorted(node.name for node in lab.nodes)
    assert all(not changed for changed in summary["changed_operations"].values()), summary["changed_operations"]


def test_chains_verify_on_the_nodes(installed: Path, lab: Lab) -> None:
    for node in lab.nodes:
        checks = [f"openssl verify -CAfile {PKI}/ca.crt -purpose sslserver {PKI}/kubelet/kubelet.crt"]
        if "control_plane" in node.roles:
            checks += [
                f"openssl verify -CAfile {PKI}/ca.crt -purpose sslserver {PKI}/apiserver.crt",
                f"openssl verify -CAfile {PKI}/ca.crt -purpose sslclient {PKI}/apiserver-kubelet-client.crt",
                f"openssl verify -CAfile {PKI}/etcd/ca.crt -purpose sslclient {PKI}/apiserver-etcd-client.crt",
                f"openssl verify -CAfile {PKI}/front-proxy-ca.crt -purpose sslclient {PKI}/front-proxy-client.crt",
            ]
        if "etcd" in node.roles:
            checks += [
                f"openssl verify -CAfile {PKI}/etcd/ca.crt -purpose {purpose} {PKI}/etcd/{name}.crt"
                for name in ("server", "peer")
                for purpose in ("sslserver", "sslclient")
            ]
            checks.append(
                f"openssl verify -CAfile {PKI}/etcd/ca.crt -purpose sslclient {PKI}/etcd/healthcheck-client.crt"
            )  # noqa: E501
        output = lab.ssh(node, " && ".join(checks))
        assert output.count(": OK") == len(checks), output
        if "control_plane" in node.roles:  # the service-account key pair: the public half of the private one
            pair = lab.ssh(node, f"openssl pkey -in {PKI}/sa.key -pubout | cmp - {PKI}/sa.pub && echo same")
            assert pair.strip() == "same"
        if "etcd" in node.roles:  # a certificate of one CA does not verify against another
            mixed = lab.ssh(node, f"openssl verify -CAfile {PKI}/ca.crt {PKI}/etcd/server.crt", check=False)
            assert ": OK" not in mixed


def test_sans_name_the_node(installed: Path, lab: Lab) -> None:
    for node in lab.nodes:
        text = lab.ssh(node, f"openssl x509 -noout -ext subjectAltName -in {PKI}/kubelet/kubelet.crt")
        assert f"DNS:{node.name}" in text and f"IP Address:{node.address}" in text, text
    for node in control_planes(lab):
        text = lab.ssh(node, f"openssl x509 -noout -ext subjectAltName -in {PKI}/apiserver.crt")
        for plane in control_planes(lab):
            assert f"DNS:{plane.name}" in text and f"IP Address:{plane.address}" in text, text
        for san in ("DNS:kubernetes.default.svc.cluster.local", "IP Address:10.96.0.1", "IP Address:127.0.0.1"):
            assert san in text, text


def test_tls_handshakes_with_the_issued_pairs(installed: Path, lab: Lab) -> None:
    """apiserver and etcd server certificates serve TLS to clients holding the issued client certificates."""
    node = next(n for n in control_planes(lab) if "etcd" in n.roles)
    script = f"""
set -e
cd {PKI}
handshake() {{  # port, server cert, server key, CA, client cert, client key, name check
  timeout 20 openssl s_server -quiet -naccept 1 -accept "127.0.0.1:$1" -cert "$2" -key "$3" -CAfile "$4" \
    -Verify 1 -verify_return_error </dev/null >/dev/null 2>&1 &
  sleep 1
  echo | timeout 10 openssl s_client -connect "127.0.0.1:$1" -CAfile "$4" -cert "$5" -key "$6" $7 \
    -verify_return_error -brief 2>&1
  wait
}}
handshake 16443 apiserver.crt apiserver.key ca.crt apiserver-kubelet-client.crt apiserver-kubelet-client.key \
  "-verify_hostname kubernetes.default.svc"
handshake 12379 etcd/server.crt etcd/server.key etcd/ca.crt apiserver-etcd-client.crt apiserver-etcd-client.key \
  "-verify_ip 127.0.0.1"
handshake 12380 etcd/peer.crt etcd/peer.key etcd/ca.crt etcd/peer.crt etcd/peer.key "-verify_hostname {node.name}"
"""
    output = lab.ssh(node, script, timeout=120)
    assert output.count("Verification: OK") == 3, output


def test_modes_and_owners(installed: Path, lab: Lab) -> None:
    for node in lab.nodes:
        listing = lab.ssh(node, f"find {ROOT} -printf '%y %m %u:%g %p\\n'")
        for line in listing.splitlines():
            kind, mode, owner, path = line.split(" ", 3)
            assert owner == "root:root", line
            if kind == "d":
                assert mode == ("755" if path == ROOT else "700"), line
            else:  # keys, kubeconfigs and certificates alike (pki_cert_mode 0600: CIS 1.1.20, 4.1.7)
                assert mode == "600", line


def test_certificates_fact_on_a_node(installed: Path, lab: Lab) -> None:
    node = control_planes(lab)[0]
    paths = [f"{PKI}/apiserver.crt", f"{PKI}/ca.crt", f"{PKI}/absent.crt"]
    command = Certificates().command(paths).get_raw_value()
    states = Certificates().process(lab.ssh(node, command).splitlines())
    local = x509.load_pem_x509_certificate((installed / "apiserver.crt").read_bytes())
    assert states[paths[0]]["not_after"] == local.not_valid_after_utc.isoformat()
    assert states[paths[0]]["subject"] == "CN=kube-apiserver" and states[paths[1]]["is_ca"]
    assert states[paths[2]] == {"exists": False}
