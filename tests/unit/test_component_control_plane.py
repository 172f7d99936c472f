from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError, OperationError

from deploys import checksums
from deploys.components import control_plane as cp
from deploys.components import pki as pki_component
from deploys.components.control_plane_rbac import BOOTSTRAP_DIR, RBAC_BINDINGS
from deploys.components.control_plane_secrets import ENCRYPTION_KEY_FILE
from deploys.operations.download import stamp_path
from facts.files import FileStates
from facts.kubernetes import ClusterRoleBindings
from facts.systemd import SystemdUnits
from tests.unit.component_facts import RUNNING, fresh
from tests.unit.pki_support import NOW, key_factory
from tests.unit.pyinfra_harness import Result, run_component

pytestmark = pytest.mark.unit

SUMS = {name: hashlib.sha256(name.encode()).hexdigest() for name in cp.BINARIES}
PKI = "/etc/kubernetes/pki"
UNIT = "/etc/systemd/system/.{}.service.spectra-new"
CONFIGS = {
    "encryption": "/etc/kubernetes/.encryption-config.yaml.spectra-new",
    "audit": "/etc/kubernetes/.audit-policy.yaml.spectra-new",
    "authentication": "/etc/kubernetes/.authentication-config.yaml.spectra-new",
    "admission": "/etc/kubernetes/.admission-config.yaml.spectra-new",
}
OK_BINDINGS: dict[str, Any] = {
    "state": "ok",
    "message": "",
    "bindings": {
        name: {"role": f"ClusterRole/{role}", "subjects": [f"Group:{group}"]}
        for name, (role, group) in RBAC_BINDINGS.items()
    },
}

FORBIDDEN = {"state": "forbidden", "bindings": {}, "message": "Error from server (Forbidden): ..."}


@pytest.fixture(autouse=True)
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    table = tmp_path / "kubernetes.yaml"
    checksums.write_table(table, {"v1.36.3": {"amd64": SUMS}})
    monkeypatch.setattr(checksums, "KUBERNETES_TABLE", table)
    monkeypatch.setattr(pki_component, "key_factory", key_factory())
    monkeypatch.setattr(pki_component, "utcnow", lambda: NOW)
    return tmp_path / "pki"


def base(pki_dir: Path) -> dict[str, Any]:
    return {
        "control_plane_enabled": True,
        "roles": ["control_plane", "etcd"],
        "ssh_hostname": "10.0.0.11",
        "pki_dir": str(pki_dir),
        "pki_key_algorithm": "ecdsa-p256",
    }


KUBERNETES_DIRS = ("/etc/kubernetes/", "/srv/k8s/")  # kubernetes_config_dir: the default and test_settings_...


# the PKI's files on the host, each with its own sum
def pki_file(path: str) -> dict[str, Any]:
    return {
        "type": "file",
        "mode": "600",
        "user": "root",
        "group": "root",
        "sha256": hashlib.sha256(path.encode()).hexdigest(),
    }


def with_pki(paths: list[str], **_: Any) -> dict[str, Any]:
    return {path: pki_file(path) if path.startswith(KUBERNETES_DIRS) and not path.endswith(".yaml") else None
            for path in paths}  # fmt: skip


def deploy(
    pki_dir: Path,
    data: dict[str, Any] | None = None,
    facts: dict[Any, Any] | None = None,
    others: dict[str, dict[str, Any]] | None = None,
) -> Result:
    """The component as an entry file runs it; ``others``: more inventory hosts, with this one's shared settings."""
    # a first run: admin.conf's identity has no rights yet when the bindings are read (after the apiserver started)
    given = fresh({FileStates: with_pki, ClusterRoleBindings: lambda **_: FORBIDDEN, **(facts or {})})
    settings = {**base(pki_dir), **(data or {})}
    shared = {key: value for key, value in settings.items() if key in pki_component.CLUSTER_SETTINGS}
    inventory = {name: {**shared, **values} for name, values in (others or {}).items()}
    return run_component(cp.COMPONENT, facts=given, data=settings, others=inventory)


def flags(unit: str) -> dict[str, str]:
    found = {}
    for line in unit.splitlines():
        line = line.strip().rstrip("\\").strip()
        if line.startswith("--"):
            name, _, value = line[2:].partition("=")
            found[name] = value
    return found


def test_disabled_or_not_a_control_plane(setup: Path) -> None:
    result = deploy(setup, {"control_plane_enabled": False})
    assert result.commands == [] and result.fact_reads == []
    result = deploy(setup, {"roles": ["workers", "etcd"]})
    assert result.commands == [] and result.fact_reads == []


CIPHERS = ",".join(cp.DEFAULTS["control_plane_tls_cipher_suites"])
APISERVER_FLAGS = {
    "advertise-address": "10.0.0.11",
    "bind-address": "10.0.0.11",  # never 127.0.0.1: the balancer's
    "secure-port": "6443",
    "authentication-config": "/etc/kubernetes/authentication-config.yaml",
    "authorization-mode": "Node,RBAC",
    "enable-admission-plugins": "NodeRestriction,DenyServiceExternalIPs,EventRateLimit",  # CIS 1.2.3, 1.2.9
    "admission-control-config-file": "/etc/kubernetes/admission-config.yaml",  # EventRateLimit's limits
    "allow-privileged": "true",
    "profiling": "false",
    "client-ca-file": f"{PKI}/ca.crt",
    "tls-cert-file": f"{PKI}/apiserver.crt",
    "tls-private-key-file": f"{PKI}/apiserver.key",
    "tls-min-version": "VersionTLS12",
    "tls-cipher-suites": CIPHERS,
    "kubelet-certificate-authority": f"{PKI}/ca.crt",
    "kubelet-client-certificate": f"{PKI}/apiserver-kubelet-client.crt",
    "kubelet-client-key": f"{PKI}/apiserver-kubelet-client.key",
    "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
    "etcd-servers": "https://10.0.0.11:2379",
    "etcd-cafile": f"{PKI}/etcd/ca.crt",
    "etcd-certfile": f"{PKI}/apiserver-etcd-client.crt",
    "etcd-keyfile": f"{PKI}/apiserver-etcd-client.key",
    "encryption-provider-config": "/etc/kubernetes/encryption-config.yaml",
    "service-cluster-ip-range": "10.96.0.0/12",
    "service-node-port-range": "30000-32767",  # the cluster setting cluster_nodeport_range
    "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
    "service-account-key-file": f"{PKI}/sa.pub",
    "service-account-signing-key-file": f"{PKI}/sa.key",
    "service-account-lookup": "true",
    "service-account-extend-token-expiration": "false",  # CIS 1.2.30
    "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
    "requestheader-allowed-names": "front-proxy-client",
    "requestheader-extra-headers-prefix": "X-Remote-Extra-",
    "requestheader-group-headers": "X-Remote-Group",
    "requestheader-username-headers": "X-Remote-User",
    "proxy-client-cert-file": f"{PKI}/front-proxy-client.crt",
    "proxy-client-key-file": f"{PKI}/front-proxy-client.key",
    "shutdown-watch-termination-grace-period": "5s",  # a restart does not wait 60 s for watches
    "audit-policy-file": "/etc/kubernetes/audit-policy.yaml",
    "audit-log-path": "/var/log/kubernetes/audit/audit.log",
    "audit-log-maxage": "30",
    "audit-log-maxbackup": "10",
    "audit-log-maxsize": "100",
}


def test_apiserver_flags(setup: Path) -> None:
    result = deploy(setup)
    unit = result.uploads[UNIT.format("kube-apiserver")]
    assert "ExecStart=/usr/local/bin/kube-apiserver \\\n    --advertise-address=10.0.0.11 \\\n" in unit
    got = flags(unit)
    assert list(got.items()) == list(APISERVER_FLAGS.items())  # every flag, in order
    assert "TLS_RSA_" not in got["tls-cipher-suites"] and "CBC" not in got["tls-cipher-suites"]
    assert "ReadWritePaths=/var/log/kubernetes/audit" in unit and "CapabilityBoundingSet=\n" in unit


def test_controller_manager_and_scheduler_flags(setup: Path) -> None:
    result = deploy(setup)
    cm = flags(result.uploads[UNIT.format("kube-controller-manager")])
    kubeconfig = "/etc/kubernetes/controller-manager.conf"
    assert list(cm.items()) == list({
        "kubeconfig": kubeconfig, "authentication-kubeconfig": kubeconfig, "authorization-kubeconfig": kubeconfig,
        "bind-address": "10.0.0.11",  # the node address: Prometheus is on (control_plane_metrics_bind "auto")
        "secure-port": "10257",  # the cluster setting controller_manager_port
        "tls-min-version": "VersionTLS12", "tls-cipher-suites": CIPHERS,
        "client-ca-file": f"{PKI}/ca.crt", "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
        "cluster-name": "kubernetes", "root-ca-file": f"{PKI}/ca.crt",
        "service-account-private-key-file": f"{PKI}/sa.key", "use-service-account-credentials": "true",
        "service-cluster-ip-range": "10.96.0.0/12", "allocate-node-cidrs": "false",
        "controllers": "*,bootstrapsigner,tokencleaner", "leader-elect": "true", "profiling": "false",
        "terminated-pod-gc-threshold": "1000",
        "cluster-signing-cert-file": f"{PKI}/ca.crt", "cluster-signing-key-file": f"{PKI}/ca.key",
    }.items())  # fmt: skip
    scheduler = flags(result.uploads[UNIT.format("kube-scheduler")])
    kubeconfig = "/etc/kubernetes/scheduler.conf"
    assert list(scheduler.items()) == list({
        "kubeconfig": kubeconfig, "authentication-kubeconfig": kubeconfig, "authorization-kubeconfig": kubeconfig,
        "bind-address": "10.0.0.11",
        "secure-port": "10259",  # the cluster setting scheduler_port
        "tls-min-version": "VersionTLS12", "tls-cipher-suites": CIPHERS,
        "leader-elect": "true", "profiling": "false",
    }.items())  # fmt: skip


@pytest.mark.parametrize(
    ("data", "bound"),
    [
        ({"control_plane_metrics_bind": "loopback"}, "127.0.0.1"),
        ({"prometheus_enabled": False}, "127.0.0.1"),
        ({"prometheus_enabled": False, "control_plane_metrics_bind": "node"}, "10.0.0.11"),
    ],
)
def test_controller_manager_and_scheduler_bind_loopback_unless_scraped(
    setup: Path, data: dict[str, Any], bound: str
) -> None:
    result = deploy(setup, data)
    for service in ("kube-controller-manager", "kube-scheduler"):
        assert flags(result.uploads[UNIT.format(service)])["bind-address"] == bound


def test_without_the_ca_key_no_csr_signing(setup: Path) -> None:
    result = deploy(setup, {"pki_install_ca_key": False})
    cm = flags(result.uploads[UNIT.format("kube-controller-manager")])
    assert "cluster-signing-key-file" not in cm


def test_settings_and_extra_args(setup: Path) -> None:
    data = {
        "apiserver_port": 7443,
        "controller_manager_port": 11257,
        "scheduler_port": 11259,
        "cluster_nodeport_range": "31000-31999",
        "cluster_service_cidr": "10.32.0.0/16",
        "cluster_dns_ip": "10.32.0.10",
        "cluster_domain": "k8s.example",
        "kubernetes_pki_dir": "/srv/k8s/pki",
        "kubernetes_config_dir": "/srv/k8s",
        "control_plane_apiserver_extra_args": {"--event-ttl": "2h", "profiling": False},
        "control_plane_scheduler_extra_args": {"v": 2},
        "control_plane_audit_log_dir": "/srv/audit",
    }
    result = deploy(setup, data)
    api = flags(result.uploads[UNIT.format("kube-apiserver")])
    assert api["secure-port"] == "7443" and api["service-node-port-range"] == "31000-31999"
    assert api["service-cluster-ip-range"] == "10.32.0.0/16"
    assert api["service-account-issuer"] == "https://kubernetes.default.svc.k8s.example"
    assert api["event-ttl"] == "2h" and api["audit-log-path"] == "/srv/audit/audit.log"
    assert api["client-ca-file"] == "/srv/k8s/pki/ca.crt"
    assert api["authentication-config"] == "/srv/k8s/authentication-config.yaml"
    scheduler = flags(result.uploads[UNIT.format("kube-scheduler")])
    assert scheduler["v"] == "2" and scheduler["secure-port"] == "11259"
    assert scheduler["kubeconfig"] == "/srv/k8s/scheduler.conf"
    assert flags(result.uploads[UNIT.format("kube-controller-manager")])["secure-port"] == "11257"
    assert result.op("Audit log directory").commands[-1] == "chmod 700 /srv/audit"
    assert "/srv/k8s/.encryption-config.yaml.spectra-new" in result.uploads


def test_node_address_is_the_apiserver_address(setup: Path) -> None:
    where = {"node_address": "10.9.0.11", "private_ip": "10.0.0.99", "ssh_hostname": "203.0.113.11"}
    result = deploy(setup, where)
    api = flags(result.uploads[UNIT.format("kube-apiserver")])
    assert api["bind-address"] == api["advertise-address"] == "10.9.0.11"
    assert api["etcd-servers"] == "https://10.9.0.11:2379"  # this host is also the etcd member
    assert "--server https://10.9.0.11:6443" in result.op("kube-apiserver ready").commands[0]


def test_flag_values_are_escaped_for_systemd(setup: Path) -> None:
    result = deploy(setup, {"control_plane_apiserver_extra_args": {"x": "100%", "y": "a b"}})
    unit = result.uploads[UNIT.format("kube-apiserver")]
    assert "--x=100%% \\" in unit and '"--y=a b"' in unit


def test_three_etcd_members(setup: Path) -> None:
    etcd = {
        "etcd-c": {"roles": ["etcd"], "ssh_hostname": "10.0.0.23"},
        "etcd-a": {"roles": ["etcd"], "ssh_hostname": "bastion", "private_ip": "10.0.0.21"},
        "etcd-b": {"roles": ["etcd"], "node_address": "fd00::22"},
    }
    api = flags(deploy(setup, others=etcd).uploads[UNIT.format("kube-apiserver")])
    expected = "https://10.0.0.21:2379,https://[fd00::22]:2379,https://10.0.0.23:2379,https://10.0.0.11:2379"
    assert api["etcd-servers"] == expected  # every member by name, this host (testhost) last


def test_no_etcd_members_refused(setup: Path) -> None:
    with pytest.raises(DeployError, match="no etcd servers: no inventory host has the etcd role"):
        deploy(setup, {"roles": ["control_plane"]})
    # external etcd: the servers given
    external = {"roles": ["control_plane"], "control_plane_etcd_servers": ["https://ext:2379"]}
    api = flags(deploy(setup, external).uploads[UNIT.format("kube-apiserver")])
    assert api["etcd-servers"] == "https://ext:2379"


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "cp1.example.com"])
def test_apiserver_address_must_be_a_routable_ip(setup: Path, address: str) -> None:
    with pytest.raises(DeployError, match="must not bind|is not an IP address for the apiserver's bind address"):
        deploy(setup, {"node_address": address})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"control_plane_encryption_provider": "aesgcm"},
         "control_plane_encryption_provider='aesgcm': not one of 'secretbox', 'aescbc'"),
        ({"control_plane_tls_min_version": "VersionTLS10"}, "control_plane_tls_min_version='VersionTLS10': not one"),
        ({"control_plane_apiserver_extra_args": {"bad flag": "x"}}, "['bad flag'] are not flag names"),
        ({"control_plane_anonymous_paths": ["readyz"]}, "control_plane_anonymous_paths=['readyz']: a list of URL"),
        ({"control_plane_etcd_servers": ["http://ext:2379"]}, "control_plane_etcd_servers=['http://ext:2379']"),
        ({"control_plane_shutdown_watch_grace_period": "5"}, "control_plane_shutdown_watch_grace_period='5'"),
        ({"kubernetes_version": "1.36.3"}, "kubernetes_version='1.36.3': a release tag like v1.36.3"),
        ({"control_plane_admission_plugins": ["DenyServiceExternalIPs"]}, "must keep NodeRestriction"),
        ({"control_plane_admission_plugins": ["NodeRestriction", "event-rate"]}, "a list of admission plugin names"),
        ({"control_plane_event_rate_limits": []}, "at least one limit while EventRateLimit is enabled"),
        ({"control_plane_event_rate_limits": [{"type": "Pod", "qps": 1, "burst": 1}]}, "type 'Pod': one of Server"),
        ({"control_plane_event_rate_limits": [{"type": "User", "qps": 0, "burst": 5}]}, "User qps=0: a whole number"),
        ({"control_plane_event_rate_limits": [{"type": "Server", "qps": 5, "burst": 5, "cacheSize": 9}]},
         "a Server limit has no cacheSize"),
        ({"control_plane_event_rate_limits": [{"type": "Server", "qps": 5}]}, "is not a mapping of type, qps, burst"),
        ({"control_plane_service_account_extend_token_expiration": "no"},
         "control_plane_service_account_extend_token_expiration='no': true or false"),
    ],
)  # fmt: skip
def test_bad_settings_refused_before_anything(setup: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match="invalid settings") as error:
        deploy(setup, data)
    assert message in str(error.value)
    assert not setup.exists()  # neither the PKI nor the encryption key was made


def test_missing_kubernetes_sums_refused(setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "partial.yaml"
    checksums.write_table(table, {"v1.36.3": {"amd64": {"kubectl": SUMS["kubectl"]}}})
    monkeypatch.setattr(checksums, "KUBERNETES_TABLE", table)
    with pytest.raises(DeployError, match="no sha256 for kube-apiserver v1.36.3 linux/amd64"):
        deploy(setup)


def test_binaries_installed_from_the_release(setup: Path) -> None:
    result = deploy(setup)
    for name in cp.BINARIES:
        command = result.op(f"Install {name} v1.36.3").commands[0]
        assert f"https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/{name} /usr/local/bin/{name} {SUMS[name]}" in command


def test_one_remote_command_for_the_component(setup: Path) -> None:
    result = deploy(setup)
    # the bindings are read again after the apiserver started (the prepare-time answer was not a full one)
    assert [name for name, _ in result.fact_reads] == ["facts.combined.Facts", "facts.kubernetes.ClusterRoleBindings"]
    assert result.facts_read == [
        "facts.platform.Platform", "facts.files.FileStates", "facts.systemd.SystemdUnits",
        "facts.kubernetes.ClusterRoleBindings", "facts.kubernetes.ClusterRoleBindings",
    ]  # fmt: skip


def test_config_files(setup: Path) -> None:
    result = deploy(setup)
    staged = "/etc/kubernetes/.encryption-config.yaml.spectra-new"
    assert result.op("Secrets encryption configuration").commands[-2:] == [
        f"chown root:root {staged} && chmod 600 {staged}",
        f"mv -f {staged} /etc/kubernetes/encryption-config.yaml",
    ]
    encryption = yaml.safe_load(result.uploads[CONFIGS["encryption"]])
    providers = encryption["resources"][0]["providers"]
    assert encryption["resources"][0]["resources"] == ["secrets"]
    assert list(providers[0]) == ["secretbox"] and providers[1] == {"identity": {}}
    key = base64.b64decode(providers[0]["secretbox"]["keys"][0]["secret"])
    assert len(key) == 32
    authentication = yaml.safe_load(result.uploads[CONFIGS["authentication"]])
    assert authentication["anonymous"] == {
        "enabled": True,
        "conditions": [{"path": "/livez"}, {"path": "/readyz"}, {"path": "/healthz"}],
    }
    audit = yaml.safe_load(result.uploads[CONFIGS["audit"]])
    assert audit["kind"] == "Policy" and audit["rules"][-1] == {"level": "Metadata"}
    secrets = next(rule for rule in audit["rules"] if {"group": "", "resources": ["secrets", "configmaps",
                                                                                      "serviceaccounts/token"]}
                   in rule.get("resources", []))  # fmt: skip
    assert secrets["level"] == "Metadata"  # never the Secret's body in the log
    closed = yaml.safe_load(deploy(setup, {"control_plane_anonymous_paths": []}).uploads[CONFIGS["authentication"]])
    assert closed["anonymous"] == {"enabled": False}
    aescbc = yaml.safe_load(
        deploy(setup, {"control_plane_encryption_provider": "aescbc"}).uploads[CONFIGS["encryption"]]
    )
    assert list(aescbc["resources"][0]["providers"][0]) == ["aescbc"]


def test_admission_configuration(setup: Path) -> None:
    result = deploy(setup)
    staged = CONFIGS["admission"]
    assert result.op("Admission configuration (EventRateLimit)").commands[-2:] == [
        f"chown root:root {staged} && chmod 600 {staged}",
        f"mv -f {staged} /etc/kubernetes/admission-config.yaml",
    ]
    assert yaml.safe_load(result.uploads[staged]) == {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{
            "name": "EventRateLimit",
            "configuration": {
                "apiVersion": "eventratelimit.admission.k8s.io/v1alpha1",
                "kind": "Configuration",
                "limits": [
                    {"type": "Server", "qps": 500, "burst": 1000},
                    {"type": "Namespace", "qps": 50, "burst": 100, "cacheSize": 2000},
                ],
            },
        }],
    }  # fmt: skip
    # EventRateLimit left out: no limits in the file, the plugin not enabled, the file still named
    data = {"control_plane_admission_plugins": ["NodeRestriction", "DenyServiceExternalIPs"]}
    without = deploy(setup, data)
    assert yaml.safe_load(without.uploads[staged])["plugins"] == []
    api = flags(without.uploads[UNIT.format("kube-apiserver")])
    assert api["enable-admission-plugins"] == "NodeRestriction,DenyServiceExternalIPs"
    assert api["admission-control-config-file"] == "/etc/kubernetes/admission-config.yaml"
    extended = deploy(setup, {"control_plane_service_account_extend_token_expiration": True})
    assert flags(extended.uploads[UNIT.format("kube-apiserver")])["service-account-extend-token-expiration"] == "true"


def test_encryption_key_made_once_and_reused(setup: Path) -> None:
    first = deploy(setup).uploads[CONFIGS["encryption"]]
    path = setup / ENCRYPTION_KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    written = path.read_text()
    assert len(base64.b64decode(written)) == 32 and written.strip() in first
    # a later run (another process: another pyinfra State) reads the same key
    assert deploy(setup).uploads[CONFIGS["encryption"]] == first
    assert path.read_text() == written


def test_broken_encryption_key_is_never_replaced(setup: Path) -> None:
    setup.mkdir(parents=True)
    (setup / ENCRYPTION_KEY_FILE).write_text("c2hvcnQ=\n")
    with pytest.raises(DeployError, match="does not hold a base64 32-byte key: restore it"):
        deploy(setup)
    assert (setup / ENCRYPTION_KEY_FILE).read_text() == "c2hvcnQ=\n"


def test_fresh_install_starts_and_waits(setup: Path) -> None:
    result = deploy(setup)
    for service in cp.SERVICES:
        assert result.op(f"{service} running and enabled").commands == [
            "systemctl daemon-reload", f"systemctl start {service}.service", f"systemctl enable {service}.service",
        ]  # fmt: skip
        assert (
            result.op(f"{service} restarted on new PKI files").commands[0] == f"systemctl try-restart {service}.service"
        )
    ready = result.op("kube-apiserver ready")
    assert ready.has_if
    assert (
        "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf --server https://10.0.0.11:6443"
        in ready.commands[0]
    )
    assert "get --raw /readyz" in ready.commands[0] and "-ge 180" in ready.commands[0]


def test_credentials_stamps(setup: Path) -> None:
    result = deploy(setup)
    stamps = {path: text for path, text in result.uploads.items() if "credentials.sha256" in path}
    apiserver = next(text for path, text in stamps.items() if "kube-apiserver" in path)
    assert f"{PKI}/apiserver-etcd-client.key\n" in apiserver and f"{PKI}/sa.key\n" in apiserver
    scheduler = next(text for path, text in stamps.items() if "kube-scheduler" in path)
    assert scheduler == f"{pki_file('/etc/kubernetes/scheduler.conf')['sha256']}  /etc/kubernetes/scheduler.conf\n"
    cm = next(text for path, text in stamps.items() if "kube-controller-manager" in path)
    assert f"{PKI}/ca.key\n" in cm and "/etc/kubernetes/controller-manager.conf\n" in cm


def converged(first: Result, bindings: Any = OK_BINDINGS) -> dict[Any, Any]:
    states: dict[str, Any] = {}
    root = {"type": "file", "mode": "644", "user": "root", "group": "root"}
    for temp, text in first.uploads.items():
        if not temp.endswith(".spectra-new"):
            continue
        directory, name = temp.rsplit("/", 1)
        path = f"{directory}/{name[1:].removesuffix('.spectra-new')}"
        mode = "600" if path.endswith((".yaml", ".service")) else "644"
        states[path] = {**root, "mode": mode, "sha256": hashlib.sha256(text.encode()).hexdigest(), "content": text}
    for index, name in enumerate(cp.BINARIES):
        binary = f"/usr/local/bin/{name}"
        stat = {"size": 1000 + index, "mtime": "1.000000000", "ctime": "2.000000000", "inode": str(50 + index)}
        states[binary] = {**root, "mode": "755", "sha256": None, **stat}
        states[stamp_path(binary)] = {
            **root, "content": f"{SUMS[name]} {SUMS[name]} {stat['size']} 1.000000000 2.000000000 {stat['inode']}\n",
        }  # fmt: skip
    states["/var/log/kubernetes/audit"] = {"type": "directory", "mode": "700", "user": "root", "group": "root"}

    def files(paths: list[str], **_: Any) -> dict[str, Any]:
        return {path: states.get(path) or with_pki([path])[path] for path in paths}

    units = {f"{service}.service": {"id": f"{service}.service", **RUNNING} for service in cp.SERVICES}
    return {FileStates: files, SystemdUnits: lambda **_: units, ClusterRoleBindings: lambda **_: bindings}


def test_converged_is_noop(setup: Path) -> None:
    first = deploy(setup)
    second = deploy(setup, facts=converged(first))
    assert [command for op in second.ops if not op.has_if for command in op.commands] == []
    assert second.op("RBAC bindings").noops == [
        "RBAC bindings exist: kubeadm:cluster-admins, kubeadm:node-autoapprove-certificate-rotation"
    ]
    assert len(second.fact_reads) == 1


def test_changed_flag_restarts_only_that_service(setup: Path) -> None:
    first = deploy(setup)
    second = deploy(setup, {"control_plane_scheduler_extra_args": {"v": 4}}, facts=converged(first))
    assert second.op("kube-scheduler running").commands == [
        "systemctl daemon-reload",
        "systemctl restart kube-scheduler.service",
    ]
    assert second.op("kube-apiserver running").commands == []
    assert second.op("kube-controller-manager running").commands == []


def test_changed_apiserver_config_restarts_the_apiserver(setup: Path) -> None:
    first = deploy(setup)
    second = deploy(setup, {"control_plane_anonymous_paths": ["/livez"]}, facts=converged(first))
    assert second.op("Authentication configuration").changed
    assert second.op("kube-apiserver running").commands == ["systemctl restart kube-apiserver.service"]
    assert second.op("kube-scheduler running").commands == []


def test_new_binary_restarts_its_service(setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = deploy(setup)
    new = {**SUMS, "kube-controller-manager": "f" * 64}
    table = tmp_path / "new.yaml"
    checksums.write_table(table, {"v1.36.3": {"amd64": new}})
    monkeypatch.setattr(checksums, "KUBERNETES_TABLE", table)
    second = deploy(setup, facts=converged(first))
    assert second.op("kube-controller-manager running").commands == [
        "systemctl restart kube-controller-manager.service"
    ]
    assert second.op("kube-apiserver running").commands == []


def test_reissued_certificate_restarts_the_apiserver(setup: Path) -> None:
    first = deploy(setup)
    facts = converged(first)
    files = facts[FileStates]

    def renewed(paths: list[str], **kwargs: Any) -> dict[str, Any]:
        states = files(paths, **kwargs)
        if f"{PKI}/apiserver.crt" in states:
            states[f"{PKI}/apiserver.crt"] = {**pki_file(f"{PKI}/apiserver.crt"), "sha256": "9" * 64}
        return states

    # the first run's stamps as the host holds them
    stamps = {path.replace("/.", "/").removesuffix(".spectra-new"): text for path, text in first.uploads.items()
              if "credentials.sha256" in path}  # fmt: skip

    def with_stamps(paths: list[str], **kwargs: Any) -> dict[str, Any]:
        states = renewed(paths, **kwargs)
        for path, text in stamps.items():
            if path in states:
                states[path] = {"type": "file", "mode": "644", "user": "root", "group": "root", "content": text,
                                "sha256": hashlib.sha256(text.encode()).hexdigest()}  # fmt: skip
        return states

    second = deploy(setup, facts={**facts, FileStates: with_stamps})
    assert (
        second.op("kube-apiserver restarted on new PKI files").commands[0]
        == "systemctl try-restart kube-apiserver.service"
    )
    assert second.op("kube-scheduler restarted on new PKI files").commands == []
    assert second.op("kube-apiserver running").commands == []


def test_rbac_bootstrap_when_missing(setup: Path) -> None:
    first = deploy(setup)
    second = deploy(setup, facts=converged(first, FORBIDDEN))
    commands = second.op("RBAC bindings").commands
    assert commands[0] == f"rm -rf {BOOTSTRAP_DIR} && install -d -m 0700 {BOOTSTRAP_DIR}"
    assert commands[1] == f"install -m 0600 /dev/null {BOOTSTRAP_DIR}/super-admin.conf"
    assert commands[-1].startswith("sh -c 'trap '\"'\"'rm -rf \"$2\"'\"'\"' EXIT;")
    assert commands[-1].endswith(f"spectra-rbac /usr/local/bin/kubectl {BOOTSTRAP_DIR} https://10.0.0.11:6443")
    super_admin = yaml.safe_load(second.uploads[f"{BOOTSTRAP_DIR}/super-admin.conf"])
    assert super_admin["users"][0]["name"] == "kubernetes-super-admin"
    assert super_admin["clusters"][0]["cluster"]["server"] == "https://10.0.0.11:6443"
    manifest = list(yaml.safe_load_all(second.uploads[f"{BOOTSTRAP_DIR}/rbac.yaml"]))
    assert [(doc["metadata"]["name"], doc["roleRef"]["name"], doc["subjects"][0]["name"]) for doc in manifest] == [
        ("kubeadm:cluster-admins", "cluster-admin", "kubeadm:cluster-admins"),
        ("kubeadm:node-autoapprove-certificate-rotation",
         "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"),
    ]  # fmt: skip


def test_rbac_bootstrap_only_the_missing_binding(setup: Path) -> None:
    first = deploy(setup)
    partial = {**OK_BINDINGS, "bindings": {"kubeadm:cluster-admins": OK_BINDINGS["bindings"]["kubeadm:cluster-admins"]}}
    second = deploy(setup, facts=converged(first, partial))
    manifest = list(yaml.safe_load_all(second.uploads[f"{BOOTSTRAP_DIR}/rbac.yaml"]))
    assert [doc["metadata"]["name"] for doc in manifest] == ["kubeadm:node-autoapprove-certificate-rotation"]
    # a binding to another role is not the one wanted
    wrong = {**OK_BINDINGS, "bindings": {**OK_BINDINGS["bindings"], "kubeadm:cluster-admins": {
        "role": "ClusterRole/view", "subjects": ["Group:kubeadm:cluster-admins"]}}}  # fmt: skip
    third = deploy(setup, facts=converged(first, wrong))
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(third.uploads[f"{BOOTSTRAP_DIR}/rbac.yaml"])] == [
        "kubeadm:cluster-admins"
    ]


def test_rbac_unreadable_fails(setup: Path) -> None:
    first = deploy(setup)
    down = {"state": "error", "bindings": {}, "message": "connection refused"}
    with pytest.raises(OperationError, match="cannot read the cluster's RBAC bindings at https://10.0.0.11:6443: conn"):
        deploy(setup, facts=converged(first, down))


def test_rbac_only_on_the_first_control_plane(setup: Path) -> None:
    first = {"cp-a": {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.10"}}
    result = deploy(setup, others=first)
    assert not result.has_op("RBAC bindings")
    assert "facts.kubernetes.ClusterRoleBindings" not in result.facts_read
    assert not (setup / "super-admin.crt").exists()
    result = deploy(setup, {"control_plane_rbac_bootstrap": False})
    assert not result.has_op("RBAC bindings")


def installed_config(text: str) -> dict[Any, Any]:
    path = "/etc/kubernetes/encryption-config.yaml"
    state = {"type": "file", "mode": "600", "user": "root", "group": "root", "sha256": "0" * 64, "content": text}
    return {FileStates: lambda paths, **kw: {**with_pki(paths, **kw), **({path: state} if path in paths else {})}}


def test_host_with_another_encryption_key_stops(setup: Path) -> None:
    other = deploy(setup).uploads[CONFIGS["encryption"]]
    # the PKI directory lost its key file: a new key is made, but the host's Secrets are encrypted with the old one
    (setup / ENCRYPTION_KEY_FILE).unlink()
    with pytest.raises(DeployError, match=r"encryption-config.yaml holds another key than .*secrets-encryption.key"):
        deploy(setup, facts=installed_config(other))
    with pytest.raises(DeployError, match=r"encryption-config.yaml cannot be read"):
        deploy(setup, facts=installed_config("not: [an, encryption, config"))
    # deliberately: replaced
    result = deploy(setup, {"control_plane_allow_encryption_key_change": True}, facts=installed_config(other))
    assert result.uploads[CONFIGS["encryption"]] != other


def test_host_with_the_same_key_passes(setup: Path) -> None:
    config = deploy(setup).uploads[CONFIGS["encryption"]]
    # a config written by an earlier version (other layout, same key) is simply rewritten
    key = (setup / ENCRYPTION_KEY_FILE).read_text().strip()
    older = yaml.safe_dump({"resources": [{"resources": ["secrets"], "providers": [
        {"aescbc": {"keys": [{"name": "a", "secret": key}]}}, {"identity": {}}]}]})  # fmt: skip
    assert deploy(setup, facts=installed_config(older)).uploads[CONFIGS["encryption"]] == config
