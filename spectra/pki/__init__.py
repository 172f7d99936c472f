"""The cluster's PKI, made by the toolkit (Python ``cryptography``), kubeadm's layout and identities.

Pure functions, no pyinfra: :mod:`.cluster` says which certificates a cluster needs, :mod:`.x509` makes and
checks them, :mod:`.store` keeps them in the PKI directory on the machine running pyinfra (where the CA keys
live) and :mod:`.kubeconfig` writes kubeconfigs. ``deploys/components/pki.py`` installs them on hosts.
"""

from spectra.pki.cluster import CAS, ClusterSpec, Member, leaf_specs
from spectra.pki.kubeconfig import kubeconfig, render
from spectra.pki.store import Pki, default_pki_dir, ensure
from spectra.pki.x509 import LeafSpec, PKIError

__all__ = [
    "CAS",
    "ClusterSpec",
    "LeafSpec",
    "Member",
    "PKIError",
    "Pki",
    "default_pki_dir",
    "ensure",
    "kubeconfig",
    "leaf_specs",
    "render",
]
