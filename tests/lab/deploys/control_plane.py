"""Lab test deploy: the cluster PKI, etcd, then the control plane, exactly as a cluster deploy would run them.

    spectra deploy inventories/lab.py tests/lab/deploys/control_plane.py --limit node1 \
        --data pki_enabled=True --data etcd_enabled=True --data control_plane_enabled=True ... \
        (see tests/lab/test_control_plane.py)
"""

from __future__ import annotations

from deploys.component import run
from deploys.components import control_plane, etcd, pki

run([pki.COMPONENT, etcd.COMPONENT, control_plane.COMPONENT])
