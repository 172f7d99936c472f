from __future__ import annotations

import hashlib
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
from tests.unit.pyinfra_harness import run_component, run_deploy

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


# The other etcd members of a three-member cluster (name -> host data), sorted apart from the harness's host
THREE_MEMBERS: dict[str, dict[str, Any]] = {
    "etcd-c": {"roles": ["etcd"], "ssh_hostname": "10.0.0.13"},
    "etcd-b": {"roles": ["etcd"], "ssh_hostname": "bastion.example", "private_ip": "10.0.0.12"},
}


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


def deploy(
    data: dict[str, Any] | None = None, facts: dict[Any, Any] | None = None, others: dict[str, Any] | None = None
) -> Any:
    """The component as an entry file runs it (settings checked, its gate, its facts in one command)."""
    given = fresh({FileStates: with_certs, **(facts or {})})
    return run_component(etcd_module.COMPONENT, facts=given, data={**BASE, **(data or {})}, others=others)


def test_disabled_does_nothing() -> None:
    result = deploy({"roles": ["etcd"], "etcd_enabled": False})
    assert result.commands == [] and result.fact_reads == []


def test_not_an_etcd_host() -> None:
    result = deploy({"roles": ["workers"]})
    assert result.commands == [] and result.fact_reads == []


def test_fresh_install_commands() -> None:
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
    assert [name for name, _ in result.fact_reads] == ["facts.combined.Facts"]
    assert result.facts_read == ["facts.platform.Platform", "facts.files.FileStates", "facts.systemd.SystemdUnits"]


def test_unit_file() -> None:
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


def test_custom_paths_and_ports() -> None:
    data = {
        "etcd_cert_file": "/srv/pki/member.pem",
        "etcd_client_port": 12379,
        "etcd_peer_port": 12380,
        "etcd_data_dir": "/data/etcd",
        "node_address": "192.168.5.5",
    }
    member = {"/srv/pki/member.pem": {**ROOT_FILE, "sha256": "3" * 64}}
    files = {FileStates: lambda paths, **_: {path: {**CERTS, **member}.get(path) for path in paths}}
    unit = deploy(data, facts=files).uploads[UNIT]
    assert "LoadCredential=server.crt:/srv/pki/member.pem" in unit
    assert "--listen-client-urls=https://192.168.5.5:12379,https://127.0.0.1:12379" in unit
    assert "--listen-peer-urls=https://192.168.5.5:12380" in unit
    assert "ReadWritePaths=/data/etcd" in unit


def test_three_member_cluster() -> None:
    unit = deploy(others=THREE_MEMBERS).uploads[UNIT]
    # sorted by name; private_ip before ssh_hostname, as the PKI puts it in the SANs
    expected = "etcd-b=https://10.0.0.12:2380,etcd-c=https://10.0.0.13:2380,testhost=https://10.0.0.11:2380"
    assert f"--initial-cluster={expected} \\" in unit
    assert "--initial-advertise-peer-urls=https://10.0.0.11:2380" in unit


def test_initial_cluster_ipv6() -> None:
    assert initial_cluster([("a", "fd00::1")], 2380) == "a=https://[fd00::1]:2380"


def test_node_address_wins_in_every_url() -> None:
    where = {"node_address": "10.9.0.11", "private_ip": "10.0.0.99", "ssh_hostname": "203.0.113.11"}
    unit = deploy(
        where, others={"etcd-b": {"roles": ["etcd"], "node_address": "10.9.0.12", "private_ip": "10.0.0.98"}}
    ).uploads[UNIT]
    assert "--listen-client-urls=https://10.9.0.11:2379,https://127.0.0.1:2379 \\" in unit
    assert "--advertise-client-urls=https://10.9.0.11:2379 \\" in unit
    assert "--listen-peer-urls=https://10.9.0.11:2380 \\" in unit
    assert "--initial-cluster=etcd-b=https://10.9.0.12:2380,testhost=https://10.9.0.11:2380 \\" in unit
    assert not any(other in unit for other in ("10.0.0.99", "10.0.0.98", "203.0.113.11"))


def test_members_need_an_address_and_this_one_an_ip() -> None:
    with pytest.raises(DeployError, match="etcd: etcd-b has no address"):
        deploy(others={"etcd-b": {"roles": ["etcd"]}})
    with pytest.raises(DeployError, match="'etcd1.example' is not an IP address for etcd's listen URLs"):
        deploy({"node_address": "etcd1.example"})


def test_refused_without_sums() -> None:
    with pytest.raises(DeployError, match=r"no sha256 for etcd 3.6.16 on amd64: fill etcd_sha256\['3.6.16'\]"):
        run_deploy(etcd, facts=fresh(), data={**BASE, "etcd_sha256": {}})
    # the shipped defaults hold no invented sums: the production path refuses until they are filled in
    assert etcd_module.DEFAULTS["etcd_sha256"] == {}


def test_arm64_sum() -> None:
    result = deploy(facts={Platform: {**BOOKWORM, "arch": "arm64"}})
    download = result.op("Install etcd 3.6.16").commands[0]
    assert f"etcd-v3.6.16-linux-arm64.tar.gz /usr/local/bin/etcd {ARM}" in download


def test_snapshot_units_and_script() -> None:
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


def test_snapshots_off() -> None:
    result = deploy({"etcd_snapshot_enabled": False})
    assert SNAP_SERVICE not in result.uploads and not result.has_op("etcd snapshot timer")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"etcd_snapshot_keep": 0}, "etcd_snapshot_keep=0: a whole number of at least 1"),
        ({"etcd_version": "v3.6.16"}, "etcd_version='v3.6.16': a release version"),
        ({"etcd_metrics_port": 2379}, "etcd_metrics_port=2379: the same port as etcd_client_port"),
        ({"etcd_cert_file": "pki/server.crt"}, "etcd_cert_file='pki/server.crt': an absolute path"),
        ({"etcd_sha256": {"3.6.16": {"amd64": "nope"}}}, "etcd_sha256: {version: {arch: sha256}}"),
    ],
)
def test_bad_settings_refused_before_anything(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match="invalid settings") as error:
        deploy(data)
    assert message in str(error.value)


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


def test_converged_is_noop() -> None:
    first = deploy()
    second = deploy(facts=_converged(first))
    # the health check runs only after the service operation changed something (its _if)
    assert [command for op in second.ops if not op.has_if for command in op.commands] == []
    assert second.op("etcd endpoint health").has_if
    assert len(second.fact_reads) == 1  # one combined read of the platform, files and units


def test_changed_unit_restarts_and_checks_health() -> None:
    first = deploy()
    second = deploy({"etcd_cluster_token": "other"}, facts=_converged(first))
    assert second.op("etcd systemd unit").changed
    assert second.op("etcd running and enabled").commands == [
        "systemctl daemon-reload",
        "systemctl restart etcd.service",
    ]
    assert second.op("etcd endpoint health").has_if


def test_changed_binary_restarts_without_reload() -> None:
    first = deploy()
    new = "c" * 64
    second = deploy({"etcd_sha256": {"3.6.16": {"amd64": new}}}, facts=_converged(first))
    assert new in second.op("Install etcd 3.6.16").commands[0]
    assert second.op("etcd running and enabled").commands == ["systemctl restart etcd.service"]


def test_first_start_records_the_tls_files() -> None:
    op = deploy().op("etcd restarted on new TLS files")
    assert op.commands[0] == "systemctl try-restart etcd.service"
    stamp = [path for path in deploy().uploads if "etcd-credentials.sha256" in path]
    assert stamp and deploy().uploads[stamp[0]] == STAMP_TEXT


def test_reissued_certificate_restarts_etcd() -> None:
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


def test_missing_tls_files_fail_naming_them() -> None:
    with pytest.raises(OperationError, match=r"TLS files missing on the host: .*/server.key \(install the PKI"):
        deploy(facts={FileStates: lambda paths, **_: {path: None for path in paths}})
