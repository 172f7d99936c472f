"""The cluster's addons, pushed from the first control plane: `pyinfra inventories/<where>.py deploys/addons.py`
(``deploys/site.py`` runs it after ``deploys/cluster.py``).

Each addon is a record in its module (``ADDON``: settings, ``<addon>_enabled`` switch, namespace, templates
under ``templates/addons/<addon>/``) and ``deploys/addon.py`` says how a set is applied: dry run on the
apiserver, server-side apply under one field manager, pruning, rollout waits, and a drift check that makes a
converged cluster cost no command. Host-side parts (the directories of node-local volumes) run on their hosts.

The order: the manifests directory and namespaces first, then storage, then the addons that use them.
"""

from __future__ import annotations

from deploys import addon, pyinfra_speedups
from deploys.component import run
from deploys.components import (
    alertmanager,
    cluster_addons,
    coredns,
    grafana,
    journal_upload,
    local_storage,
    local_volume_dirs,
    metrics_server,
    prometheus,
    victorialogs,
    victorialogs_agent,
)

pyinfra_speedups.enable()

ADDON_COMPONENTS = [
    cluster_addons.COMPONENT,
    coredns.COMPONENT,
    local_volume_dirs.COMPONENT,  # on the hosts that hold the volumes
    local_storage.COMPONENT,
    alertmanager.COMPONENT,  # before Prometheus, which sends its alerts there
    prometheus.COMPONENT,
    grafana.COMPONENT,  # after Prometheus, its datasource
    metrics_server.COMPONENT,
    victorialogs.COMPONENT,  # the log store (its PV comes from local_storage)
    victorialogs_agent.COMPONENT,  # vlagent on every node
    journal_upload.COMPONENT,  # on every Kubernetes node: the journal to its node's vlagent
]

addon.select(ADDON_COMPONENTS)  # namespaces and volumes of these addons only
run(ADDON_COMPONENTS)
