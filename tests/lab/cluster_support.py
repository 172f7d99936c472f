"""What the lab tests of the cluster and its addons share: kubectl on the control plane, waiting for a
condition (the ``converged`` fixture, a converged site, is in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.lab.conftest import Lab, LabNode

KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"
HELLO_IMAGE = "docker.io/spectra/hello:lab"  # the lab registry's workload image (lab/registry.py)
HELLO_PORT = 8080


def control_plane(lab: Lab) -> LabNode:
    return next(node for node in lab.nodes if "control_plane" in node.roles)


def kubectl(lab: Lab, args: str, check: bool = True, timeout: int = 600) -> str:
    return lab.ssh(control_plane(lab), f"{KUBECTL} {args}", check=check, timeout=timeout)


def until(what: str, check: Callable[[], Any], timeout: float = 180, every: float = 3) -> Any:
    """Call ``check`` (returning ``(done, value)``) until done; its value, or an AssertionError with the last."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last and last[0]:
            return last[1]
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout:.0f} s; last: {last}")


def hello_pod(name: str, namespace: str, node: str, app: str | None = None) -> dict[str, Any]:
    """A pod of the hello server on ``node`` (port ``http``), labelled ``app.kubernetes.io/name: app or name``,
    that Pod Security ``restricted`` admits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": app or name}},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "hello",
                    "image": HELLO_IMAGE,
                    "args": ["serve", f":{HELLO_PORT}"],
                    "ports": [{"name": "http", "containerPort": HELLO_PORT}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],  # fmt: skip
        },
    }
