"""Only the cluster certificates: `pyinfra -y inventories/<where>.py deploys/certs.py` (or `spectra deploy ...`).

Makes or renews the PKI on the machine running pyinfra and installs on each host the files its roles need
(``deploys/components/pki.py``), without touching anything else: what ``kubeadm certs renew`` is to kubeadm.
The components that use the certificates (etcd, control plane, kubelet) restart on their own runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyinfra runs this file by path: make the repository importable (deploys/, facts/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploys.components.pki import cluster_pki_files  # noqa: E402

cluster_pki_files()
