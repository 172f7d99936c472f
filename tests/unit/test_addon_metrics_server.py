"""The metrics-server addon's manifest for a three-host inventory: every object, TLS verified both ways (kubelets
with the cluster CA, the APIService with the PKI's CA and a PKI serving certificate), least-privilege RBAC,
restricted pods on the monitoring host, and bad settings refused by key."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from pyinfra.api import DeployError

from deploys.components import metrics_server
from deploys.components import pki as pki_component
from facts.addons import AddonSets
from tests.unit.pki_support import key_factory
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

STAGED = "/etc/kubernetes/addons/metrics-server.yaml.spectra-new"
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
EXAMPLES = Path(__file__).resolve().parents[2] / "templates" / "addons" / "metrics-server" / "examples"


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cluster PKI for the module: made by the first test, loaded by the others."""
    return tmp_path_factory.mktemp("metrics-server") / "pki"


@pytest.fixture(autouse=True)
def fast_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pki_component, "key_factory", key_factory())


def hosts(pki_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    shared = {"pki_dir": str(pki_dir)}
    cp = {**shared, "roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11", "zone": "a"}
    others = {
        "node2": {**shared, "roles": ["workers", "monitoring"], "ssh_hostname": "10.0.0.12", "zone": "b"},
        "node3": {**shared, "roles": ["workers"], "ssh_hostname": "10.0.0.13", "zone": "c"},
    }
    return cp, others


def manifest(pki_dir: Path, **data: Any) -> list[dict[str, Any]]:
    cp, others = hosts(pki_dir)
    others = {name: {**values, **data} for name, values in others.items()}
    result = run_component(metrics_server.COMPONENT, facts={AddonSets: {}}, data={**cp, **data}, others=others)
    return [doc for doc in yaml.safe_load_all(result.uploads[STAGED]) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(by_kind(docs)[("Deployment", "metrics-server")]["spec"]["template"]["spec"])


def test_every_object_of_the_defaults(pki_dir: Path) -> None:
    docs = manifest(pki_dir)
    assert [(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")) for doc in docs] == [
        ("ServiceAccount", "metrics-server", "kube-system"),
        ("ClusterRole", "system:metrics-server", None),
        ("ClusterRoleBinding", "system:metrics-server", None),
        ("ClusterRoleBinding", "metrics-server:system:auth-delegator", None),
        ("RoleBinding", "metrics-server-auth-reader", "kube-system"),
        ("ClusterRole", "system:aggregated-metrics-reader", None),
        ("Secret", "metrics-server-tls", "kube-system"),
        ("Deployment", "metrics-server", "kube-system"),
        ("Service", "metrics-server", "kube-system"),
        ("APIService", "v1beta1.metrics.k8s.io", None),
    ]
    for doc in docs:
        assert doc["metadata"]["labels"]["spectra.io/addon-set"] == "metrics-server"
    deployment = by_kind(docs)[("Deployment", "metrics-server")]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0}
    (container,) = pod_spec(docs)["containers"]
    assert container["image"] == "registry.k8s.io/metrics-server/metrics-server:v0.8.0"
    assert container["args"] == [
        "--secure-port=10250",
        "--tls-cert-file=/etc/metrics-server/tls/tls.crt",
        "--tls-private-key-file=/etc/metrics-server/tls/tls.key",
        f"--kubelet-certificate-authority={SA_CA}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        "--metric-resolution=15s",
    ]
    assert container["ports"] == [{"name": "https", "containerPort": 10250, "protocol": "TCP"}]
    assert container["volumeMounts"] == [{"name": "tls", "mountPath": "/etc/metrics-server/tls", "readOnly": True}]
    assert pod_spec(docs)["volumes"] == [
        {"name": "tls", "secret": {"secretName": "metrics-server-tls", "defaultMode": 0o440}}
    ]
    service = by_kind(docs)[("Service", "metrics-server")]["spec"]
    assert service["selector"] == {"k8s-app": "metrics-server"}
    assert service["ports"] == [
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https", "appProtocol": "https"}
    ]


def test_nothing_is_insecure(pki_dir: Path) -> None:
    cp, others = hosts(pki_dir)
    text = run_component(metrics_server.COMPONENT, facts={AddonSets: {}}, data=cp, others=others).uploads[STAGED]
    assert "insecure" not in text.lower()  # neither --kubelet-insecure-tls nor insecureSkipTLSVerify
    assert "--cert-dir" not in text  # no self-signed certificate


def test_apiservice_verifies_with_the_pki_ca(pki_dir: Path) -> None:
    docs = manifest(pki_dir)
    spec = by_kind(docs)[("APIService", "v1beta1.metrics.k8s.io")]["spec"]
    ca_pem = (pki_dir / "ca.crt").read_bytes()
    assert base64.b64decode(spec["caBundle"]) == ca_pem
    assert spec["service"] == {"name": "metrics-server", "namespace": "kube-system", "port": 443}
    assert (spec["group"], spec["version"]) == ("metrics.k8s.io", "v1beta1")
    assert "insecureSkipTLSVerify" not in spec


def test_serving_certificate_is_from_the_cluster_ca_for_the_service_name(pki_dir: Path) -> None:
    docs = manifest(pki_dir)
    secret = by_kind(docs)[("Secret", "metrics-server-tls")]
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(secret["stringData"]["tls.crt"].encode())
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "metrics-server.kube-system.svc" in names.get_values_for_type(x509.DNSName)
    assert (pki_dir / "metrics-server.key").read_text() == secret["stringData"]["tls.key"]


def test_rbac_is_least_privilege(pki_dir: Path) -> None:
    docs = by_kind(manifest(pki_dir))

    def rules(name: str) -> dict[tuple[str, ...], list[str]]:
        return {tuple(rule["resources"]): rule["verbs"] for rule in docs[("ClusterRole", name)]["rules"]}

    assert rules("system:metrics-server") == {("nodes/metrics",): ["get"], ("nodes", "pods"): ["get", "list", "watch"]}
    assert docs[("ClusterRole", "system:metrics-server")]["rules"][0]["apiGroups"] == [""]
    reader = docs[("ClusterRole", "system:aggregated-metrics-reader")]
    assert rules("system:aggregated-metrics-reader") == {("nodes", "pods"): ["get", "list", "watch"]}
    assert reader["rules"][0]["apiGroups"] == ["metrics.k8s.io"]
    assert {key for key, value in reader["metadata"]["labels"].items() if value == "true"} == {
        f"rbac.authorization.k8s.io/aggregate-to-{role}" for role in ("view", "edit", "admin")
    }
    subject = [{"kind": "ServiceAccount", "name": "metrics-server", "namespace": "kube-system"}]
    for kind, name, role_kind, role in (
        ("ClusterRoleBinding", "system:metrics-server", "ClusterRole", "system:metrics-server"),
        ("ClusterRoleBinding", "metrics-server:system:auth-delegator", "ClusterRole", "system:auth-delegator"),
        ("RoleBinding", "metrics-server-auth-reader", "Role", "extension-apiserver-authentication-reader"),
    ):
        binding = docs[(kind, name)]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}
        assert binding["subjects"] == subject


def test_pod_is_restricted_with_requests_and_limits(pki_dir: Path) -> None:
    spec = pod_spec(manifest(pki_dir))
    (container,) = spec["containers"]
    assert spec["serviceAccountName"] == "metrics-server"
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "200Mi"},
        "limits": {"cpu": "1", "memory": "500Mi"},
    }
    assert {probe["httpGet"]["scheme"] for probe in (container["readinessProbe"], container["livenessProbe"])} == {
        "HTTPS"
    }


def test_runs_on_the_monitoring_hosts(pki_dir: Path) -> None:
    spec = pod_spec(manifest(pki_dir))
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node2"]}]
    chosen = pod_spec(manifest(pki_dir, metrics_server_nodes=["node3", "testhost"]))
    terms = chosen["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["node3", "testhost"]


def test_settings_reach_the_manifest(pki_dir: Path) -> None:
    docs = manifest(pki_dir, metrics_server_replicas=2, metrics_server_metric_resolution="30s",
                    metrics_server_memory_limit="1Gi")  # fmt: skip
    deployment = by_kind(docs)[("Deployment", "metrics-server")]
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][-1] == "--metric-resolution=30s"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    # several replicas: a drain keeps one
    budget = by_kind(docs)[("PodDisruptionBudget", "metrics-server")]["spec"]
    assert budget == {"minAvailable": 1, "selector": {"matchLabels": {"k8s-app": "metrics-server"}}}


def test_disabled_pushes_nothing(pki_dir: Path) -> None:
    cp, others = hosts(pki_dir)
    result = run_component(metrics_server.COMPONENT, facts={AddonSets: {}},
                           data={**cp, "metrics_server_enabled": False}, others=others)  # fmt: skip
    assert result.uploads == {} and result.ops == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"metrics_server_image": "Not An Image"}, "metrics_server_image='Not An Image': an image reference"),
        ({"metrics_server_replicas": 0}, "metrics_server_replicas=0: a whole number of at least 1"),
        ({"metrics_server_replicas": True}, "metrics_server_replicas=True"),
        ({"metrics_server_metric_resolution": "10s"}, "metrics_server_metric_resolution='10s': .* at least 12s"),
        ({"metrics_server_metric_resolution": "fast"}, "metrics_server_metric_resolution='fast'"),
        ({"metrics_server_metric_resolution": 15}, "metrics_server_metric_resolution=15"),
        ({"metrics_server_cpu_request": "lots"}, "metrics_server_cpu_request='lots': a Kubernetes quantity"),
        ({"metrics_server_memory_limit": "1 GB"}, "metrics_server_memory_limit='1 GB'"),
        ({"metrics_server_nodes": []}, "metrics_server_nodes=\\[\\]: None"),
        ({"metrics_server_nodes": ["Node_2"]}, "metrics_server_nodes="),
    ],
)
def test_bad_settings_are_refused_naming_the_key(data: dict[str, Any], message: str) -> None:
    problems = metrics_server.check({**metrics_server.DEFAULTS, **data})
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_bad_settings_stop_the_deploy(pki_dir: Path) -> None:
    cp, others = hosts(pki_dir)
    with pytest.raises(DeployError, match="metrics_server_metric_resolution"):
        run_component(metrics_server.COMPONENT, facts={}, data={**cp, "metrics_server_metric_resolution": "5s"},
                      others=others)  # fmt: skip


def test_defaults_pass_and_durations_parse() -> None:
    assert metrics_server.check(metrics_server.DEFAULTS) == []
    assert [metrics_server.resolution_seconds(v) for v in ("15s", "1m", "1m30s", "2h", "", "15", "-15s")] == [
        15, 60, 90, 7200, None, None, None,
    ]  # fmt: skip


def test_nodes_must_reach_the_kubelets(pki_dir: Path) -> None:
    cp, others = hosts(pki_dir)
    with pytest.raises(DeployError, match=r"metrics_server_nodes: \['elsewhere'\] are not inventory hosts"):
        run_component(metrics_server.COMPONENT, facts={AddonSets: {}},
                      data={**cp, "metrics_server_nodes": ["elsewhere"]}, others=others)  # fmt: skip
    others["node2"]["roles"] = ["workers"]
    with pytest.raises(DeployError, match="give a host that runs kubelet the monitoring role"):
        run_component(metrics_server.COMPONENT, facts={AddonSets: {}}, data=cp, others=others)


def test_example_autoscales_restricted_pods_on_a_short_window() -> None:
    docs = [doc for name in ("hpa-example.yaml", "hpa-load.yaml")
            for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]  # fmt: skip
    kinds = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    namespace = kinds[("Namespace", "hpa-example")]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    hpa = kinds[("HorizontalPodAutoscaler", "hello")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 50}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    for kind, name in (("Deployment", "hello"), ("Job", "load")):
        spec = kinds[(kind, name)]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = spec["containers"]
        assert container["image"] == "docker.io/spectra/hello:lab" and container["imagePullPolicy"] == "Always"
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert set(container["resources"]) == {"requests", "limits"}
    # the load ends by itself: a bounded loop, run once, with a deadline past it
    job = kinds[("Job", "load")]["spec"]
    (load,) = job["template"]["spec"]["containers"]
    assert load["args"][0] == "load" and int(load["args"][2]) < job["activeDeadlineSeconds"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"


def test_lab_builds_the_pinned_image_as_upstream_lays_it_out() -> None:
    from lab.config import LabError
    from lab.images import metrics_server as lab_image

    image = lab_image.image()
    assert image.reference == metrics_server.DEFAULTS["metrics_server_image"]
    assert image.import_path == "sigs.k8s.io/metrics-server/cmd/metrics-server" and image.version == "v0.8.0"
    # upstream's Dockerfile: /metrics-server as USER 65534; its Makefile stamps client-go's version package
    assert (image.entrypoint, image.user) == ("/metrics-server", "65534:65534")
    assert "-X k8s.io/client-go/pkg/version.gitVersion=v0.8.0" in image.ldflags
    with pytest.raises(LabError, match="the lab builds registry.k8s.io/metrics-server/metrics-server:v"):
        lab_image.image("registry.k8s.io/metrics-server/metrics-server:latest")
