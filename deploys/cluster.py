"""The Kubernetes cluster on the inventory's hosts: PKI, etcd, control plane, node agents, pod network, DNS.

    pyinfra -y inventories/<where>.py deploys/cluster.py     (deploys/site.py runs it after deploys/node.py)

Roles decide what each host gets: ``etcd`` hosts an etcd member; ``control_plane`` hosts kube-apiserver,
kube-controller-manager and kube-scheduler; hosts with a role in ``pki_node_roles`` (control planes and
workers by default) run HAProxy in front of every apiserver, the pod network, kubelet and kube-proxy.
The first control plane (by name) labels nodes with their roles and applies the addons (CoreDNS).

Each component is one @deploy with its own settings and flag (``pki_enabled``, ``etcd_enabled``,
``control_plane_enabled``, ``apiserver_lb_enabled``, ``pod_network_enabled``, ``kubelet_enabled``,
``kube_proxy_enabled``, ``node_roles_enabled``, ``cluster_addons_enabled``). The order is the order of
dependence: certificates before the services that use them, etcd before the apiserver, the balancer and
the pod network before kubelet.
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyinfra runs this file by path: make the repository importable (deploys/, facts/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyinfra.context import ctx_host  # noqa: E402

from deploys import pyinfra_speedups  # noqa: E402
from deploys.components import (  # noqa: E402
    apiserver_lb,
    cluster_addons,
    file_permissions,
    kube_proxy,
    kubelet,
    node_roles,
    pod_network,
)
from deploys.components.control_plane import control_plane  # noqa: E402
from deploys.components.etcd import etcd  # noqa: E402
from deploys.components.pki import cluster_pki_files  # noqa: E402
from deploys.operations import managed  # noqa: E402
from deploys.prepare import prepared_facts  # noqa: E402

pyinfra_speedups.enable()

# The node components' facts in one remote command per host (see deploys/node.py).
prepared_facts(
    *pod_network.fact_requests(),
    *apiserver_lb.fact_requests(),
    *kubelet.fact_requests(),
    *kube_proxy.fact_requests(),
    *node_roles.fact_requests(),
    *cluster_addons.fact_requests(),
)
cluster_pki_files()
etcd()
control_plane()
apiserver_lb.apiserver_lb()
pod_network.pod_network()
kubelet.kubelet()
kube_proxy.kube_proxy()
node_roles.node_roles()
cluster_addons.cluster_addons()

# Again last (as in node.py) when this run changed the host: packages installed above (haproxy's system user)
# touch files it tightens. On a converged host it does not run twice (and a dry run shows it as conditional).
this_host = ctx_host.get()
file_permissions.file_permissions(_if=lambda: managed.host_changed_this_run(this_host))
