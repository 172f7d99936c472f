"""The Prometheus addon's manifest for a three-host inventory: scrape jobs derived from the topology and the
cluster settings, TLS and RBAC, the node-local volume, restricted pods, and bad settings refused by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError

from deploys.components import local_storage, local_volume_dirs, prometheus
from facts.addons import AddonSets
from facts.files import FileStates
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

STAGED = "/etc/kubernetes/addons/prometheus.yaml.spectra-new"


@pytest.fixture(autouse=True, scope="module")
def one_pki(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One cluster PKI for the module (making one costs seconds of RSA key generation)."""
    _PKI.append(tmp_path_factory.mktemp("pki"))


_PKI: list[Path] = []


def hosts(_: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    shared = {"pki_dir": str(_PKI[-1])}
    cp = {**shared, "roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11", "zone": "a"}
    others = {
        "node2": {**shared, "roles": ["workers", "monitoring"], "ssh_hostname": "10.0.0.12", "zone": "b"},
        "node3": {**shared, "roles": ["workers"], "ssh_hostname": "10.0.0.13", "zone": "c"},
    }
    return cp, others


def manifest(tmp_path: Path, **data: Any) -> dict[tuple[str, str], dict[str, Any]]:
    cp, others = hosts(tmp_path / "pki")
    others = {name: {**values, **data} for name, values in others.items()}  # cluster-wide keys agree
    result = run_component(prometheus.COMPONENT, facts={AddonSets: {}}, data={**cp, **data}, others=others)
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(result.uploads[STAGED])}


def config(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return dict(yaml.safe_load(docs[("ConfigMap", "prometheus-config")]["data"]["prometheus.yml"]))


def jobs(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config(docs)["scrape_configs"]}


def test_every_job_the_rules_name_is_scraped(tmp_path: Path) -> None:
    found = jobs(manifest(tmp_path))
    assert list(found) == [
        "prometheus", "node-exporter", "kubelet", "cadvisor", "apiserver", "etcd",
        "kube-controller-manager", "kube-scheduler", "coredns", "alertmanager", "metrics-server",
    ]  # fmt: skip
    assert config(manifest(tmp_path))["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["alertmanager.monitoring.svc:9093"]}]}]
    }
    assert "alerting" not in config(manifest(tmp_path, alertmanager_enabled=False))
    import re

    named = set(re.findall(r'job="([a-z-]+)"', (prometheus.RULES_DIR / "alerts.yaml").read_text()))
    # an alert on a job no one scrapes could never fire (alertmanager and metrics-server: their own addons)
    assert named <= set(found) and "node-exporter" in named


def test_targets_come_from_the_topology_and_the_cluster_settings(tmp_path: Path) -> None:
    found = jobs(manifest(tmp_path, apiserver_port=7443, etcd_client_port=12379))
    assert found["node-exporter"]["static_configs"] == [
        {"targets": ["10.0.0.12:9100"], "labels": {"node": "node2", "zone": "b"}},
        {"targets": ["10.0.0.13:9100"], "labels": {"node": "node3", "zone": "c"}},
        {"targets": ["10.0.0.11:9100"], "labels": {"node": "testhost", "zone": "a"}},
    ]
    assert [c["targets"] for c in found["apiserver"]["static_configs"]] == [["10.0.0.11:7443"]]
    assert [c["targets"] for c in found["etcd"]["static_configs"]] == [["10.0.0.11:12379"]]
    assert [c["targets"] for c in found["kube-scheduler"]["static_configs"]] == [["10.0.0.11:10259"]]


def test_tls_and_tokens(tmp_path: Path) -> None:
    found = jobs(manifest(tmp_path))
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    for job in ("kubelet", "cadvisor", "apiserver"):
        assert found[job]["scheme"] == "https"
        assert found[job]["tls_config"] == {"ca_file": f"{sa}/ca.crt"}  # verified, never insecure
        assert found[job]["authorization"] == {"credentials_file": f"{sa}/token"}
    assert found["etcd"]["tls_config"]["cert_file"] == "/etc/prometheus/etcd/tls.crt"


def test_etcd_client_certificate_is_from_the_etcd_ca(tmp_path: Path) -> None:
    from cryptography import x509

    docs = manifest(tmp_path)
    secret = docs[("Secret", "prometheus-etcd-client")]["stringData"]
    cert = x509.load_pem_x509_certificate(secret["tls.crt"].encode())
    ca = x509.load_pem_x509_certificate(secret["ca.crt"].encode())
    assert cert.issuer == ca.subject
    assert cert.subject.rfc4514_string() == "CN=spectra-monitoring-etcd-client"
    assert (_PKI[-1] / "etcd" / "ca.crt").read_text() == secret["ca.crt"]


def test_rbac_is_least_privilege(tmp_path: Path) -> None:
    role = manifest(tmp_path)[("ClusterRole", "spectra:prometheus")]
    verbs = {tuple(rule.get("resources", rule.get("nonResourceURLs"))): rule["verbs"] for rule in role["rules"]}
    assert verbs == {("nodes", "pods"): ["get", "list", "watch"], ("nodes/metrics",): ["get"], ("/metrics",): ["get"]}


def test_pod_is_restricted_with_resources_and_retention(tmp_path: Path) -> None:
    docs = manifest(tmp_path, prometheus_retention_time="7d", prometheus_retention_size="4GB")
    spec = docs[("StatefulSet", "prometheus")]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert set(container["resources"]) == {"requests", "limits"}
    assert "--storage.tsdb.retention.time=7d" in container["args"]
    assert "--storage.tsdb.retention.size=4GB" in container["args"]


def test_config_change_changes_the_pod_template(tmp_path: Path) -> None:
    def checksum(**data: Any) -> str:
        template = manifest(tmp_path, **data)[("StatefulSet", "prometheus")]["spec"]["template"]
        return str(template["metadata"]["annotations"]["spectra.io/config-sha256"])

    assert checksum() == checksum()
    assert checksum() != checksum(prometheus_scrape_interval="30s")


def test_volume_on_the_monitoring_host(tmp_path: Path) -> None:
    cp, others = hosts(tmp_path / "pki")
    result = run_component(local_storage.COMPONENT, facts={AddonSets: {}}, data=cp, others=others)
    docs = list(yaml.safe_load_all(result.uploads["/etc/kubernetes/addons/local-storage.yaml.spectra-new"]))
    volumes = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "PersistentVolume"}
    assert {"spectra-monitoring-data-alertmanager-0", "spectra-monitoring-data-prometheus-0"} <= set(volumes)
    volume = volumes["spectra-monitoring-data-prometheus-0"]
    assert volume["spec"]["claimRef"] == {"namespace": "monitoring", "name": "data-prometheus-0"}
    assert volume["spec"]["local"] == {"path": "/var/lib/spectra/volumes/monitoring/data-prometheus-0"}
    term = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == ["node2"]
    # the directory is made on the monitoring host only, owned by the user Prometheus runs as
    assert run_component(local_volume_dirs.COMPONENT, facts={}, data=cp, others=others).ops == []
    monitoring = {**others.pop("node2")}
    made = run_component(local_volume_dirs.COMPONENT, facts={FileStates: lambda paths, **_: dict.fromkeys(paths)},
                         data=monitoring, others={"node1": cp, **others})  # fmt: skip
    assert made.op("Volume monitoring/data-prometheus-0").commands == [
        "mkdir -p /var/lib/spectra/volumes/monitoring/data-prometheus-0",
        "chown nobody:nogroup /var/lib/spectra/volumes/monitoring/data-prometheus-0",
        "chmod 2770 /var/lib/spectra/volumes/monitoring/data-prometheus-0",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prometheus_retention_time": "-1d"}, "prometheus_retention_time='-1d': a Prometheus duration"),
        ({"prometheus_retention_size": "8 gigs"}, "prometheus_retention_size="),
        ({"prometheus_extra_scrape_configs": [{"job_name": "x", "targets": ["db.example"]}]}, "names no port"),
        ({"prometheus_extra_scrape_configs": [{"targets": ["db:9"]}]}, "with a job_name"),
        ({"prometheus_memory_limit": "lots"}, "prometheus_memory_limit="),
    ],
)
def test_bad_settings_stop_before_anything(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    cp, others = hosts(tmp_path / "pki")
    with pytest.raises(DeployError, match=message):
        run_component(prometheus.COMPONENT, facts={}, data={**cp, **data}, others=others)


def test_no_monitoring_host_is_a_clear_error(tmp_path: Path) -> None:
    cp, others = hosts(tmp_path / "pki")
    others["node2"]["roles"] = ["workers"]
    with pytest.raises(DeployError, match="give a host that runs kubelet the monitoring role"):
        run_component(prometheus.COMPONENT, facts={AddonSets: {}}, data=cp, others=others)


def test_application_services_with_a_metrics_port_are_scraped_by_their_pod_labels() -> None:
    services = {
        "shop-api/api": {"selector": {"app.kubernetes.io/name": "api"}, "ports": {"http": 8080, "m": 9090},
                         "metrics_port": "m"},
        "shop-web/web": {"selector": {"app.kubernetes.io/name": "web"}, "ports": {"http": 8080}},
    }  # fmt: skip
    assert prometheus.application_jobs(services) == [
        {
            "job_name": "shop-api/api",
            "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": ["shop-api"]}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "regex": "api",
                 "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_container_port_number"], "action": "keep", "regex": "9090"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
            ],
        }
    ]  # fmt: skip
