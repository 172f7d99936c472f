"""Only the cluster certificates: `pyinfra -y inventories/<where>.py deploys/certs.py` (or `spectra deploy ...`).

Makes or renews the PKI on the machine running pyinfra and installs on each host the files its roles need
(``deploys/components/pki.py``), without touching anything else: what ``kubeadm certs renew`` is to kubeadm.
The components that use the certificates (etcd, control plane, kubelet) restart on their own runs.
"""

from __future__ import annotations

from deploys.component import run
from deploys.components import pki

run([pki.COMPONENT])
