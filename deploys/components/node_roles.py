"""Role labels on the cluster's Node objects, set from a control plane once the kubelets registered.

A kubelet may not label itself ``node-role.kubernetes.io/*`` (NodeRestriction), so the first control plane
(by name) does it with ``admin.conf``: ``control_plane`` hosts get ``node-role.kubernetes.io/control-plane``,
``workers`` get ``node-role.kubernetes.io/worker``, other roles ``node-role.kubernetes.io/<role>``
(``node_roles_labels`` maps roles to labels). Labels are read at prepare; a node that already has them
costs nothing. A node that has not registered yet is waited for (``node_roles_wait``): on a first run
its kubelet was started a moment earlier in the same run.
"""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.components.pod_network import kubelet_hosts
from deploys.prepare import FactRequest, prepared_facts, setting
from facts.kubernetes_nodes import KubernetesNodes
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "node_roles_enabled": True,  # label nodes with their inventory roles
    # inventory role -> label key (value ""); a role not listed gets node-role.kubernetes.io/<role>
    "node_roles_labels": {
        "control_plane": "node-role.kubernetes.io/control-plane",
        "workers": "node-role.kubernetes.io/worker",
    },
    "node_roles_ignore": ["etcd", "monitoring"],  # roles that are not node roles
    "node_roles_wait": 180,  # seconds to wait for a node to register before labelling fails
    "node_roles_kubeconfig": "/etc/kubernetes/admin.conf",  # the identity that labels (a control plane's)
}
TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()


def first_control_plane() -> str | None:
    names = sorted(m.name for m in host.state.inventory if "control_plane" in (m.data.get("roles") or []))
    return names[0] if names else None


def wanted_labels(members: list[Any], mapping: dict[str, str], ignore: list[str]) -> dict[str, dict[str, str]]:
    wanted: dict[str, dict[str, str]] = {}
    for member in sorted(members, key=lambda m: m.name):
        roles = [str(role) for role in (member.data.get("roles") or []) if str(role) not in ignore]
        wanted[member.name] = {mapping.get(role, f"node-role.kubernetes.io/{role}"): "" for role in roles}
    return wanted


def missing_labels(wanted: dict[str, dict[str, str]], nodes: dict[str, Any]) -> dict[str, dict[str, str]]:
    missing = {}
    for name, labels in wanted.items():
        have = (nodes.get(name) or {}).get("labels") or {}
        absent = {key: value for key, value in labels.items() if have.get(key) != value}
        if absent:
            missing[name] = absent
    return missing


@operation()
def label_nodes(kubectl: str, kubeconfig: str, labels: dict[str, dict[str, str]], wait: int = 180):
    """Wait for each node of ``labels`` to be registered, then set its labels (``--overwrite``)."""
    if not labels:
        host.noop("nodes carry their role labels")
        return
    base = StringCommand(QuoteString(kubectl), "--kubeconfig", QuoteString(kubeconfig), "--request-timeout=10s")
    for node, node_labels in sorted(labels.items()):
        yield StringCommand(
            "i=0;", "until", base, "get", "node", QuoteString(node), ">/dev/null", "2>&1;", "do",
            "i=$((i+1));", "if", "[", "$i", "-ge", str(int(wait)), "];", "then",
            "echo", QuoteString(f"node {node} did not register within {int(wait)}s"), ">&2;", "exit", "1;", "fi;",
            "sleep", "1;", "done",
        )  # fmt: skip
        yield StringCommand(
            base, "label", "node", QuoteString(node), "--overwrite",
            *[QuoteString(f"{key}={value}") for key, value in sorted(node_labels.items())],
        )  # fmt: skip


def _nodes_request() -> tuple[type[KubernetesNodes], dict[str, str]]:
    kubeconfig = str(host.data.get("node_roles_kubeconfig", DEFAULTS["node_roles_kubeconfig"]))
    return (KubernetesNodes, {"kubectl": kubernetes_binaries.binary_path("kubectl"), "kubeconfig": kubeconfig})


def fact_requests() -> list[Any]:
    """What :func:`node_roles` reads (deploys/cluster.py reads it with the other components' facts)."""
    if not host.data.get("node_roles_enabled", True) or host.name != first_control_plane():
        return []
    return [_nodes_request()]


@deploy("Node role labels", data_defaults=DEFAULTS)
def node_roles() -> None:
    if not setting("node_roles_enabled") or host.name != first_control_plane():
        host.noop("node role labels: set from the first control plane")
        return
    kubectl = kubernetes_binaries.binary_path("kubectl")
    kubeconfig = str(setting("node_roles_kubeconfig"))
    # kubectl is the control plane component's (installed earlier in the run)
    (nodes,) = prepared_facts(_nodes_request())
    wanted = wanted_labels(
        kubelet_hosts(), dict(setting("node_roles_labels") or {}), list(setting("node_roles_ignore") or [])
    )
    label_nodes(
        name="Role labels on the nodes",
        kubectl=kubectl,
        kubeconfig=kubeconfig,
        labels=missing_labels(wanted, nodes.get("nodes") or {}),
        wait=int(setting("node_roles_wait")),
    )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["node_roles_enabled"]) and topology.is_first_control_plane(host, host.state.inventory)


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="node_roles",
    defaults=DEFAULTS,
    deploy=node_roles,
    should_run=should_run,
    fact_requests=_fact_requests,
)
