"""RBAC bootstrap: the ClusterRoleBindings the PKI's identities need, created once from the first control plane.

``kubeadm:cluster-admins`` -> cluster-admin (admin.conf and the apiserver's kubelet client certificate are in
that group, ``spectra/pki/cluster.py``) and the nodes' client-certificate renewal. They are read as
admin.conf's identity; only when one is missing (or admin may not read them: the first one is the admin's own
right) is the break-glass super-admin kubeconfig (``system:masters``) uploaded into a 0700 directory under
/run, used once with ``kubectl apply`` and removed by the same command. A helper of the control plane
component, with no settings of its own.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, QuoteString, StringCommand, operation

from deploys.operations import managed
from facts.kubernetes import ClusterRoleBindings
from spectra.pki.cluster import CLUSTER_ADMINS

BOOTSTRAP_DIR = "/run/spectra-rbac-bootstrap"  # tmpfs, 0700, removed by the command that uses it
# ClusterRoleBindings the PKI's identities need: name -> (ClusterRole, Group)
RBAC_BINDINGS: dict[str, tuple[str, str]] = {
    # admin.conf and the apiserver's kubelet client certificate are in this group (spectra/pki/cluster.py)
    CLUSTER_ADMINS: ("cluster-admin", CLUSTER_ADMINS),
    # kubelets renew their own client certificates (CSRs approved by the controller manager)
    "kubeadm:node-autoapprove-certificate-rotation": (
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "system:nodes",
    ),
}


def rbac_manifest(bindings: dict[str, tuple[str, str]]) -> str:
    documents = []
    for name, (role, group) in bindings.items():
        documents.append(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"
            f'metadata:\n  name: "{name}"\n'
            f'roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: "{role}"\n'
            f'subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: "{group}"\n'
        )
    return "---\n".join(documents)


def missing_bindings(found: dict[str, Any], wanted: dict[str, tuple[str, str]]) -> list[str]:
    """The wanted bindings absent from ``found`` or not granting their role to their group."""
    missing = []
    for name, (role, group) in wanted.items():
        binding = found.get(name)
        if not binding or binding.get("role") != f"ClusterRole/{role}" or f"Group:{group}" not in binding["subjects"]:
            missing.append(name)
    return missing


# $1 kubectl, $2 directory holding super-admin.conf and rbac.yaml, $3 apiserver URL
_APPLY = (
    "trap 'rm -rf \"$2\"' EXIT; "
    '"$1" --kubeconfig "$2/super-admin.conf" --server "$3" --request-timeout=30s apply -f "$2/rbac.yaml"'
)


@operation()
def rbac_bootstrap(
    kubectl: str,
    kubeconfig: str,
    server: str,
    bindings: dict[str, tuple[str, str]],
    super_admin: str,
    current: Any = managed.UNSET,
):
    """
    Create the ClusterRoleBindings ``bindings`` (name -> (ClusterRole, Group)) that are missing, as
    super-admin: its kubeconfig lives on the host only for the one ``kubectl apply`` (a 0700 directory under
    /run, removed by the same command, also on failure).

    + kubeconfig: admin.conf, the identity the bindings are read as (Forbidden: its own binding is missing)
    + server: this host's apiserver (not the node-local balancer, which may not be up yet)
    + current: a ``ClusterRoleBindings`` answer read at prepare time; read again unless it was a full
      answer and nothing changed on the host since
    """
    names = list(bindings)
    prepared = current if isinstance(current, dict) and current.get("state") == "ok" else None
    state = managed.fresh(prepared, ClusterRoleBindings, kubectl=kubectl, kubeconfig=kubeconfig, server=server,
                          names=names)  # fmt: skip
    if state["state"] in ("unavailable", "error"):
        raise OperationError(f"cannot read the cluster's RBAC bindings at {server}: {state['message']}")
    missing = names if state["state"] == "forbidden" else missing_bindings(state["bindings"], bindings)
    if not missing:
        host.noop(f"RBAC bindings exist: {', '.join(names)}")
        return
    manifest = rbac_manifest({name: bindings[name] for name in missing})
    yield StringCommand("rm", "-rf", BOOTSTRAP_DIR, "&&", "install", "-d", "-m", "0700", BOOTSTRAP_DIR)
    yield StringCommand("install", "-m", "0600", "/dev/null", f"{BOOTSTRAP_DIR}/super-admin.conf")
    yield FileUploadCommand(
        BytesIO(super_admin.encode()),
        f"{BOOTSTRAP_DIR}/super-admin.conf",
        remote_temp_filename=f"{BOOTSTRAP_DIR}/super-admin.conf",
    )
    yield FileUploadCommand(
        BytesIO(manifest.encode()),
        f"{BOOTSTRAP_DIR}/rbac.yaml",
        remote_temp_filename=f"{BOOTSTRAP_DIR}/rbac.yaml",
    )
    yield StringCommand(
        "sh", "-c", QuoteString(_APPLY), "spectra-rbac", QuoteString(kubectl), BOOTSTRAP_DIR, QuoteString(server)
    )
