"""NetworkPolicies enforced: kube-router's network-policy controller on every node (its arguments from the
cluster settings), and the application namespaces' policies generated from group data (default deny, DNS, the
declared allows on both ends, Prometheus to metrics ports); bad references refused by key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deploys import addon
from deploys.components import kube_router, network_policies
from facts.addons import AddonSets
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

CP = {"roles": ["control_plane", "etcd"], "ssh_hostname": "10.0.0.11", "zone": "a"}
OTHERS = {
    "node2": {"roles": ["workers", "monitoring"], "ssh_hostname": "10.0.0.12", "zone": "b"},
    "node3": {"roles": ["workers"], "ssh_hostname": "10.0.0.13", "zone": "c"},
}
Docs = dict[tuple[str, str, str], dict[str, Any]]

SERVICES = {
    "shop-web/web": {"selector": {"app.kubernetes.io/name": "web"}, "ports": {"http": 8080}},
    "shop-api/api": {
        "selector": {"app.kubernetes.io/name": "api"},
        "ports": {"http": 8080, "admin": 9000},
        "metrics_port": "http",
    },  # fmt: skip
}
ALLOWS = [
    {"from": "shop-web/web", "to": "shop-api/api", "ports": ["http"]},
    {"from": "10.20.0.0/16", "to": "shop-web/web"},
]
DATA = {"network_policies_namespaces": ["shop-api", "shop-web"], "application_services": SERVICES,
        "network_allows": ALLOWS}  # fmt: skip


def manifest(component: Any, set_name: str, **data: Any) -> Docs:
    others = {name: {**values, **data} for name, values in OTHERS.items()}
    result = run_component(component, facts={AddonSets: {}}, data={**CP, **data}, others=others)
    uploaded = result.uploads[f"/etc/kubernetes/addons/{set_name}.yaml.spectra-new"]
    docs = list(yaml.safe_load_all(uploaded))
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def peer(namespace: str, **pods: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": {"matchLabels": dict(pods)} if pods else {}}  # fmt: skip


def spec(docs: Docs, namespace: str, name: str) -> dict[str, Any]:
    return dict(docs[("NetworkPolicy", namespace, name)]["spec"])


# --- kube-router ---------------------------------------------------------------------------------------------


def test_kube_router_runs_the_policy_controller_alone_on_every_node() -> None:
    docs = manifest(kube_router.COMPONENT, "kube-router")
    assert list(docs) == [
        ("ServiceAccount", "kube-system", "kube-router"),
        ("ClusterRole", "", "spectra:kube-router"),
        ("ClusterRoleBinding", "", "spectra:kube-router"),
        ("DaemonSet", "kube-system", "kube-router"),
    ]
    pod = docs[("DaemonSet", "kube-system", "kube-router")]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["tolerations"] == [{"operator": "Exists"}]
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/cloudnativelabs/kube-router:v2.1.0"
    assert container["args"] == [
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--run-loadbalancer=false",
        "--enable-cni=false",
        "--hostname-override=$(NODE_NAME)",
        "--service-cluster-ip-range=10.96.0.0/12",
        "--service-node-port-range=30000-32767",
        "--health-port=20244",
        "--iptables-sync-period=5m",
        "--v=1",
    ]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert "privileged" not in container["securityContext"]
    # reads only: nothing in its role writes
    rules = docs[("ClusterRole", "", "spectra:kube-router")]["rules"]
    assert {verb for rule in rules for verb in rule["verbs"]} == {"get", "list", "watch"}


def test_kube_router_ranges_follow_the_cluster_settings() -> None:
    docs = manifest(kube_router.COMPONENT, "kube-router", cluster_service_cidr="10.96.0.0/16,fd00:96::/108",
                    cluster_nodeport_range="31000-31999")  # fmt: skip
    args = docs[("DaemonSet", "kube-system", "kube-router")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if "range" in a] == [
        "--service-cluster-ip-range=10.96.0.0/16",
        "--service-cluster-ip-range=fd00:96::/108",
        "--service-node-port-range=31000-31999",
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("kube_router_image", "not an image!"),
        ("kube_router_health_port", 0),
        ("kube_router_iptables_sync_period", "0s"),
        ("kube_router_memory_limit", "lots"),
    ],
)
def test_kube_router_bad_settings_name_their_key(key: str, value: Any) -> None:
    problems = kube_router.check({**kube_router.DEFAULTS, key: value})
    assert len(problems) == 1 and problems[0].startswith(f"{key}=")


# --- the policies ---------------------------------------------------------------------------------------------


def test_policies_for_two_namespaces_with_egress_denied() -> None:
    docs = manifest(network_policies.COMPONENT, "network-policies", **DATA)
    assert sorted(docs) == [
        ("NetworkPolicy", "shop-api", "allow-dns"),
        ("NetworkPolicy", "shop-api", "allow-to-api"),
        ("NetworkPolicy", "shop-api", "default-deny"),
        ("NetworkPolicy", "shop-web", "allow-dns"),
        ("NetworkPolicy", "shop-web", "allow-from-web"),
        ("NetworkPolicy", "shop-web", "allow-to-web"),
        ("NetworkPolicy", "shop-web", "default-deny"),
    ]
    assert spec(docs, "shop-api", "default-deny") == {"podSelector": {},
                                                      "policyTypes": ["Ingress", "Egress"]}  # fmt: skip
    assert spec(docs, "shop-web", "allow-dns") == {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [peer("kube-system", **{"k8s-app": "kube-dns"})],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        ],  # fmt: skip
    }
    # the api accepts the web pods on its http port and Prometheus on its metrics port, nothing else
    assert spec(docs, "shop-api", "allow-to-api") == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [peer("shop-web", **{"app.kubernetes.io/name": "web"})],
             "ports": [{"protocol": "TCP", "port": 8080}]},
            {"from": [peer("monitoring", **{"app.kubernetes.io/name": "prometheus"})],
             "ports": [{"protocol": "TCP", "port": 8080}]},
        ],
    }  # fmt: skip
    # the other end of the same allow: the web pods may open connections to the api's http port
    assert spec(docs, "shop-web", "allow-from-web") == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [peer("shop-api", **{"app.kubernetes.io/name": "api"})],
                "ports": [{"protocol": "TCP", "port": 8080}],
            }
        ],  # fmt: skip
    }
    # a CIDR source, every port of the target when the allow names none
    assert spec(docs, "shop-web", "allow-to-web")["ingress"] == [
        {"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 8080}]}
    ]
    labels = {doc["metadata"]["labels"]["spectra.io/addon-set"] for doc in docs.values()}
    assert labels == {"network-policies"}


def test_ingress_only_when_egress_is_not_denied() -> None:
    docs = manifest(network_policies.COMPONENT, "network-policies", **DATA, network_policies_deny_egress=False,
                    network_policies_egress_cidrs=["0.0.0.0/0"])  # fmt: skip
    assert sorted(docs) == [
        ("NetworkPolicy", "shop-api", "allow-to-api"),
        ("NetworkPolicy", "shop-api", "default-deny"),
        ("NetworkPolicy", "shop-web", "allow-to-web"),
        ("NetworkPolicy", "shop-web", "default-deny"),
    ]
    assert spec(docs, "shop-web", "default-deny")["policyTypes"] == ["Ingress"]


def test_egress_cidrs_and_a_whole_namespace_source() -> None:
    allows = [{"from": "shop-web", "to": "shop-api/api", "ports": ["admin"]}]
    docs = manifest(network_policies.COMPONENT, "network-policies", **{**DATA, "network_allows": allows},
                    network_policies_egress_cidrs=["203.0.113.0/24"])  # fmt: skip
    assert spec(docs, "shop-web", "allow-egress-cidrs")["egress"] == [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]
    assert spec(docs, "shop-web", "allow-from-namespace") == {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [peer("shop-api", **{"app.kubernetes.io/name": "api"})],
                "ports": [{"protocol": "TCP", "port": 9000}],
            }
        ],  # fmt: skip
    }
    assert spec(docs, "shop-api", "allow-to-api")["ingress"][0]["from"] == [peer("shop-web")]


def test_no_application_namespaces_render_no_policies() -> None:
    assert network_policies.policies({**network_policies.DEFAULTS, "network_policies_namespaces": []}) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"network_allows": [{"from": "shop-web/web", "to": "shop-api/nope"}]},
         "network_allows[0].to='shop-api/nope': not a declared application service"),
        ({"network_allows": [{"from": "shop-web/ghost", "to": "shop-api/api"}]},
         "network_allows[0].from='shop-web/ghost': not a declared application service"),
        ({"network_allows": [{"from": "elsewhere", "to": "shop-api/api"}]},
         "network_allows[0].from='elsewhere': an application service"),
        ({"network_allows": [{"from": "shop-web/web", "to": "shop-api/api", "ports": ["grpc"]}]},
         "network_allows[0].ports: ['grpc'] are not ports of shop-api/api"),
        ({"network_allows": [{"from": "shop-web/web", "to": "shop-api/api", "port": 8080}]},
         "network_allows[0]="),
        ({"application_services": {"other/api": SERVICES["shop-api/api"]}},
         "application_services['other/api']: namespace 'other' is not an application namespace"),
        ({"application_services": {"shop-api/api": {**SERVICES["shop-api/api"], "metrics_port": "prom"}}},
         "application_services['shop-api/api'].metrics_port='prom': not one of its ports"),
        ({"application_services": {"shop-api/api": {"selector": {}, "ports": {"http": 8080}}}},
         "application_services['shop-api/api'].selector={}"),
        ({"application_services": {"shop-api/api": {"selector": {"a": "b"}, "ports": {"http": 0}}}},
         "application_services['shop-api/api'].ports={'http': 0}"),
        ({"network_policies_egress_cidrs": ["10.0.0.1"]}, "network_policies_egress_cidrs=['10.0.0.1']"),
        ({"kube_router_enabled": False}, "network_policies_enabled: needs kube_router_enabled"),
    ],
)  # fmt: skip
def test_bad_references_name_their_key(change: dict[str, Any], expected: str) -> None:
    settings = {**kube_router.DEFAULTS, **network_policies.DEFAULTS, **DATA, **change}
    if "application_services" in change and "network_allows" not in change:
        settings["network_allows"] = []
    problems = network_policies.check(settings)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_render_refuses_a_bad_reference_before_anything_is_applied() -> None:
    with pytest.raises(addon.AddonError, match=r"network_allows\[0\]\.to"):
        addon.render_addon(network_policies.ADDON, {**kube_router.DEFAULTS, **DATA,
                                                    "network_allows": [{"from": "shop-web", "to": "x/y"}]})  # fmt: skip
