"""NetworkPolicies enforced on the lab cluster by kube-router's network-policy controller: a connectivity matrix
run from real pods in the team namespaces (group_data/lab.py: web may call api, Prometheus scrapes api, all
else denied), before and after a policy change pushed through the toolkit, and how long a new policy takes.

Pods sit on fixed nodes so the matrix has pairs on one node (through the bridge) and across nodes (routed):
web and other on node2, api and etl on node3. kube-router answers a denied connection with a REJECT (ICMP
port unreachable): the client sees "connection refused" at once, not a timeout. That it was the policy and not
a missing listener shows three ways: the same server is open to the allowed client, it opens when an allow
is added, and the packet counter of the pod's REJECT rule (kube-router's ``KUBE-POD-FW-*`` chain) grows.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.cluster_support import HELLO_PORT, KUBECTL, control_plane, hello_pod, kubectl, until
from tests.lab.conftest import Lab, spectra_deploy

pytestmark = pytest.mark.lab

PORT = HELLO_PORT
PROBE_MS = 1500  # an allowed or rejected connection answers in milliseconds; more means a lost packet
DENIED = "refused"  # kube-router's REJECT
# name -> (namespace, node); the app label is the name (group_data/lab.py's application_services)
PODS = {
    "web": ("shop-web", "node2"),
    "other": ("shop-web", "node2"),  # same namespace as web, not selected by any allow
    "api": ("shop-api", "node3"),
    "etl": ("data-etl", "node3"),
}
SERVERS = ("web", "api", "etl")
ALLOWED = {("web", "api")}  # network_allows of group_data/lab.py


def service_manifest(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": [{"name": "http", "port": PORT}]},
    }


def pod_manifest(name: str, namespace: str, node: str) -> dict[str, Any]:
    return hello_pod(name, namespace, node)


def apply(lab: Lab, documents: list[dict[str, Any]]) -> None:
    stream = "\n---\n".join(json.dumps(document) for document in documents)
    result = subprocess.run(lab.ssh_args(control_plane(lab), f"{KUBECTL} apply -f -"), input=stream,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def pods(converged: dict[str, Any], lab: Lab) -> Iterator[dict[str, str]]:
    """The four pods, ready, and a Service for each server; name -> pod IP. Deleted afterwards."""
    for name, (namespace, _) in PODS.items():
        kubectl(lab, f"-n {namespace} delete pod {name} --ignore-not-found --wait=true", check=False)
    apply(lab, [pod_manifest(name, namespace, node) for name, (namespace, node) in PODS.items()]
          + [service_manifest(name, PODS[name][0]) for name in SERVERS])  # fmt: skip
    try:
        for name, (namespace, _) in PODS.items():
            kubectl(lab, f"-n {namespace} wait --for=condition=Ready pod/{name} --timeout=180s")
        yield {name: kubectl(lab, f"-n {namespace} get pod {name} -o jsonpath='{{.status.podIP}}'").strip()
               for name, (namespace, _) in PODS.items()}  # fmt: skip
    finally:
        for name, (namespace, _) in PODS.items():
            kind = "pod,service" if name in SERVERS else "pod"
            kubectl(lab, f"-n {namespace} delete {kind} {name} --ignore-not-found --wait=false", check=False)


def probe(lab: Lab, client: str, targets: dict[str, str], ms: int = PROBE_MS) -> dict[str, str]:
    """From pod ``client``, one connection attempt to each target's port: target -> open|refused|timeout|..."""
    namespace, _ = PODS[client]
    addresses = " ".join(f"{address}:{PORT}" for address in targets.values())
    command = lab.ssh_args(
        control_plane(lab), f"{KUBECTL} -n {namespace} exec {client} -- /hello probe {ms} {addresses}"
    )
    for _ in range(3):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        # runc's exec now and then fails before the program starts ("read init-p: connection reset by peer"):
        # nothing was probed, so try again
        if result.returncode == 0 or "OCI runtime exec failed" not in result.stderr:
            break
        time.sleep(0.5)
    assert result.returncode == 0, f"probe from {client}: {result.stdout}{result.stderr}"
    out = result.stdout
    by_address = dict(line.split(" ", 1) for line in out.strip().splitlines())
    return {name: by_address[f"{address}:{PORT}"] for name, address in targets.items()}


def matrix(lab: Lab, ips: dict[str, str]) -> dict[tuple[str, str], str]:
    """(client, server) -> the probe's result, for every client pod and every other server pod."""
    found: dict[tuple[str, str], str] = {}
    for client in PODS:
        targets = {server: ips[server] for server in SERVERS if server != client}
        found.update({(client, server): result for server, result in probe(lab, client, targets).items()})
    return found


def expected(allowed: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    return {(client, server): "open" if (client, server) in allowed else DENIED
            for client in PODS for server in SERVERS if server != client}  # fmt: skip


def rejected_packets(lab: Lab, pod: str) -> int:
    """Packets kube-router's REJECT rule for ``pod`` took on its node (``iptables-save -c`` counters)."""
    namespace, node = PODS[pod]
    out = lab.ssh(lab.node(node), "iptables-save -c -t filter", timeout=60)
    pattern = re.compile(rf"^\[(\d+):\d+\] .*REJECT traffic destined for POD name:{pod} namespace: {namespace}\"")
    counts = [int(m.group(1)) for line in out.splitlines() if (m := pattern.match(line))]
    assert counts, f"no REJECT rule for {namespace}/{pod} on {node}"
    return sum(counts)


def show(title: str, found: dict[tuple[str, str], str]) -> None:
    print(f"\n{title}")
    print("from / to".rjust(10) + " " + " ".join(f"{server:>8}" for server in SERVERS))
    for client in PODS:
        print(f"{client:>10} " + " ".join(f"{found.get((client, server), '-'):>8}" for server in SERVERS))


def test_kube_router_runs_on_every_node(converged: dict[str, Any], lab: Lab) -> None:
    kubectl(lab, "-n kube-system rollout status daemonset/kube-router --timeout=180s")
    pods = json.loads(kubectl(lab, "-n kube-system get pods -l app.kubernetes.io/name=kube-router -o json"))
    assert sorted(pod["spec"]["nodeName"] for pod in pods["items"]) == sorted(node.name for node in lab.nodes)
    # the policies of every team namespace are in the cluster as rendered
    names = kubectl(
        lab, "get networkpolicies -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {end}'"
    )
    assert {"shop-api/default-deny", "shop-api/allow-to-api", "shop-web/allow-from-web", "data-etl/default-deny",
            "data-etl/allow-dns"} <= set(names.split())  # fmt: skip


def test_the_connectivity_matrix_follows_the_policies(pods: dict[str, str], lab: Lab) -> None:
    found = matrix(lab, pods)
    show("connectivity (pod IPs, TCP 8080):", found)
    assert found == expected(ALLOWED)
    # through the Service's cluster IP too (kube-proxy translates, the policy still decides)
    service = {"api": kubectl(lab, "-n shop-api get service api -o jsonpath='{.spec.clusterIP}'").strip()}
    assert (probe(lab, "web", service)["api"], probe(lab, "etl", service)["api"]) == ("open", DENIED)
    # the refusal is the policy's: a REJECT rule of the client's or the server's pod chain counts each denied
    # attempt (the client's own default-deny egress rejects it first)
    for client in ("etl", "other"):
        before = rejected_packets(lab, client) + rejected_packets(lab, "api")
        assert probe(lab, client, {"api": pods["api"]})["api"] == DENIED
        assert rejected_packets(lab, client) + rejected_packets(lab, "api") > before, client
    # DNS egress stays open from every namespace: each client resolves a cluster name
    for client, (namespace, _) in PODS.items():
        out = kubectl(lab, f"-n {namespace} exec {client} -- /hello resolve kubernetes.default.svc.cluster.local")
        assert out.strip(), client


def test_prometheus_scrapes_the_allowed_metrics_port(pods: dict[str, str], lab: Lab) -> None:
    query = "/api/v1/namespaces/monitoring/services/prometheus:9090/proxy/api/v1/query?query=up"

    def scraped() -> tuple[bool, Any]:
        result = json.loads(kubectl(lab, f"get --raw '{query}'"))["data"]["result"]
        mine = [s for s in result if s["metric"]["job"] == "shop-api/api"]
        return bool(mine) and all(s["value"][1] == "1" for s in mine), mine

    series = until("Prometheus scraping shop-api/api through its policy", scraped, timeout=120)
    assert [s["metric"]["pod"] for s in series] == ["api"]


def test_a_policy_change_takes_effect_and_is_taken_back(pods: dict[str, str], lab: Lab, tmp_path: Path) -> None:
    opened = [{"from": "shop-web/web", "to": "shop-api/api", "ports": ["http"]},
              {"from": "data-etl/etl", "to": "shop-api/api", "ports": ["http"]}]  # fmt: skip

    def deploy(*data: str) -> float:
        result, _ = spectra_deploy(tmp_path / f"d{time.monotonic()}.json", "inventories/lab.py",
                                   "deploys/addons.py", *data)  # fmt: skip
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        return time.monotonic()

    def etl_to_api(want: str) -> tuple[bool, str]:
        result = probe(lab, "etl", {"api": pods["api"]}, ms=500)["api"]
        return result == want, result

    applied = deploy("--data", f"network_allows={json.dumps(opened)}")
    until("etl reaching api after the allow", lambda: etl_to_api("open"), timeout=60, every=0.2)
    took_open = time.monotonic() - applied
    show("after allowing data-etl/etl -> shop-api/api:", found := matrix(lab, pods))
    assert found == expected(ALLOWED | {("etl", "api")})

    restored = deploy()  # the lab's own data again: the extra allow is pruned
    until("etl cut off from api again", lambda: etl_to_api(DENIED), timeout=60, every=0.2)
    took_close = time.monotonic() - restored
    assert matrix(lab, pods) == expected(ALLOWED)
    print(f"\npolicy change in effect {took_open:.1f} s after the deploy ended (allow), {took_close:.1f} s (removal)")


def test_a_hand_made_policy_is_enforced_within_seconds(pods: dict[str, str], lab: Lab) -> None:
    """Time from a NetworkPolicy's creation to the first connection it allows (kube-router's watch)."""
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "test-allow-other", "namespace": "shop-web"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "other"}}}]}]},
    }  # fmt: skip
    egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "test-other-egress", "namespace": "shop-web"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "other"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}}}]}]},
    }  # fmt: skip
    assert probe(lab, "other", {"web": pods["web"]})["web"] == DENIED
    try:
        started = time.monotonic()
        apply(lab, [policy, egress])

        def reached() -> tuple[bool, str]:
            result = probe(lab, "other", {"web": pods["web"]}, ms=300)["web"]
            return result == "open", result

        until("other reaching web after the hand-made policy", reached, timeout=60, every=0.1)
        print(f"\na new NetworkPolicy allowed traffic {time.monotonic() - started:.1f} s after kubectl apply began")
    finally:
        kubectl(lab, "-n shop-web delete networkpolicy test-allow-other test-other-egress --ignore-not-found")

    def cut_off() -> tuple[bool, str]:
        result = probe(lab, "other", {"web": pods["web"]}, ms=500)["web"]
        return result == DENIED, result

    until("other cut off again", cut_off, timeout=60, every=0.5)
