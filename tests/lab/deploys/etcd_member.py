"""Lab test deploy: the cluster PKI, then etcd, exactly as a cluster deploy would call them.

    spectra deploy inventories/lab.py tests/lab/deploys/etcd_member.py --limit node1 \
        --data pki_enabled=True --data etcd_enabled=True --data pki_dir=... (see tests/lab/test_etcd.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyinfra runs this file by path: make the repository importable (deploys/, facts/).
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from deploys.components.etcd import etcd  # noqa: E402
from deploys.components.pki import cluster_pki_files  # noqa: E402

cluster_pki_files()
etcd()
