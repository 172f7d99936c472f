"""metrics-server on the lab cluster, as deploys/site.py pushes it: the metrics.k8s.io APIService available
(the apiserver verifies metrics-server's certificate with the cluster CA, metrics-server verifies every kubelet
with it), ``kubectl top nodes`` for every node, and the documented HPA example
(``templates/addons/metrics-server/examples/``) growing from 1 to at least 3 replicas under its bounded load
Job and back to 1 after the load ends by itself. The timings are printed (``pytest -s``); the example's
namespace is deleted at the end.
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

from tests.lab.cluster_support import KUBECTL, control_plane, kubectl, until
from tests.lab.conftest import REPO, Lab

pytestmark = pytest.mark.lab

EXAMPLES = REPO / "templates" / "addons" / "metrics-server" / "examples"
NAMESPACE = "hpa-example"  # the examples' namespace (restricted Pod Security)
LOAD_SECONDS = 150  # the load Job's loop (hpa-load.yaml): scale-up must happen while it runs
SCALE_DOWN_TIMEOUT = 240  # the HPA's 30 s window, two metric resolutions and the HPA's 15 s sync, with margin
# kubectl top nodes: NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)
TOP_LINE = re.compile(r"^(\S+)\s+(\d+)m\s+(\d+)%\s+(\d+)Mi\s+(\d+)%$")


def get(lab: Lab, args: str) -> Any:
    return json.loads(kubectl(lab, f"{args} -o json"))


def apply_file(lab: Lab, path: Path) -> None:
    """``kubectl apply`` of a file of this repository, as a user would apply the example."""
    result = subprocess.run(lab.ssh_args(control_plane(lab), f"{KUBECTL} apply -f -"), input=path.read_text(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, f"apply {path.name}: {result.stdout}{result.stderr}"
    assert "Warning" not in result.stderr, result.stderr  # Pod Security warnings included


@pytest.fixture
def example(converged: dict[str, Any], lab: Lab) -> Iterator[None]:
    """The HPA example applied and rolled out at 1 replica; its namespace deleted afterwards."""
    node = control_plane(lab)
    lab.ssh(node, f"{KUBECTL} delete namespace {NAMESPACE} --ignore-not-found --wait=true", timeout=300)
    try:
        apply_file(lab, EXAMPLES / "hpa-example.yaml")
        kubectl(lab, f"-n {NAMESPACE} rollout status deployment/hello --timeout=180s")
        yield
    finally:
        kubectl(lab, f"delete namespace {NAMESPACE} --ignore-not-found --wait=false", check=False)


def test_metrics_api_is_available_and_verified(converged: dict[str, Any], lab: Lab) -> None:
    kubectl(lab, "-n kube-system rollout status deployment/metrics-server --timeout=180s")

    def available() -> tuple[bool, Any]:
        service = get(lab, "get apiservice v1beta1.metrics.k8s.io")
        conditions = {c["type"]: c for c in service["status"].get("conditions", [])}
        return conditions.get("Available", {}).get("status") == "True", service

    service = until("the metrics.k8s.io APIService available", available, timeout=180)
    assert service["spec"].get("caBundle") and not service["spec"].get("insecureSkipTLSVerify")
    # on the monitoring host: the only place (with the control planes) kubelets accept it from
    pods = get(lab, "-n kube-system get pods -l k8s-app=metrics-server")["items"]
    monitoring = {node.name for node in lab.nodes if "monitoring" in node.roles}
    assert pods and {pod["spec"]["nodeName"] for pod in pods} <= monitoring, pods
    (container,) = pods[0]["spec"]["containers"]
    assert not any("insecure" in arg for arg in container["args"]), container["args"]


def test_top_nodes_lists_every_node(converged: dict[str, Any], lab: Lab) -> None:
    names = sorted(node.name for node in lab.nodes)

    def top() -> tuple[bool, Any]:
        out = kubectl(lab, "top nodes --no-headers", check=False)
        rows = {m.group(1): m.groups()[1:] for line in out.splitlines() if (m := TOP_LINE.match(line.strip()))}
        return sorted(rows) == names, out

    # the first numbers need two scrapes of every kubelet (a rate): a metric resolution or two
    out = until("kubectl top nodes for every node", top, timeout=180, every=5)
    print(f"\nkubectl top nodes:\n{out}")
    for line in out.splitlines():
        match = TOP_LINE.match(line.strip())
        assert match, line
        cpu, memory = int(match.group(2)), int(match.group(4))
        assert cpu > 0 and memory > 0, line
    raw = json.loads(kubectl(lab, "get --raw /apis/metrics.k8s.io/v1beta1/nodes"))
    assert sorted(item["metadata"]["name"] for item in raw["items"]) == names


def test_hpa_scales_out_under_load_and_back(example: None, lab: Lab) -> None:
    def hpa() -> Any:
        return get(lab, f"-n {NAMESPACE} get hpa hello")

    def measured() -> tuple[bool, Any]:
        status = hpa()["status"]
        metrics = status.get("currentMetrics") or [{}]
        current = (metrics[0].get("resource") or {}).get("current", {}).get("averageUtilization")
        return current is not None, status

    # the HPA reads the idle pod's CPU before the load starts: the metrics pipeline is up
    until("the HPA's first CPU reading", measured, timeout=180)
    assert get(lab, f"-n {NAMESPACE} get deployment hello")["status"]["replicas"] == 1

    apply_file(lab, EXAMPLES / "hpa-load.yaml")

    def load_running() -> tuple[bool, Any]:
        pods = get(lab, f"-n {NAMESPACE} get pods -l app=load")["items"]
        return any(pod["status"].get("phase") in ("Running", "Succeeded") for pod in pods), pods

    until("the load pod running", load_running, timeout=120, every=1)
    started = time.monotonic()

    def scaled_out() -> tuple[bool, Any]:
        deployment = get(lab, f"-n {NAMESPACE} get deployment hello")
        job = get(lab, f"-n {NAMESPACE} get job load")["status"]
        assert not job.get("succeeded") and not job.get("failed"), f"the load ended before 3 replicas: {hpa()}"
        return (deployment["status"].get("readyReplicas") or 0) >= 3, deployment["status"]

    until("3 or more ready replicas under load", scaled_out, timeout=LOAD_SECONDS, every=2)
    scale_out = time.monotonic() - started

    def load_done() -> tuple[bool, Any]:
        job = get(lab, f"-n {NAMESPACE} get job load")["status"]
        assert not job.get("failed"), f"the load Job failed: {job}"
        return bool(job.get("succeeded")), job

    until("the load Job ending by itself", load_done, timeout=LOAD_SECONDS + 90, every=1)
    ended = time.monotonic()
    logs = kubectl(lab, f"-n {NAMESPACE} logs job/load")
    assert re.search(r": [1-9][0-9]* ok", logs), logs

    def scaled_in() -> tuple[bool, Any]:
        deployment = get(lab, f"-n {NAMESPACE} get deployment hello")
        return (deployment["spec"]["replicas"], deployment["status"].get("replicas")) == (1, 1), deployment["status"]

    until("back to 1 replica after the load", scaled_in, timeout=SCALE_DOWN_TIMEOUT, every=2)
    scale_in = time.monotonic() - ended
    print(f"\nHPA: {scale_out:.0f} s from load start to >= 3 ready replicas, "
          f"{scale_in:.0f} s from load end back to 1 replica ({logs.strip()})")  # fmt: skip
    events = kubectl(lab, f"-n {NAMESPACE} get events --field-selector involvedObject.kind=HorizontalPodAutoscaler")
    assert "New size: 1" in events and re.search(r"New size: [34]", events), events
