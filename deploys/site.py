"""The whole site: `pyinfra inventories/<where>.py deploys/site.py` (or `spectra deploy ...`).

Every host becomes a Kubernetes-ready, monitored, hardened node (deploys/node.py), then the cluster runs
on them (deploys/cluster.py: PKI, etcd, control plane, kubelet, kube-proxy, pod network), then the addons
are pushed from the first control plane (deploys/addons.py: CoreDNS, storage, metrics, ...).
"""

from pyinfra import local

local.include("deploys/node.py")
local.include("deploys/cluster.py")
local.include("deploys/addons.py")
