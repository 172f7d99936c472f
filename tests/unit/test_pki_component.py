"""The Cluster PKI component: which files each role gets, with which modes, uploaded only when they differ."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from pyinfra.api import DeployError

from deploys.components import pki as component
from facts.certificates import Certificates, parse_certificate
from facts.files import FileStates
from tests.unit.pki_support import NOW, key_factory
from tests.unit.pyinfra_harness import HOSTNAME, Result, run_component, run_deploy

pytestmark = pytest.mark.unit

PKI = "/etc/kubernetes/pki"

# The other hosts of the inventory (name -> host data)
OTHERS: dict[str, dict[str, Any]] = {
    "cp2": {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.12"},
    "w1": {"roles": ["workers"], "ssh_hostname": "10.0.1.21"},
    "mon1": {"roles": ["monitoring"], "ssh_hostname": "10.0.2.31"},
}


@pytest.fixture
def pki_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(component, "key_factory", key_factory())
    monkeypatch.setattr(component, "utcnow", lambda: NOW)
    return tmp_path / "pki"


def data(pki_dir: Path, roles: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "pki_enabled": True,
        "pki_dir": str(pki_dir),
        "pki_key_algorithm": "ecdsa-p256",
        "roles": roles,
        "ssh_hostname": "10.0.0.11",
        **extra,
    }


def inventory(settings: dict[str, Any], others: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``others`` (default: OTHERS) with the harness host's cluster-wide settings, as group data gives them."""
    shared = {key: value for key, value in settings.items() if key in component.CLUSTER_SETTINGS}
    return {name: {**shared, **values} for name, values in (OTHERS if others is None else others).items()}


def deploy(facts: dict[Any, Any], settings: dict[str, Any], others: dict[str, dict[str, Any]] | None = None) -> Result:
    """The component as an entry file runs it (settings checked, gate, facts read in one command)."""
    return run_component(component.COMPONENT, facts=facts, data=settings, others=inventory(settings, others))


def bare(**certificates: Any) -> dict[Any, Any]:
    return {
        FileStates: lambda paths, **_: {path: None for path in paths},
        Certificates: lambda paths: {path: certificates.get(path, {"exists": False}) for path in paths},
    }


def short(name: str) -> str:
    return name.split(" | ")[-1]  # without the deploy's name


def installed(result: Result) -> dict[str, tuple[str, str]]:
    """path -> (content, mode) of every file the run put in place."""
    files = {}
    for op in result.ops:
        if not short(op.name).startswith("Install "):
            continue
        path = short(op.name).removeprefix("Install ")
        directory, name = path.rsplit("/", 1)
        mode = re.search(r"chmod (\d+) ", op.commands[-2])
        assert mode, op.commands
        files[path] = (result.uploads[f"{directory}/.{name}.spectra-new"], mode.group(1))
    return files


def directories(result: Result) -> dict[str, str]:
    found = {}
    for op in result.ops:
        if short(op.name).startswith("Directory "):
            path = short(op.name).removeprefix("Directory ")
            (mode,) = [c.split()[1] for c in op.commands if c.startswith("chmod ")]
            found[path] = mode
    return found


def converged(first: Result) -> dict[Any, Any]:
    """Facts of a host on which ``first`` ran."""
    files = installed(first)
    dirs = directories(first)

    def lookup(paths: list[str], **_: Any) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for path in paths:
            if path in files:
                text, mode = files[path]
                states[path] = {"type": "file", "mode": mode, "user": "root", "group": "root",
                                "sha256": hashlib.sha256(text.encode()).hexdigest()}  # fmt: skip
            elif path in dirs:
                states[path] = {"type": "directory", "mode": dirs[path], "user": "root", "group": "root"}
            else:
                states[path] = None
        return states

    def certificates(paths: list[str]) -> dict[str, Any]:
        return {p: parse_certificate(files[p][0].encode()) if p in files else {"exists": False} for p in paths}

    return {FileStates: lookup, Certificates: certificates}


CONTROL_PLANE_FILES = {
    f"{PKI}/{name}": mode
    for name, mode in {
        "ca.crt": "600", "ca.key": "600", "front-proxy-ca.crt": "600", "etcd/ca.crt": "600",
        "apiserver.crt": "600", "apiserver.key": "600",
        "apiserver-kubelet-client.crt": "600", "apiserver-kubelet-client.key": "600",
        "apiserver-etcd-client.crt": "600", "apiserver-etcd-client.key": "600",
        "front-proxy-client.crt": "600", "front-proxy-client.key": "600",
        "sa.key": "600", "sa.pub": "600",
    }.items()
} | {f"/etc/kubernetes/{name}.conf": "600" for name in ("admin", "controller-manager", "scheduler")}  # fmt: skip

ETCD_FILES = {
    f"{PKI}/etcd/{name}": mode
    for name, mode in {
        "ca.crt": "600", "server.crt": "600", "server.key": "600", "peer.crt": "600", "peer.key": "600",
        "healthcheck-client.crt": "600", "healthcheck-client.key": "600",
    }.items()
}  # fmt: skip

NODE_FILES = {
    f"{PKI}/ca.crt": "600",
    f"{PKI}/kubelet/kubelet.crt": "600",
    f"{PKI}/kubelet/kubelet.key": "600",
    "/etc/kubernetes/kubelet.conf": "600",
    "/etc/kubernetes/kube-proxy.conf": "600",
}


def test_control_plane_etcd_host_gets_its_files(pki_dir: Path) -> None:
    result = deploy(bare(), data(pki_dir, ["control_plane", "etcd"]))
    files = installed(result)
    assert {path: mode for path, (_, mode) in files.items()} == CONTROL_PLANE_FILES | ETCD_FILES | NODE_FILES
    assert directories(result) == {"/etc/kubernetes": "755", PKI: "700", f"{PKI}/etcd": "700", f"{PKI}/kubelet": "700"}
    # parents before files; everything root-owned
    assert short(result.ops[0].name) == "Directory /etc/kubernetes"
    assert all("chown root:root" in op.commands[-2] for op in result.ops if "Install" in op.name)
    # the content is the PKI directory's
    assert files[f"{PKI}/apiserver.crt"][0] == (pki_dir / "apiserver.crt").read_text()
    assert files[f"{PKI}/etcd/server.key"][0] == (pki_dir / f"etcd/{HOSTNAME}/server.key").read_text()
    assert files[f"{PKI}/kubelet/kubelet.crt"][0] == (pki_dir / f"nodes/{HOSTNAME}/kubelet.crt").read_text()
    assert files[f"{PKI}/sa.key"][0] == (pki_dir / "sa.key").read_text()
    # ONE remote command for all facts
    assert len(result.fact_reads) == 1 and set(result.facts_read) == {FileStates.name, Certificates.name}


def test_shared_certificates_name_the_whole_inventory(pki_dir: Path) -> None:
    deploy(bare(), data(pki_dir, ["control_plane", "etcd"]))
    apiserver = x509.load_pem_x509_certificate((pki_dir / "apiserver.crt").read_bytes())
    names = apiserver.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert {HOSTNAME, "cp2", "kubernetes.default.svc.cluster.local", "localhost"} <= dns and "w1" not in dns
    assert {"10.0.0.11", "10.0.0.12", "10.96.0.1", "127.0.0.1"} == ips
    assert sorted(p.name for p in (pki_dir / "nodes").iterdir()) == sorted([HOSTNAME, "cp2", "w1"])
    assert sorted(p.name for p in (pki_dir / "etcd").iterdir() if p.is_dir()) == sorted([HOSTNAME, "cp2"])


def test_worker_gets_only_node_files(pki_dir: Path) -> None:
    result = deploy(bare(), data(pki_dir, ["workers"]))
    files = installed(result)
    assert {path: mode for path, (_, mode) in files.items()} == NODE_FILES
    kubelet = yaml.safe_load(files["/etc/kubernetes/kubelet.conf"][0])
    assert kubelet["users"][0]["name"] == f"system:node:{HOSTNAME}"
    client = base64.b64decode(kubelet["users"][0]["user"]["client-certificate-data"])
    assert client == (pki_dir / f"nodes/{HOSTNAME}/kubelet-client.crt").read_bytes()
    assert kubelet["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    proxy = yaml.safe_load(files["/etc/kubernetes/kube-proxy.conf"][0])
    assert proxy["users"][0]["name"] == "system:kube-proxy"


def test_second_run_changes_nothing(pki_dir: Path) -> None:
    settings = data(pki_dir, ["control_plane", "etcd"])
    first = deploy(bare(), settings)
    second = deploy(converged(first), settings)
    assert second.commands == []
    assert len(second.noops) == len(second.ops) > 20


def test_a_changed_file_alone_is_uploaded(pki_dir: Path) -> None:
    first = deploy(bare(), data(pki_dir, ["workers"]))
    facts = converged(first)
    files = facts[FileStates]

    def tampered(paths: list[str], **kwargs: Any) -> dict[str, Any]:
        states = files(paths, **kwargs)
        states[f"{PKI}/kubelet/kubelet.key"] = {**states[f"{PKI}/kubelet/kubelet.key"], "sha256": "0" * 64}
        states["/etc/kubernetes/kube-proxy.conf"] = {**states["/etc/kubernetes/kube-proxy.conf"], "mode": "644"}
        return states

    facts[FileStates] = tampered
    second = deploy(facts, data(pki_dir, ["workers"]))
    assert [short(op.name) for op in second.changed_ops] == [
        "Install /etc/kubernetes/kube-proxy.conf",
        f"Install {PKI}/kubelet/kubelet.key",
    ]
    assert second.op("kube-proxy.conf").commands == ["chmod 600 /etc/kubernetes/kube-proxy.conf"]


def test_reissued_certificate_is_uploaded(pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = deploy(bare(), data(pki_dir, ["workers"]))
    monkeypatch.setattr(component, "utcnow", lambda: NOW + dt.timedelta(days=340))
    second = deploy(converged(first), data(pki_dir, ["workers"]))
    changed = {short(op.name).removeprefix("Install ") for op in second.changed_ops}
    assert changed == {f"{PKI}/kubelet/kubelet.crt", f"{PKI}/kubelet/kubelet.key",
                       "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/kube-proxy.conf"}  # fmt: skip


def test_host_with_another_ca_stops_the_run(pki_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    first = deploy(bare(), data(other, ["workers"]))
    facts = converged(first)
    with pytest.raises(DeployError, match="holds another CA .* just created .* Restore it from its backup"):
        deploy(facts, data(pki_dir, ["workers"]))
    # and when the change is wanted, it goes through
    result = deploy(facts, data(pki_dir, ["workers"], pki_allow_ca_change=True))
    assert result.op(f"Install {PKI}/ca.crt").changed


def test_same_ca_passes(pki_dir: Path) -> None:
    first = deploy(bare(), data(pki_dir, ["workers"]))
    deploy(converged(first), data(pki_dir, ["workers"]))


def test_ca_key_can_stay_off_hosts_and_servers_are_settings(pki_dir: Path) -> None:
    settings = data(
        pki_dir,
        ["control_plane"],
        pki_install_ca_key=False,
        pki_kubeconfig_server="https://10.0.0.10:6443",
        pki_kubeconfig_servers={"scheduler": "https://127.0.0.1:6444"},
    )
    result = deploy(bare(), settings)
    files = installed(result)
    assert f"{PKI}/ca.key" not in files and f"{PKI}/etcd/server.crt" not in files
    assert "https://127.0.0.1:6444" in files["/etc/kubernetes/scheduler.conf"][0]
    assert "https://10.0.0.10:6443" in files["/etc/kubernetes/admin.conf"][0]


def test_disabled_reads_nothing(pki_dir: Path) -> None:
    result = deploy({}, {"roles": ["control_plane"], "pki_enabled": False})
    assert result.ops == [] and result.fact_reads == []
    assert not pki_dir.exists()


def test_host_without_cluster_role(pki_dir: Path) -> None:
    result = deploy({}, data(pki_dir, ["monitoring"]))
    assert result.ops == [] and result.fact_reads == []


def test_cluster_settings_must_agree(pki_dir: Path) -> None:
    settings = data(pki_dir, ["workers"])
    odd = inventory(settings, {**OTHERS, "w9": {"roles": ["workers"], "pki_apiserver_sans": ["lb.example.com"]}})
    with pytest.raises(DeployError, match=r"pki_apiserver_sans must be the same on every host"):
        run_component(component.COMPONENT, facts=bare(), data=settings, others=odd)
    # the cluster-wide settings too (they shape the certificates: cluster_domain is a SAN)
    odd = {**inventory(settings), "w9": {**inventory(settings)["w1"], "cluster_domain": "other.local"}}
    with pytest.raises(DeployError, match=r"cluster_domain must be the same on every host"):
        run_component(component.COMPONENT, facts=bare(), data=settings, others=odd)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pki_key_algorithm": "dsa-1024"}, r"pki_key_algorithm='dsa-1024': not one of 'rsa-2048', 'ecdsa-p256'"),
        (
            {"pki_kubeconfig_server": "http://127.0.0.1:6443"},
            r"pki_kubeconfig_server='http://127.0.0.1:6443': an https",
        ),
        ({"pki_kubeconfig_servers": {"kubelet": "10.0.0.10:6443"}}, r"pki_kubeconfig_servers\['kubelet'\]=.*an https"),
        ({"pki_kubeconfig_servers": {"proxy": "https://10.0.0.10:6443"}}, r"unknown kubeconfigs \['proxy'\]"),
        ({"pki_renew_before_days": 365}, r"pki_renew_before_days=365: the renewal window must be shorter"),
        ({"pki_cert_mode": "0666"}, r"pki_cert_mode='0666'"),
    ],
)
def test_bad_settings_are_refused_before_anything(pki_dir: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=message) as error:
        deploy(bare(), data(pki_dir, ["workers"], **extra))
    assert "invalid settings" in str(error.value)
    assert not pki_dir.exists()  # refused before the PKI was made


def test_node_address_names_the_host_in_its_certificates(pki_dir: Path) -> None:
    """node_address wins over private_ip and ssh_hostname in every certificate naming this host."""
    where = {"node_address": "10.9.0.11", "private_ip": "10.0.0.99", "ssh_hostname": "203.0.113.11"}
    deploy(bare(), data(pki_dir, ["control_plane", "etcd"], **where))

    def ips(relative: str) -> set[str]:
        cert = x509.load_pem_x509_certificate((pki_dir / relative).read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}

    for relative in ("apiserver.crt", f"etcd/{HOSTNAME}/server.crt", f"etcd/{HOSTNAME}/peer.crt",
                     f"nodes/{HOSTNAME}/kubelet.crt"):  # fmt: skip
        assert "10.9.0.11" in ips(relative), relative
        assert not {"10.0.0.99", "203.0.113.11"} & ips(relative), relative


def test_pki_is_made_once_per_run(pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = component.pki_lib.ensure

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(component.pki_lib, "ensure", counting)

    def two_components() -> None:
        component.cluster_pki_files()
        component.cluster_pki_files()

    run_deploy(two_components, facts=bare(), data=data(pki_dir, ["workers"]))
    assert len(calls) == 1
