"""Where the cluster PKI's files are on the hosts: certificates and keys under ``kubernetes_pki_dir``,
kubeconfigs under ``kubernetes_config_dir``, with kubeadm's file names.

``deploys/components/pki.py`` installs them there; every component that reads one (etcd, the control plane,
kubelet, kube-proxy, the balancer, the components that use ``admin.conf``) derives its path here instead of
keeping a copy of it. ``settings``: any mapping holding the two cluster settings (``deploys.settings.Settings``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from spectra.pki.kubeconfig import kubeconfig_specs

# kubeconfig name -> its file under kubernetes_config_dir (admin -> admin.conf, kubelet -> kubelet.conf, ...)
KUBECONFIG_FILES: dict[str, str] = {kind: spec.file for kind, spec in kubeconfig_specs("node").items()}


def pki_file(settings: Mapping[str, Any], relative: str) -> str:
    """A certificate or key the PKI installs: ``pki_file(settings, "etcd/ca.crt")``."""
    return posixpath.join(str(settings["kubernetes_pki_dir"]), relative)


def kubeconfig_file(settings: Mapping[str, Any], kind: str) -> str:
    """A kubeconfig the PKI installs, by name (``admin``, ``controller-manager``, ``kubelet``, ...)."""
    return posixpath.join(str(settings["kubernetes_config_dir"]), KUBECONFIG_FILES[kind])
