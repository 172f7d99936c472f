"""Role labels on the cluster's Node objects, set from a control plane once the kubelets registered.

A kubelet may not label itself ``node-role.kubernetes.io/*`` (NodeRestriction), so the first control plane
(by name) does it with ``admin.conf``: ``control_plane`` hosts get ``node-role.kubernetes.io/control-plane``,
``workers`` get ``node-role.kubernetes.io/worker``, other roles ``node-role.kubernetes.io/<role>``
(``node_roles_labels`` maps roles to labels). Labels are read at prepare; a node that already has them
costs nothing. A node that has not registered yet is waited for (``node_roles_wait``): on a first run
its kubelet was started a moment earlier in the same run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.components import kubernetes_binaries
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.kubernetes_nodes import KubernetesNodes
from spectra import topology
from spectra.pki import layout

DEFAULTS: dict[str, Any] = {
    "node_roles_enabled": True,  # label nodes with their inventory roles
    # inventory role -> label key (value ""); a role not listed gets node-role.kubernetes.io/<role>
    "node_roles_labels": {
        "control_plane": "node-role.kubernetes.io/control-plane",
        "workers": "node-role.kubernetes.io/worker",
    },
    "node_roles_ignore": ["etcd", "monitoring"],  # roles that are not node roles
    "node_roles_wait": 180,  # seconds to wait for a node to register before labelling fails
}
TYPES: dict[str, type | tuple[type, ...]] = {}
REQUIRED: set[str] = set()

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats of the labelling settings (pure: ``spectra validate`` runs it too)."""
    problems = []
    labels = settings["node_roles_labels"] or {}
    if not isinstance(labels, Mapping):
        problems.append(f"node_roles_labels={labels!r}: a mapping of role -> label key")
    else:
        for role, key in labels.items():
            if not _LABEL_KEY.match(str(key)):
                problems.append(f"node_roles_labels: {role}: {key!r} is not a label key")
    wait = settings["node_roles_wait"]
    if not isinstance(wait, int) or isinstance(wait, bool) or wait < 1:
        problems.append(f"node_roles_wait={wait!r}: a whole number of seconds, at least 1")
    return problems


def wanted_labels(
    members: Iterable[Any], mapping: Mapping[str, str], ignore: Iterable[str]
) -> dict[str, dict[str, str]]:
    """Node name -> the role labels it must carry, for each of ``members``."""
    wanted: dict[str, dict[str, str]] = {}
    for member in topology.by_name(members):
        roles = sorted(topology.roles(member) - set(ignore))
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


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["node_roles_enabled"]) and topology.is_first_control_plane(host, host.state.inventory)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`node_roles` reads: the nodes and their labels (kubectl as admin.conf)."""
    kubeconfig = layout.kubeconfig_file(settings, "admin")
    return [(KubernetesNodes, {"kubectl": kubernetes_binaries.binary_path("kubectl"), "kubeconfig": kubeconfig})]


@deploy("Node role labels")
def node_roles() -> None:
    settings = Settings()
    # kubectl is the control plane component's (installed earlier in the run)
    (nodes,) = prepared_facts(*fact_requests(settings))
    wanted = wanted_labels(
        topology.kubelet_hosts(host.state.inventory),
        dict(settings["node_roles_labels"] or {}),
        list(settings["node_roles_ignore"] or []),
    )
    label_nodes(
        name="Role labels on the nodes",
        kubectl=kubernetes_binaries.binary_path("kubectl"),
        kubeconfig=layout.kubeconfig_file(settings, "admin"),
        labels=missing_labels(wanted, nodes.get("nodes") or {}),
        wait=int(settings["node_roles_wait"]),
    )


COMPONENT = Component(
    name="node_roles",
    defaults=DEFAULTS,
    deploy=node_roles,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
