"""The cluster's addons, pushed from the first control plane: `pyinfra inventories/<where>.py deploys/addons.py`
(``deploys/site.py`` runs it after ``deploys/cluster.py``).

Each addon is a record in its module (``ADDON``: settings, ``<addon>_enabled`` switch, namespace, templates
under ``templates/addons/<addon>/``) and ``deploys/addon.py`` says how a set is applied: dry run on the
apiserver, server-side apply under one field manager, pruning, rollout waits, and a drift check that makes a
converged cluster cost no command. Host-side parts (the directories of node-local volumes) run on their hosts.

The order: the manifests directory and namespaces first, then storage, then the addons that use them.
"""

from __future__ import annotations

from pyinfra.context import ctx_host

from deploys import addon, pyinfra_speedups
from deploys.component import Component, Step, run
from deploys.components import (
    alertmanager,
    cluster_addons,
    coredns,
    file_permissions,
    gateway,
    grafana,
    journal_upload,
    kube_router,
    local_storage,
    local_volume_dirs,
    metrics_server,
    network_policies,
    prometheus,
    sealed_secrets,
    tenancy,
    victorialogs,
    victorialogs_agent,
)
from deploys.operations import managed

pyinfra_speedups.enable()

this_host = ctx_host.get()

ADDON_COMPONENTS: list[Component | Step] = [
    cluster_addons.COMPONENT,
    coredns.COMPONENT,
    tenancy.COMPONENT,  # team RBAC, quotas and limits (its namespaces come with cluster_addons)
    kube_router.COMPONENT,  # NetworkPolicies enforced before any policy is applied
    network_policies.COMPONENT,  # default deny in the application namespaces, the declared allows
    sealed_secrets.COMPONENT,  # the SealedSecret CRD, the controller and its key from the PKI
    sealed_secrets.FILES_COMPONENT,  # the repository's SealedSecrets (CRD and team namespaces exist)
    gateway.CRDS_COMPONENT,  # the Gateway API's and Traefik's CRDs
    gateway.COMPONENT,  # Traefik on the edge hosts, the Gateway, its routes and certificates
    gateway.CERT_FILES_COMPONENT,  # the served certificates where the certificate metrics read them
    local_volume_dirs.COMPONENT,  # on the hosts that hold the volumes
    local_storage.COMPONENT,
    alertmanager.COMPONENT,  # before Prometheus, which sends its alerts there
    prometheus.COMPONENT,
    grafana.COMPONENT,  # after Prometheus, its datasource
    metrics_server.COMPONENT,
    victorialogs.COMPONENT,  # the log store (its PV comes from local_storage)
    victorialogs_agent.COMPONENT,  # vlagent on every node
    journal_upload.COMPONENT,  # on every Kubernetes node: the journal to its node's vlagent
    # Again last (as in node.py and cluster.py) when this run changed the host: the journal upload's package
    # adds a system user (/etc/shadow-, /etc/gshadow-, which it tightens).
    Step(file_permissions.COMPONENT, {"_if": lambda: managed.host_changed_this_run(this_host)}),
]

addon.select(
    [step for step in ADDON_COMPONENTS if isinstance(step, Component)]
)  # namespaces and volumes of these addons only
run(ADDON_COMPONENTS)
