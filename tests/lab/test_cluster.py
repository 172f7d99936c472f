"""The lab's Kubernetes cluster, as deploys/site.py builds it (1 control plane + 2 workers, Debian 12 and 13).

test_node_converge runs site.py on fresh nodes first (node and cluster); this module converges again (a
no-op then) and checks the cluster from the inside: nodes Ready with their inventory roles and zones, the
API ready through every node's local balancer, a Deployment of the lab's own image spread over both
workers, pod-to-pod traffic between workers, Services and cluster DNS, RBAC and Secrets encrypted in etcd.
The test workload is deleted at the end; the cluster stays for the compliance tests.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.cluster_support import KUBECTL, control_plane, kubectl
from tests.lab.conftest import Lab, spectra_deploy

pytestmark = pytest.mark.lab

NAMESPACE = "spectra-lab-test"
ROLE_LABELS = {"control_plane": "node-role.kubernetes.io/control-plane", "workers": "node-role.kubernetes.io/worker"}

WORKLOAD = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello, namespace: {NAMESPACE}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: hello}}}}
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: hello}}}}
      securityContext: {{runAsNonRoot: true, runAsUser: 65532}}
      containers:
      - name: hello
        image: docker.io/spectra/hello:lab
        imagePullPolicy: Always
        args: [serve, ":8080"]
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 2}}
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
                           capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: {NAMESPACE}}}
spec:
  selector: {{app: hello}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


@pytest.fixture(scope="module")
def cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result, summary = spectra_deploy(
        tmp_path_factory.mktemp("cluster") / "site.json", "inventories/lab.py", "deploys/site.py"
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    return dict(summary)


@pytest.fixture(scope="module")
def workload(cluster: dict[str, Any], lab: Lab) -> Iterator[dict[str, str]]:
    """The hello Deployment, rolled out: pod name -> node name."""
    node = control_plane(lab)
    lab.ssh(node, f"{KUBECTL} delete namespace {NAMESPACE} --ignore-not-found --wait=true", timeout=300)
    subprocess.run(lab.ssh_args(node, f"{KUBECTL} apply -f -"), input=WORKLOAD, text=True, check=True, timeout=120)
    try:
        kubectl(lab, f"-n {NAMESPACE} rollout status deployment/hello --timeout=180s")
        pods = json.loads(kubectl(lab, f"-n {NAMESPACE} get pods -l app=hello -o json"))["items"]
        yield {pod["metadata"]["name"]: pod["spec"]["nodeName"] for pod in pods}
    finally:
        kubectl(lab, f"delete namespace {NAMESPACE} --ignore-not-found --wait=false", check=False)


def test_site_converge_leaves_no_failure(cluster: dict[str, Any]) -> None:
    assert cluster["failed_hosts"] == []
    assert sorted(cluster["activated_hosts"]) == ["node1", "node2", "node3"]


def test_nodes_ready_with_inventory_roles_and_zones(cluster: dict[str, Any], lab: Lab) -> None:
    nodes = {item["metadata"]["name"]: item for item in json.loads(kubectl(lab, "get nodes -o json"))["items"]}
    assert sorted(nodes) == sorted(node.name for node in lab.nodes)
    for node in lab.nodes:
        item = nodes[node.name]
        ready = {c["type"]: c["status"] for c in item["status"]["conditions"]}["Ready"]
        assert ready == "True", f"{node.name}: {item['status']['conditions']}"
        labels = item["metadata"]["labels"]
        assert labels.get("topology.kubernetes.io/zone") == node.zone
        for role, label in ROLE_LABELS.items():
            assert (label in labels) == (role in node.roles), f"{node.name}: {labels}"
        addresses = {a["type"]: a["address"] for a in item["status"]["addresses"]}
        assert addresses["InternalIP"] == node.address
        assert item["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
        taints = [t["key"] for t in item["spec"].get("taints", [])]
        assert ("node-role.kubernetes.io/control-plane" in taints) == ("control_plane" in node.roles)


def test_api_ready_through_every_local_balancer(cluster: dict[str, Any], lab: Lab) -> None:
    assert kubectl(lab, "get --raw /readyz").strip() == "ok"
    for node in lab.nodes:
        # haproxy on 127.0.0.1:6443, verified against the cluster CA (its SANs include 127.0.0.1)
        out = lab.ssh(node, "curl -sS --cacert /etc/kubernetes/pki/ca.crt https://127.0.0.1:6443/readyz")
        assert out.strip() == "ok", f"{node.name}: {out}"
        assert lab.ssh(node, "systemctl is-active kubelet kube-proxy haproxy").split() == ["active"] * 3


def test_anonymous_requests_get_nothing_but_health(cluster: dict[str, Any], lab: Lab) -> None:
    node = control_plane(lab)
    code = lab.ssh(
        node,
        "curl -s -o /dev/null -w '%{http_code}' --cacert /etc/kubernetes/pki/ca.crt "
        "https://127.0.0.1:6443/api/v1/namespaces/kube-system/secrets",
    )
    assert code in ("401", "403"), code


def test_deployment_runs_a_pod_on_each_worker(workload: dict[str, str], lab: Lab) -> None:
    workers = sorted(node.name for node in lab.nodes if "workers" in node.roles)
    assert sorted(workload.values()) == workers, workload


def test_pod_reaches_a_pod_on_the_other_worker(workload: dict[str, str], lab: Lab) -> None:
    pods = json.loads(kubectl(lab, f"-n {NAMESPACE} get pods -l app=hello -o json"))["items"]
    (source, target) = sorted(pods, key=lambda pod: pod["spec"]["nodeName"])
    assert source["spec"]["nodeName"] != target["spec"]["nodeName"]
    ip = target["status"]["podIP"]
    out = kubectl(lab, f"-n {NAMESPACE} exec {source['metadata']['name']} -- /hello get http://{ip}:8080/")
    assert out.strip() == f"hello from {target['metadata']['name']}"


def test_service_by_cluster_dns_name(workload: dict[str, str], lab: Lab) -> None:
    pod = sorted(workload)[0]
    name = f"hello.{NAMESPACE}.svc.cluster.local"
    service_ip = kubectl(lab, f"-n {NAMESPACE} get service hello -o jsonpath={{.spec.clusterIP}}").strip()
    # a fresh Service may take a moment to reach CoreDNS and kube-proxy on every node
    deadline = time.monotonic() + 60
    while True:
        resolved = kubectl(lab, f"-n {NAMESPACE} exec {pod} -- /hello resolve {name}", check=False).split()
        answers = {kubectl(lab, f"-n {NAMESPACE} exec {pod} -- /hello get http://{name}/", check=False).strip()
                   for _ in range(6)}  # fmt: skip
        if resolved == [service_ip] and answers <= {f"hello from {p}" for p in workload} and "" not in answers:
            break
        assert time.monotonic() < deadline, f"{name}: resolved {resolved}, answers {answers}"
        time.sleep(2)
    kubernetes = kubectl(lab, f"-n {NAMESPACE} exec {pod} -- /hello resolve kubernetes.default").split()
    assert kubernetes == ["10.96.0.1"]


def test_coredns_runs_as_deployed(cluster: dict[str, Any], lab: Lab) -> None:
    deployment = json.loads(kubectl(lab, "-n kube-system get deployment coredns -o json"))
    assert deployment["status"].get("availableReplicas") == 2, deployment["status"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.k8s.io/coredns/coredns:v1.14.2"


def test_admin_identity_is_bound_not_system_masters(cluster: dict[str, Any], lab: Lab) -> None:
    who = json.loads(kubectl(lab, "auth whoami -o json"))
    groups = who["status"]["userInfo"]["groups"]
    assert "kubeadm:cluster-admins" in groups and "system:masters" not in groups, groups
    assert kubectl(lab, "auth can-i '*' '*'").strip() == "yes"
    assert lab.ssh(control_plane(lab), "test -e /etc/kubernetes/super-admin.conf; echo $?").strip() == "1"
