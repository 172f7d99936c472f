from __future__ import annotations

import json
from pathlib import Path

import pytest

from facts.kubernetes import ClusterRoleBindings
from tests.unit.facts_util import run_locally

pytestmark = pytest.mark.unit

BINDING = {
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "kubeadm:cluster-admins"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}],
}


def fake_kubectl(tmp_path: Path, stdout: str, stderr: str = "", rc: int = 0) -> dict[str, object]:
    """A kubectl that records its arguments and answers as told."""
    (tmp_path / "out").write_text(stdout)
    (tmp_path / "err").write_text(stderr)
    script = tmp_path / "kubectl"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\ncat {tmp_path}/out\ncat {tmp_path}/err >&2\nexit {rc}\n'
    )
    script.chmod(0o755)
    conf = tmp_path / "admin.conf"
    conf.write_text("kubeconfig")
    return {"kubectl": str(script), "kubeconfig": str(conf), "server": "https://10.0.0.11:6443",
            "names": ["kubeadm:cluster-admins", "other"]}  # fmt: skip


def test_list_of_bindings(tmp_path: Path) -> None:
    kwargs = fake_kubectl(tmp_path, json.dumps({"kind": "List", "items": [BINDING]}, indent=2))
    state = run_locally(ClusterRoleBindings(), **kwargs)
    assert state == {
        "state": "ok",
        "message": "",
        "bindings": {
            "kubeadm:cluster-admins": {
                "role": "ClusterRole/cluster-admin",
                "subjects": ["Group:kubeadm:cluster-admins"],
            }
        },
    }
    args = (tmp_path / "args").read_text().split("\n")
    assert args[:6] == ["--kubeconfig", str(tmp_path / "admin.conf"), "--server", "https://10.0.0.11:6443",
                        "--request-timeout=10s", "get"]  # fmt: skip
    assert args[6:9] == ["clusterrolebindings", "kubeadm:cluster-admins", "other"]


def test_one_found_is_a_single_object(tmp_path: Path) -> None:
    # kubectl prints the object itself, not a List, when only one of the names exists
    state = run_locally(ClusterRoleBindings(), **fake_kubectl(tmp_path, json.dumps(BINDING)))
    assert list(state["bindings"]) == ["kubeadm:cluster-admins"]


def test_none_found(tmp_path: Path) -> None:
    state = run_locally(ClusterRoleBindings(), **fake_kubectl(tmp_path, ""))
    assert state == {"state": "ok", "bindings": {}, "message": ""}


def test_forbidden(tmp_path: Path) -> None:
    error = (
        'Error from server (Forbidden): clusterrolebindings.rbac.authorization.k8s.io "kubeadm:cluster-admins" is '
        'forbidden: User "kubernetes-admin" cannot get resource "clusterrolebindings"'
    )
    state = run_locally(ClusterRoleBindings(), **fake_kubectl(tmp_path, "", error, rc=1))
    assert state["state"] == "forbidden" and "kubernetes-admin" in state["message"]


def test_apiserver_down(tmp_path: Path) -> None:
    error = "The connection to the server 10.0.0.11:6443 was refused - did you specify the right host or port?"
    state = run_locally(ClusterRoleBindings(), **fake_kubectl(tmp_path, "", error, rc=1))
    assert state == {"state": "error", "bindings": {}, "message": error}


def test_no_kubectl_or_kubeconfig(tmp_path: Path) -> None:
    kwargs = fake_kubectl(tmp_path, "")
    state = run_locally(ClusterRoleBindings(), **{**kwargs, "kubectl": str(tmp_path / "missing")})
    assert state["state"] == "unavailable"
    state = run_locally(ClusterRoleBindings(), **{**kwargs, "kubeconfig": str(tmp_path / "missing.conf")})
    assert state["state"] == "unavailable"
