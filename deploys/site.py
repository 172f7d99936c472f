"""The whole site: `pyinfra inventories/<where>.py deploys/site.py` (or `spectra deploy ...`).

Every host becomes a Kubernetes-ready, monitored, hardened node (deploys/node.py). The cluster itself
(PKI, etcd, control plane, kubelet) joins here once deploys/cluster.py exists (issue 5).
"""

from pyinfra import local

local.include("deploys/node.py")
