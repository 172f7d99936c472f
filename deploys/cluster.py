"""The Kubernetes cluster on the inventory's hosts: PKI, etcd, control plane, node agents, pod network
(the addons: deploys/addons.py).

    pyinfra -y inventories/<where>.py deploys/cluster.py     (deploys/site.py runs it after deploys/node.py)

Roles decide what each host gets (``spectra.topology``): ``etcd`` hosts an etcd member; ``control_plane``
hosts kube-apiserver, kube-controller-manager and kube-scheduler; hosts with a role in ``cluster_node_roles``
(control planes and workers by default) run HAProxy in front of every apiserver, the pod network, kubelet and
kube-proxy. The first control plane (by name) labels nodes with their roles.

The components in order of dependence: certificates before the services that use them, etcd before the
apiserver, the balancer and the pod network before kubelet. Each one's settings, gate and facts are its own
(``COMPONENT`` in its module, see deploys/component.py).
"""

from __future__ import annotations

from pyinfra.context import ctx_host

from deploys import pyinfra_speedups
from deploys.component import Component, Step, run
from deploys.components import (
    apiserver_lb,
    control_plane,
    etcd,
    file_permissions,
    kube_proxy,
    kubelet,
    node_roles,
    pki,
    pod_network,
)
from deploys.operations import managed

pyinfra_speedups.enable()

this_host = ctx_host.get()

CLUSTER_COMPONENTS: list[Component | Step] = [
    pki.COMPONENT,
    etcd.COMPONENT,
    control_plane.COMPONENT,
    apiserver_lb.COMPONENT,
    pod_network.COMPONENT,
    kubelet.COMPONENT,
    kube_proxy.COMPONENT,
    node_roles.COMPONENT,
    # Again last (as in node.py) when this run changed the host: packages installed above (haproxy's system
    # user) touch files it tightens. On a converged host it does not run twice (a dry run shows it as
    # conditional).
    Step(file_permissions.COMPONENT, {"_if": lambda: managed.host_changed_this_run(this_host)}),
]

run(CLUSTER_COMPONENTS)
