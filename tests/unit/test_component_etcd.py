from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyinfra.api import DeployError, OperationError

from deploys.components import etcd as etcd_module
from deploys.components.etcd import etcd, initial_cluster
from deploys.operations.download import stamp_path
from facts.files import FileStates
from facts.platform import Platform
from facts.systemd import SystemdUnits
from tests.unit.component_facts import BOOKWORM, RUNNING, fresh
from tests.unit.pyinfra_harness import HOSTNAME, run_deploy

pytestmark = pytest.mark.unit

SUM = "a" * 64
ARM = "b" * 64
UNIT = "/etc/systemd/system/.etcd.service.spectra-new"
SNAP_SERVICE = "/etc/systemd/system/.etcd-snapshot.service.spectra-new"
SNAP_TIMER = "/etc/systemd/system/.etcd-snapshot.timer.spectra-new"
SNAP_SCRIPT = "/usr/local/sbin/.etcd-snapshot.spectra-new"
BASE = {
    "etcd_enabled": True,
    "roles": ["control_plane", "etcd"],
    "ssh_hostname": "10.0.0.11",
    "etcd_sha256": {"3.6.16": {"amd64": SUM, "arm64": ARM}},
}


@dataclass
class Member:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


class FakeInventory:
    def __init__(self, members: list[Member]) -> None:
        self.members = members

    def get_group(self, name: str, default: Any = None) -> list[Member]:
        return self.members if name == "etcd" else (default or [])


@pytest.fixture
def one_member(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_module, "inventory", FakeInventory([Member(HOSTNAME, {"ssh_hostname": "10.0.0.11"})]))


@pytest.fixture
def three_members(monkeypatch: pytest.MonkeyPatch) -> None:
    members = [
        Member("etcd-c", {"ssh_hostname": "10.0.0.13"}),
        Member(HOSTNAME, {"ssh_hostname": "10.0.0.11"}),
        Member("etcd-b", {"ssh_hostname": "bastion.example", "private_ip": "10.0.0.12"}),
    ]
    monkeypatch.setattr(etcd_module, "inventory", FakeInventory(members))


PKI = "/etc/kubernetes/pki/etcd"
CREDENTIALS = [f"{PKI}/{name}" for name in ("ca.crt", "peer.crt", "peer.key", "server.crt", "server.key")]
ROOT_FILE = {"type": "file", "mode": "600", "user": "root", "group": "root"}
# the PKI's files on the host (installed by deploys/components/pki.py), each with its own sum
CERTS: dict[str, Any] = {
    path: {**ROOT_FILE, "sha256": hashlib.sha256(path.encode()).hexdigest()} for path in CREDENTIALS
}
STAMP_TEXT = "".join(f"{CERTS[path]['sha256']}  {path}\n" for path in sorted(CREDENTIALS))


def with_certs(paths: list[str], **_: Any) -> dict[str, Any]:
    return {path: CERTS.get(path) for path in paths}


def deploy(data: dict[str, Any] | None = None, facts: dict[Any, Any] | None = None) -> Any:
    return run_deploy(etcd, facts=fresh({FileStates: with_certs, **(facts or {})}), data={**BASE, **(data or {})})


def test_disabled_does_nothing(one_member: None) -> None:
    data = {"roles": ["etcd"], "ssh_hostname": "10.0.0.11", "etcd_enabled": False}
    result = run_deploy(etcd, facts=fresh(), data=data)
    assert result.commands == [] and result.fact_reads == []


def test_not_an_etcd_host(one_member: None) -> None:
    result = deploy({"roles": ["workers"]})
    assert result.commands == [] and result.fact_reads == []


def test_fresh_install_commands(one_member: None) -> None:
    result = deploy()
    assert "useradd --system" in result.op("System user etcd").commands[0]
    url = "https://github.com/etcd-io/etcd/releases/download/v3.6.16/etcd-v3.6.16-linux-amd64.tar.gz"
    for command in ("etcd", "etcdctl", "etcdutl"):
        download = result.op(f"Install {command} 3.6.16").commands[0]
        assert f"{url} /usr/local/bin/{command} {SUM}" in download
        assert f"etcd-v3.6.16-linux-amd64/{command}" in download
    data_dir = result.op("etcd data directory").commands
    assert data_dir == ["mkdir -p /var/lib/etcd", "chown etcd:etcd /var/lib/etcd", "chmod 700 /var/lib/etcd"]
    assert result.op("etcd snapshot directory").commands[-1] == "chmod 700 /var/backups/etcd"
    service = result.op("etcd running and enabled").commands
    assert service == ["systemctl daemon-reload", "systemctl start etcd.service", "systemctl enable etcd.service"]
    health = result.op("etcd endpoint health")
    assert health.has_if
    assert "/usr/local/bin/etcdctl --endpoints https://127.0.0.1:2379" in health.commands[0]
    assert "--cert /etc/kubernetes/pki/etcd/healthcheck-client.crt" in health.commands[0]
    assert "endpoint health" in health.commands[0] and "-ge 30" in health.commands[0]
    timer = result.op("etcd snapshot timer running").commands
    assert timer == ["systemctl start etcd-snapshot.timer", "systemctl enable etcd-snapshot.timer"]
    # one remote command for everything the component decides on (Platform, file and unit states)
    assert len(result.fact_reads) == 2
    assert {name for name, _ in result.fact_reads} == {"facts.platform.Platform", "facts.combined.Facts"}


def test_unit_file(one_member: None) -> None:
    unit = deploy().uploads[UNIT]
    for line in [
        "Type=notify",
        "User=etcd",
        "LoadCredential=server.key:/etc/kubernetes/pki/etcd/server.key",
        "LoadCredential=peer.crt:/etc/kubernetes/pki/etcd/peer.crt",
        "ExecStart=/usr/local/bin/etcd \\",
        "--name=testhost \\",
        "--data-dir=/var/lib/etcd \\",
        "--listen-client-urls=https://10.0.0.11:2379,https://127.0.0.1:2379 \\",
        "--advertise-client-urls=https://10.0.0.11:2379 \\",
        "--listen-peer-urls=https://10.0.0.11:2380 \\",
        "--initial-advertise-peer-urls=https://10.0.0.11:2380 \\",
        "--initial-cluster=testhost=https://10.0.0.11:2380 \\",
        "--client-cert-auth=true \\",
        "--peer-client-cert-auth=true \\",
        "--trusted-ca-file=%d/ca.crt \\",
        "--peer-key-file=%d/peer.key",
        "--listen-metrics-urls=http://127.0.0.1:2381 \\",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/etcd",
        "NoNewPrivileges=yes",
    ]:
        assert line in unit, line
    assert "http://" not in unit.replace("--listen-metrics-urls=http://127.0.0.1:2381", "")


def test_custom_paths_and_ports(one_member: None) -> None:
    data = {
        "etcd_cert_file": "/srv/pki/member.pem",
        "etcd_client_port": 12379,
        "etcd_peer_port": 12380,
        "etcd_data_dir": "/data/etcd",
        "etcd_address": "192.168.5.5",
    }
    member = {"/srv/pki/member.pem": {**ROOT_FILE, "sha256": "3" * 64}}
    files = {FileStates: lambda paths, **_: {path: {**CERTS, **member}.get(path) for path in paths}}
    unit = deploy(data, facts=files).uploads[UNIT]
    assert "LoadCredential=server.crt:/srv/pki/member.pem" in unit
    assert "--listen-client-urls=https://192.168.5.5:12379,https://127.0.0.1:12379" in unit
    assert "--listen-peer-urls=https://192.168.5.5:12380" in unit
    assert "ReadWritePaths=/data/etcd" in unit


def test_three_member_cluster(three_members: None) -> None:
    unit = deploy().uploads[UNIT]
    # sorted by name; private_ip before ssh_hostname, as the PKI puts it in the SANs
    expected = "etcd-b=https://10.0.0.12:2380,etcd-c=https://10.0.0.13:2380,testhost=https://10.0.0.11:2380"
    assert f"--initial-cluster={expected} \\" in unit
    assert "--initial-advertise-peer-urls=https://10.0.0.11:2380" in unit


def test_initial_cluster_ipv6() -> None:
    assert initial_cluster([("a", "fd00::1")], 2380) == "a=https://[fd00::1]:2380"


def test_host_not_in_etcd_group_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_module, "inventory", FakeInventory([Member("other", {"ssh_hostname": "10.0.0.2"})]))
    with pytest.raises(DeployError, match="not in the inventory group etcd"):
        deploy()


def test_refused_without_sums(one_member: None) -> None:
    with pytest.raises(DeployError, match=r"no sha256 for etcd 3.6.16 on amd64: fill etcd_sha256\['3.6.16'\]"):
        run_deploy(etcd, facts=fresh(), data={**BASE, "etcd_sha256": {}})
    # the shipped defaults hold no invented sums: the production path refuses until they are filled in
    assert etcd_module.DEFAULTS["etcd_sha256"] == {}


def test_arm64_sum(one_member: None) -> None:
    result = deploy(facts={Platform: {**BOOKWORM, "arch": "arm64"}})
    download = result.op("Install etcd 3.6.16").commands[0]
    assert f"etcd-v3.6.16-linux-arm64.tar.gz /usr/local/bin/etcd {ARM}" in download


def test_snapshot_units_and_script(one_member: None) -> None:
    result = deploy({"etcd_snapshot_keep": 3, "etcd_snapshot_schedule": "hourly", "etcd_snapshot_dir": "/bk"})
    service = result.uploads[SNAP_SERVICE]
    assert "Type=oneshot" in service and "User=etcd" in service
    assert "LoadCredential=client.key:/etc/kubernetes/pki/etcd/healthcheck-client.key" in service
    assert "ExecStart=/usr/local/sbin/etcd-snapshot" in service and "ReadWritePaths=/bk" in service
    assert "OnCalendar=hourly" in result.uploads[SNAP_TIMER]
    script = result.uploads[SNAP_SCRIPT]
    assert "keep=3" in script and "dir=/bk" in script
    assert "snapshot save" in script and "--endpoints=https://127.0.0.1:2379" in script
    assert 'tail -n +"$((keep + 1))"' in script


def test_snapshots_off(one_member: None) -> None:
    result = deploy({"etcd_snapshot_enabled": False})
    assert SNAP_SERVICE not in result.uploads and not result.has_op("etcd snapshot timer")


def test_keep_must_be_positive(one_member: None) -> None:
    with pytest.raises(DeployError, match="etcd_snapshot_keep"):
        deploy({"etcd_snapshot_keep": 0})


def _converged(first: Any) -> dict[Any, Any]:
    sums = {}
    for temp, text in first.uploads.items():
        if not temp.endswith(".spectra-new"):
            continue
        directory, name = temp.rsplit("/", 1)
        sums[f"{directory}/{name[1:].removesuffix('.spectra-new')}"] = hashlib.sha256(text.encode()).hexdigest()
    root = {"type": "file", "mode": "644", "user": "root", "group": "root"}
    states: dict[str, Any] = {
        path: {
            **root,
            "sha256": digest,
            "mode": {"etcd-snapshot": "755", "etcd.service": "600"}.get(path.rsplit("/", 1)[1], "644"),
        }
        for path, digest in sums.items()
    }
    for index, command in enumerate(("etcd", "etcdctl", "etcdutl")):
        binary = f"/usr/local/bin/{command}"
        stat = f"{20000000 + index} 0.000000000 1795633234.198913322 {1081656 + index}"
        states[binary] = {
            **root,
            "mode": "755",
            "sha256": None,
            "size": 20000000 + index,
            "mtime": "0.000000000",
            "ctime": "1795633234.198913322",
            "inode": str(1081656 + index),
        }
        states[stamp_path(binary)] = {**root, "sha256": "f" * 64, "content": f"{SUM} {'e' * 64} {stat}\n"}
    for path in ("/var/lib/etcd", "/var/backups/etcd"):
        states[path] = {"type": "directory", "mode": "700", "user": "etcd", "group": "etcd"}
    states["/etc/passwd"] = {**root, "sha256": "1" * 64, "content": "etcd:x:998:998::/var/lib/etcd:/bin/false\n"}
    states.update(CERTS)
    states[etcd_module.CREDENTIALS_STAMP] = {**root, "sha256": "2" * 64, "content": STAMP_TEXT}
    units = {
        "etcd.service": {"id": "etcd.service", **RUNNING},
        "etcd-snapshot.timer": {"id": "etcd-snapshot.timer", **RUNNING, "sub": "waiting"},
    }
    return {
        FileStates: lambda paths, **_: {path: states.get(path) for path in paths},
        SystemdUnits: lambda **_: units,
    }


def test_converged_is_noop(one_member: None) -> None:
    first = deploy()
    second = deploy(facts=_converged(first))
    # the health check runs only after the service operation changed something (its _if)
    assert [command for op in second.ops if not op.has_if for command in op.commands] == []
    assert second.op("etcd endpoint health").has_if
    assert len(second.fact_reads) == 2  # Platform + one combined read of files and units


def test_changed_unit_restarts_and_checks_health(one_member: None) -> None:
    first = deploy()
    second = deploy({"etcd_cluster_token": "other"}, facts=_converged(first))
    assert second.op("etcd systemd unit").changed
    assert second.op("etcd running and enabled").commands == [
        "systemctl daemon-reload",
        "systemctl restart etcd.service",
    ]
    assert second.op("etcd endpoint health").has_if


def test_changed_binary_restarts_without_reload(one_member: None) -> None:
    first = deploy()
    new = "c" * 64
    second = deploy({"etcd_sha256": {"3.6.16": {"amd64": new}}}, facts=_converged(first))
    assert new in second.op("Install etcd 3.6.16").commands[0]
    assert second.op("etcd running and enabled").commands == ["systemctl restart etcd.service"]


def test_first_start_records_the_tls_files(one_member: None) -> None:
    op = deploy().op("etcd restarted on new TLS files")
    assert op.commands[0] == "systemctl try-restart etcd.service"
    stamp = [path for path in deploy().uploads if "etcd-credentials.sha256" in path]
    assert stamp and deploy().uploads[stamp[0]] == STAMP_TEXT


def test_reissued_certificate_restarts_etcd(one_member: None) -> None:
    first = deploy()
    facts = _converged(first)
    converged_files = facts[FileStates]
    renewed = {**CERTS[f"{PKI}/server.crt"], "sha256": "9" * 64}

    def files(paths: list[str], **kwargs: Any) -> dict[str, Any]:
        states = converged_files(paths, **kwargs)
        return {**states, **({f"{PKI}/server.crt": renewed} if f"{PKI}/server.crt" in states else {})}

    second = deploy(facts={**facts, FileStates: files})
    op = second.op("etcd restarted on new TLS files")
    assert op.commands[0] == "systemctl try-restart etcd.service"
    assert second.op("etcd running and enabled").commands == []
    assert second.op("etcd endpoint health").has_if
    stamp = next(text for path, text in second.uploads.items() if "etcd-credentials" in path)
    assert f"{'9' * 64}  {PKI}/server.crt" in stamp


def test_missing_tls_files_fail_naming_them(one_member: None) -> None:
    with pytest.raises(OperationError, match=r"TLS files missing on the host: .*/server.key \(install the PKI"):
        deploy(facts={FileStates: lambda paths, **_: {path: None for path in paths}})
