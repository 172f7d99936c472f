"""The CoreDNS addon manifest: rendered from data, every document parsed, the fields that matter checked."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deploys.addon import AddonError, render_addon
from deploys.components import coredns

pytestmark = pytest.mark.unit


def documents(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all(render_addon(coredns.ADDON, data)))
    assert all(doc["metadata"]["name"] for doc in docs)
    return {doc["kind"]: doc for doc in docs}


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def corefile(docs: dict[str, dict[str, Any]]) -> str:
    return str(docs["ConfigMap"]["data"]["Corefile"])


def test_defaults_render_every_object_in_kube_system() -> None:
    docs = documents({})
    assert list(docs) == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"]
    for kind in ("ServiceAccount", "ConfigMap", "Deployment", "Service"):
        assert docs[kind]["metadata"]["namespace"] == "kube-system"
    assert container(docs)["image"] == "registry.k8s.io/coredns/coredns:v1.14.2"
    assert docs["Service"]["metadata"]["name"] == "kube-dns"
    assert docs["Service"]["spec"]["clusterIP"] == "10.96.0.10"
    assert docs["Deployment"]["spec"]["replicas"] == 2
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile(docs)


def test_data_reaches_every_place() -> None:
    docs = documents(
        {
            "cluster_domain": "k8s.example.internal",
            "cluster_service_cidr": "10.100.0.0/16",
            "cluster_dns_ip": "10.100.0.53",
            "coredns_image": "mirror.example:5000/coredns/coredns:v1.14.2",
            "coredns_replicas": 3,
            "coredns_forward_to": ["10.0.0.2", "tls://1.1.1.1"],
            "unrelated_setting": "ignored",
        }
    )
    assert container(docs)["image"] == "mirror.example:5000/coredns/coredns:v1.14.2"
    assert docs["Service"]["spec"]["clusterIP"] == "10.100.0.53"
    assert docs["Deployment"]["spec"]["replicas"] == 3
    text = corefile(docs)
    assert "kubernetes k8s.example.internal in-addr.arpa ip6.arpa {" in text
    assert "forward . 10.0.0.2 tls://1.1.1.1 {" in text
    assert "cluster.local" not in render_addon(coredns.ADDON, {"cluster_domain": "k8s.example.internal"})


def test_corefile_plugins() -> None:
    lines = [line.strip() for line in corefile(documents({})).splitlines()]
    assert lines[0] == ".:53 {"
    for line in ("errors", "ready", "prometheus :9153", "cache 30", "loop", "reload", "loadbalance"):
        assert line in lines
    assert lines[lines.index("health {") + 1] == "lameduck 5s"
    kubernetes = lines.index("kubernetes cluster.local in-addr.arpa ip6.arpa {")
    assert lines[kubernetes + 1 : kubernetes + 3] == ["pods insecure", "fallthrough in-addr.arpa ip6.arpa"]
    assert "forward . /etc/resolv.conf {" in lines
    assert lines[-1] == "}"


def test_rbac_lets_coredns_list_and_watch_what_the_kubernetes_plugin_reads() -> None:
    docs = documents({})
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in docs["ClusterRole"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("", "endpoints"): {"list", "watch"},
        ("", "services"): {"list", "watch"},
        ("", "pods"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    }
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]


def test_deployment_runs_locked_down_and_critical() -> None:
    docs = documents({})
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["dnsPolicy"] == "Default"
    assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    security = container(docs)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}
    resources = container(docs)["resources"]
    assert resources == {"requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}}
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    # The Deployment selects its own pods, and the Service those pods.
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()


def test_probes_and_ports() -> None:
    docs = documents({})
    main = container(docs)
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8181, "scheme": "HTTP"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8080, "scheme": "HTTP"}
    assert {(p["containerPort"], p["protocol"]) for p in main["ports"]} == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}
    assert {(p["port"], p["protocol"]) for p in docs["Service"]["spec"]["ports"]} == {
        (53, "UDP"),
        (53, "TCP"),
        (9153, "TCP"),
    }
    assert main["args"] == ["-conf", "/etc/coredns/Corefile"]
    (volume,) = docs["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"] == {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}
    assert main["volumeMounts"][0]["mountPath"] == "/etc/coredns"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cluster_domain": "Cluster.Local."}, "cluster_domain="),
        ({"cluster_domain": "cluster.local {\n}"}, "cluster_domain="),
        ({"cluster_dns_ip": "10.97.0.10", "cluster_service_cidr": "10.96.0.0/16"}, "inside cluster_service_cidr"),
        ({"cluster_dns_ip": "10.96.0.1"}, "first address"),
        ({"cluster_dns_ip": "dns"}, "cluster_dns_ip="),
        ({"cluster_service_cidr": "10.96.0.1/12"}, "cluster_service_cidr="),
        ({"coredns_image": 'registry.k8s.io/coredns/coredns:v1.14.2"\nx: y'}, "coredns_image="),
        ({"coredns_replicas": 0}, "coredns_replicas="),
        ({"coredns_replicas": True}, "coredns_replicas="),
        ({"coredns_replicas": "2"}, "coredns_replicas="),
        ({"coredns_forward_to": []}, "coredns_forward_to="),
        ({"coredns_forward_to": ["8.8.8.8 {"]}, "coredns_forward_to="),
        ({"coredns_memory_limit": "lots"}, "coredns_memory_limit="),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(data: dict[str, Any], message: str) -> None:
    with pytest.raises(AddonError, match=message):
        render_addon(coredns.ADDON, data)


def test_checks_are_pure_and_name_every_bad_value() -> None:
    good = dict(coredns.DEFAULTS)
    assert coredns.check(good) == []
    bad = {**good, "coredns_replicas": 0, "coredns_memory_limit": "lots", "coredns_forward_to": ["8.8.8.8 {"]}
    assert coredns.check(bad) == [
        "coredns_replicas=0: a whole number of at least 1",
        "coredns_forward_to='8.8.8.8 {': an address (10.0.0.2, 10.0.0.2:53, tls://1.1.1.1) or a path"
        " (/etc/resolv.conf)",
        "coredns_memory_limit='lots': a Kubernetes quantity such as 100m or 70Mi",
    ]
    with pytest.raises(AddonError, match="coredns_replicas=0: .*; coredns_forward_to="):
        render_addon(coredns.ADDON, bad)


def test_dual_stack_service_range_accepts_an_ipv6_dns_address() -> None:
    docs = documents({"cluster_service_cidr": "10.96.0.0/12,fd00:10:96::/108", "cluster_dns_ip": "fd00:10:96::a"})
    assert docs["Service"]["spec"]["clusterIP"] == "fd00:10:96::a"
