"""Lab test deploy: the cluster PKI, etcd, then the control plane, exactly as a cluster deploy would call them.

    spectra deploy inventories/lab.py tests/lab/deploys/control_plane.py --limit node1 \
        --data pki_enabled=True --data etcd_enabled=True --data control_plane_enabled=True ... \
        (see tests/lab/test_control_plane.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyinfra runs this file by path: make the repository importable (deploys/, facts/).
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from deploys.components.control_plane import control_plane  # noqa: E402
from deploys.components.etcd import etcd  # noqa: E402
from deploys.components.pki import cluster_pki_files  # noqa: E402

cluster_pki_files()
etcd()
control_plane()
