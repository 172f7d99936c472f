"""Tenancy on the lab cluster, as deploys/site.py pushes the teams of group_data/lab.py: real HTTPS requests to
the apiserver (curl on the control plane, the cluster CA verified) with a TokenRequest token of ``shop-web``'s
CI deployer, not ``kubectl auth can-i``: it reads and updates its Deployment (200) and is refused a Secret,
its team's other namespace, another team's namespace, a RoleBinding, creating and deleting (403). A privileged
pod is refused by Pod Security even for a cluster admin; a pod that states no resources gets the LimitRange's
defaults (the data team's own memory limit in its namespace); the quota counts what runs. Every request's
status code is printed (``pytest -s``).
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.lab.cluster_support import KUBECTL, control_plane, kubectl, until
from tests.lab.conftest import PKI, Lab

pytestmark = pytest.mark.lab

# group_data/lab.py's teams (tests/unit/test_addon_tenancy.py checks these against it)
NAMESPACE = "shop-web"  # team shop: the deployer under test
SIBLING = "shop-api"  # team shop's other namespace: a deployer's token is for its own namespace only
OTHER_TEAM = "data-etl"  # team data
POD_QUOTA = "10"  # shop's own quota
DEFAULT_REQUESTS = {"cpu": "50m", "memory": "64Mi"}  # tenancy_default_limits, in shop's namespaces
DEFAULT_LIMITS = {"cpu": "500m", "memory": "256Mi"}
OTHER_TEAM_MEMORY_LIMIT = "128Mi"  # team data's own default limit
DEPLOYER = "ci-deployer"
USER = f"system:serviceaccount:{NAMESPACE}:{DEPLOYER}"
IMAGE = "docker.io/spectra/hello:lab"  # the lab registry's workload image (lab/registry.py)
PROBE = "tenancy-probe"  # the Deployment and Secret this test makes (and removes)
BARE_POD = "tenancy-defaults"  # a pod that states no resources
APPS = "/apis/apps/v1/namespaces"
CORE = "/api/v1/namespaces"


def restricted_pod_spec() -> dict[str, Any]:
    """A pod the restricted profile admits, stating no resources (the LimitRange fills them in)."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "hello", "image": IMAGE, "args": ["serve", ":8080"],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    }  # fmt: skip


def deployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": PROBE, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": PROBE}},
                 "template": {"metadata": {"labels": {"app": PROBE}}, "spec": restricted_pod_spec()}},
    }  # fmt: skip


def on_control_plane(lab: Lab, command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(lab.ssh_args(control_plane(lab), command), input=stdin, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def as_admin(lab: Lab, verb: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl create|apply -f -`` of one object with the admin kubeconfig (cluster-admin)."""
    return on_control_plane(lab, f"{KUBECTL} {verb} -f -", json.dumps(manifest))


def cleanup(lab: Lab) -> None:
    for namespace in (NAMESPACE, OTHER_TEAM):
        kubectl(lab, f"-n {namespace} delete deployment/{PROBE} secret/{PROBE} pod/{BARE_POD} pod/tenancy-privileged "
                     "--ignore-not-found --wait=true", check=False, timeout=180)  # fmt: skip


@dataclass
class Response:
    method: str
    path: str
    code: int
    body: Any

    def __str__(self) -> str:
        message = self.body.get("message", "") if isinstance(self.body, dict) else str(self.body)[:200]
        return f"{self.method} {self.path} -> {self.code} {message}"


@pytest.fixture(scope="module")
def workload(converged: dict[str, Any], lab: Lab) -> Iterator[None]:
    """As admin: the probe Deployment in shop-web and data-etl (rolled out under each quota and LimitRange), a
    Secret in shop-web, and a pod that states no resources; all removed afterwards."""
    cleanup(lab)
    try:
        for namespace in (NAMESPACE, OTHER_TEAM):
            created = as_admin(lab, "apply", deployment(namespace))
            assert created.returncode == 0, created.stderr
            assert "Warning" not in created.stderr, created.stderr  # restricted: no Pod Security warning
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": PROBE, "namespace": NAMESPACE},
                  "stringData": {"password": "not for the deployer"}}  # fmt: skip
        assert as_admin(lab, "apply", secret).returncode == 0
        bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": BARE_POD, "namespace": NAMESPACE},
                "spec": restricted_pod_spec()}  # fmt: skip
        created = as_admin(lab, "create", bare)
        assert created.returncode == 0 and "Warning" not in created.stderr, created.stderr
        for namespace in (NAMESPACE, OTHER_TEAM):
            kubectl(lab, f"-n {namespace} rollout status deployment/{PROBE} --timeout=180s")
        yield
    finally:
        cleanup(lab)


@pytest.fixture(scope="module")
def token_header(converged: dict[str, Any], lab: Lab) -> Iterator[str]:
    """A file on the control plane (0600) with ``Authorization: Bearer <token>``: a TokenRequest token of
    shop-web's CI deployer, as a CI job gets one. The token never leaves the node or shows in a process list."""
    command = (
        f"umask 077; f=$(mktemp) && tok=$({KUBECTL} -n {NAMESPACE} create token {DEPLOYER} --duration=10m) && "
        'printf \'Authorization: Bearer %s\\n\' "$tok" >"$f" && echo "$f"'
    )
    path = lab.ssh(control_plane(lab), command).strip()
    try:
        yield path
    finally:
        lab.ssh(control_plane(lab), f"rm -f {shlex.quote(path)}", check=False)


def request(lab: Lab, header: str, method: str, path: str, body: Any = None, patch: bool = False) -> Response:
    """One HTTPS request to the apiserver on the control plane's address, the cluster CA verified."""
    node = control_plane(lab)
    content_type = "application/merge-patch+json" if patch else "application/json"
    command = [
        "curl", "-sS", "--cacert", f"{PKI}/ca.crt", "-H", f"@{header}", "-H", "Accept: application/json",
        "-X", method, "-w", "\\n%{http_code}",
        *(["-H", f"Content-Type: {content_type}", "--data-binary", "@-"] if body is not None else []),
        f"https://{node.address}:6443{path}",
    ]  # fmt: skip
    result = on_control_plane(lab, shlex.join(command), json.dumps(body) if body is not None else "")
    assert result.returncode == 0, f"curl {method} {path}: {result.stderr}"
    text, _, code = result.stdout.rpartition("\n")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    response = Response(method, path, int(code), parsed)
    print(response)
    return response


def test_team_namespaces_enforce_restricted(converged: dict[str, Any], lab: Lab) -> None:
    for namespace in (NAMESPACE, SIBLING, OTHER_TEAM):
        labels = json.loads(kubectl(lab, f"get namespace {namespace} -o json"))["metadata"]["labels"]
        modes = {mode: labels.get(f"pod-security.kubernetes.io/{mode}") for mode in ("enforce", "warn", "audit")}
        assert modes == dict.fromkeys(modes, "restricted"), labels
        assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"


def test_ci_deployer_token_updates_its_deployment(workload: None, token_header: str, lab: Lab) -> None:
    path = f"{APPS}/{NAMESPACE}/deployments/{PROBE}"
    got = request(lab, token_header, "GET", path)
    assert got.code == 200, got
    patch = {"metadata": {"annotations": {"spectra.io/deployed-by": "ci-patch"}}}
    patched = request(lab, token_header, "PATCH", path, patch, patch=True)
    assert patched.code == 200, patched
    assert patched.body["metadata"]["annotations"]["spectra.io/deployed-by"] == "ci-patch"
    # update (PUT) of the whole object, as `kubectl replace` does
    replacement = copy.deepcopy(patched.body)
    replacement["metadata"]["annotations"]["spectra.io/deployed-by"] = "ci-put"
    del replacement["metadata"]["resourceVersion"]  # unconditional: a status update in between is no conflict
    put = request(lab, token_header, "PUT", path, replacement)
    assert put.code == 200, put
    seen = json.loads(kubectl(lab, f"-n {NAMESPACE} get deployment {PROBE} -o json"))
    assert seen["metadata"]["annotations"]["spectra.io/deployed-by"] == "ci-put"
    # Services and ConfigMaps: readable (the namespace's root CA ConfigMap exists in every namespace)
    configmap = request(lab, token_header, "GET", f"{CORE}/{NAMESPACE}/configmaps/kube-root-ca.crt")
    assert configmap.code == 200, configmap


def test_ci_deployer_is_refused_everything_else(workload: None, token_header: str, lab: Lab) -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "escalate", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": DEPLOYER, "namespace": NAMESPACE}],
    }  # fmt: skip
    refused = [
        ("GET", f"{CORE}/{NAMESPACE}/secrets/{PROBE}", None),  # a Secret of its own namespace
        ("GET", f"{CORE}/{NAMESPACE}/secrets", None),
        ("GET", f"{APPS}/{SIBLING}/deployments/{PROBE}", None),  # its team's other namespace
        ("GET", f"{APPS}/{OTHER_TEAM}/deployments/{PROBE}", None),  # another team's (the Deployment exists)
        ("PATCH", f"{APPS}/{OTHER_TEAM}/deployments/{PROBE}", {"metadata": {"labels": {"x": "y"}}}),
        ("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings", binding),
        ("POST", f"{APPS}/{NAMESPACE}/deployments", {**deployment(NAMESPACE), "metadata": {"name": "new"}}),
        ("DELETE", f"{APPS}/{NAMESPACE}/deployments/{PROBE}", None),
        ("GET", f"{CORE}/{NAMESPACE}/pods", None),
        ("POST", f"{CORE}/{NAMESPACE}/serviceaccounts/{DEPLOYER}/token", {"apiVersion": "authentication.k8s.io/v1",
                                                                          "kind": "TokenRequest", "spec": {}}),
    ]  # fmt: skip
    responses = [
        request(lab, token_header, method, path, body, patch=method == "PATCH") for method, path, body in refused
    ]
    wrong = [str(r) for r in responses if r.code != 403 or USER not in str(r.body.get("message", ""))]
    assert wrong == [], wrong
    assert all(r.body.get("reason") == "Forbidden" for r in responses)
    # nothing of it happened
    assert kubectl(lab, f"-n {NAMESPACE} get rolebinding escalate --ignore-not-found").strip() == ""
    assert kubectl(lab, f"-n {NAMESPACE} get deployment {PROBE} -o name").strip() == f"deployment.apps/{PROBE}"


def test_privileged_pod_is_refused_by_pod_security(converged: dict[str, Any], lab: Lab) -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tenancy-privileged", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "root", "image": IMAGE, "args": ["serve", ":8080"],
                                 "securityContext": {"privileged": True}}]},
    }  # fmt: skip
    # as cluster-admin: RBAC allows it, admission does not
    result = as_admin(lab, "create", pod)
    print(f"privileged pod in {NAMESPACE}: exit {result.returncode}: {result.stderr.strip()}")
    assert result.returncode != 0
    assert "Error from server (Forbidden)" in result.stderr, result.stderr  # HTTP 403
    assert 'violates PodSecurity "restricted:latest"' in result.stderr, result.stderr
    assert 'privileged (container "root" must not set securityContext.privileged=true)' in result.stderr
    absent = kubectl(lab, f"-n {NAMESPACE} get pod tenancy-privileged --ignore-not-found")
    assert absent.strip() == ""


def test_pod_without_resources_gets_the_limit_range_defaults(workload: None, lab: Lab) -> None:
    pod = json.loads(kubectl(lab, f"-n {NAMESPACE} get pod {BARE_POD} -o json"))
    (container,) = pod["spec"]["containers"]
    assert container["resources"] == {"requests": DEFAULT_REQUESTS, "limits": DEFAULT_LIMITS}, container
    # the data team's own default limit, in its namespace
    pods = json.loads(kubectl(lab, f"-n {OTHER_TEAM} get pods -l app={PROBE} -o json"))["items"]
    assert pods and all(
        p["spec"]["containers"][0]["resources"]["limits"]["memory"] == OTHER_TEAM_MEMORY_LIMIT for p in pods
    ), [p["spec"]["containers"][0]["resources"] for p in pods]


def test_quota_counts_what_runs(workload: None, lab: Lab) -> None:
    def usage() -> tuple[bool, Any]:
        status = json.loads(kubectl(lab, f"-n {NAMESPACE} get resourcequota team-quota -o json"))["status"]
        used = status.get("used", {})
        # the probe Deployment's pod and the bare pod, each with the default requests and limits
        wanted = {"pods": "2", "requests.cpu": "100m", "requests.memory": "128Mi", "limits.cpu": "1",
                  "limits.memory": "512Mi"}  # fmt: skip
        return {key: used.get(key) for key in wanted} == wanted, status

    status = until("the quota counting both pods", usage, timeout=60)
    print(f"\nquota in {NAMESPACE}: used {status['used']} of {status['hard']}")
    assert status["hard"]["pods"] == POD_QUOTA
    assert status["hard"]["services.nodeports"] == "0"
