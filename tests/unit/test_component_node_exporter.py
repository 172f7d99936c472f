from __future__ import annotations

import hashlib

import pytest
from pyinfra.api import DeployError

from deploys.components.node_exporter import COMPONENT, node_exporter
from deploys.operations.download import stamp_path
from facts.files import FileStates
from facts.platform import Platform
from tests.unit.component_facts import BOOKWORM, fresh
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

UNIT = "/etc/systemd/system/.node_exporter.service.spectra-new"
AMD64 = "6809dd0b3ec45fd6e992c19071d6b5253aed3ead7bf0686885a51d85c6643c66"


def test_fresh_upstream_install() -> None:
    result = run_deploy(node_exporter, facts=fresh())
    assert "useradd --system" in result.op("System user").commands[0]
    download = result.op("Install node_exporter 1.8.2").commands[0]
    assert (
        "https://github.com/prometheus/node_exporter/releases/download/v1.8.2/node_exporter-1.8.2.linux-amd64.tar.gz"
        f" /usr/local/bin/node_exporter {AMD64}" in download
    )
    assert "node_exporter-1.8.2.linux-amd64/node_exporter" in download
    unit = result.uploads[UNIT]
    for line in ["ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=read-only"]:
        assert line in unit
    assert "--web.listen-address=0.0.0.0:9100" in unit
    assert "--collector.textfile.directory=/var/lib/node_exporter/textfile_collector" in unit
    assert "web.config" not in unit
    assert result.op("Textfile collector").commands[0] == "mkdir -p /var/lib/node_exporter/textfile_collector"
    assert result.op("Node exporter running").commands[0] == "systemctl daemon-reload"


def test_arm64_sum() -> None:
    result = run_deploy(node_exporter, facts=fresh({Platform: {**BOOKWORM, "arch": "arm64"}}))
    assert "627382b9723c642411c33f48861134ebe893e70a63bcc8b3fc0619cd0bfac4be" in result.commands[1]


def test_missing_sum_refused() -> None:
    with pytest.raises(DeployError, match="no sha256 for node_exporter 1.9.0 on amd64"):
        run_deploy(node_exporter, facts=fresh(), data={"node_exporter_version": "1.9.0"})


def test_mirror_base_url_and_listen_address() -> None:
    data = {
        "node_exporter_download_base_url": "http://198.18.0.1:8080/ne/",
        "node_exporter_listen_address": "10.0.0.5:9100",
    }
    result = run_deploy(node_exporter, facts=fresh(), data=data)
    assert "http://198.18.0.1:8080/ne/v1.8.2/node_exporter-1.8.2.linux-amd64.tar.gz" in result.commands[1]
    assert "--web.listen-address=10.0.0.5:9100" in result.uploads[UNIT]


def test_tls_and_basic_auth() -> None:
    data = {
        "node_exporter_tls_cert": "CERT",
        "node_exporter_tls_key": "KEY",
        "node_exporter_basic_auth_users": {"prom": "$2y$10$abc"},
    }
    result = run_deploy(node_exporter, facts=fresh(), data=data)
    web = result.uploads["/etc/node_exporter/.web.yml.spectra-new"]
    assert "cert_file: /etc/node_exporter/tls.crt" in web and '"prom": "$2y$10$abc"' in web
    assert result.uploads["/etc/node_exporter/.tls.key.spectra-new"] == "KEY"
    assert "chmod 640" in result.op("TLS key").commands[-2]
    assert "--web.config.file=/etc/node_exporter/web.yml" in result.uploads[UNIT]


def test_tls_needs_both() -> None:
    with pytest.raises(DeployError, match="go together"):
        run_component(COMPONENT, facts=fresh(), data={"node_exporter_tls_cert": "CERT"})


def test_package_method() -> None:
    result = run_deploy(node_exporter, facts=fresh(), data={"node_exporter_install_method": "package"})
    assert result.op("Install node exporter package").commands[-1].endswith("prometheus-node-exporter")
    assert not result.has_op("Install node_exporter 1.8.2")
    assert "prometheus-node-exporter.service" in result.op("Node exporter running").commands[0]


def test_installed_is_noop() -> None:
    binary = "/usr/local/bin/node_exporter"
    first = run_deploy(node_exporter, facts=fresh())

    sums = {}
    for temp, text in first.uploads.items():
        directory, name = temp.rsplit("/", 1)
        sums[f"{directory}/{name[1:].removesuffix('.spectra-new')}"] = hashlib.sha256(text.encode()).hexdigest()
    states = {
        binary: {"type": "file", "mode": "755", "user": "root", "group": "root", "sha256": None, "size": 15679650,
                 "mtime": "0.000000000", "ctime": "1795633234.198913322", "inode": "1081656"},
        stamp_path(binary): {"type": "file", "mode": "644", "user": "root", "group": "root", "sha256": "f" * 64,
                             "content": f"{AMD64} {'e' * 64} 15679650 0.000000000 1795633234.198913322 1081656\n"},
        "/etc/passwd": {"type": "file", "mode": "644", "user": "root", "group": "root", "sha256": "1" * 64,
                        "content": "root:x:0:0::/root:/bin/sh\nnode_exporter:x:999:999::/nonexistent:/bin/false\n"},
        "/var/lib/node_exporter/textfile_collector": {"type": "directory", "mode": "755", "user": "node_exporter",
                                                      "group": "node_exporter"},
        "/etc/systemd/system/node_exporter.service": {"type": "file", "mode": "644", "user": "root", "group": "root",
                                                      "sha256": sums["/etc/systemd/system/node_exporter.service"]},
    }  # fmt: skip
    unit = {"id": "node_exporter.service", "load": "loaded", "active": "active", "sub": "running", "enabled": "enabled"}
    reads = []

    def files(paths: list[str], **kwargs: object) -> dict:
        reads.append(kwargs)
        return {p: states.get(p) for p in paths}

    facts = fresh(
        {
            FileStates: files,
            "facts.systemd.SystemdUnits": {"node_exporter.service": unit},
        }
    )
    second = run_deploy(node_exporter, facts=facts)
    assert second.commands == []
    assert len(second.fact_reads) == 1  # platform, files and units in one command
    assert reads[0]["stat_only"] == [binary]  # the binary is not hashed: its stamp and stat decide


def test_verify_binary_hashes_it() -> None:
    reads = []

    def files(paths: list[str], **kwargs: object) -> dict:
        reads.append(kwargs)
        return {p: None for p in paths}

    run_deploy(node_exporter, facts=fresh({FileStates: files}), data={"node_exporter_verify_binary": True})
    assert reads[0]["stat_only"] == []
