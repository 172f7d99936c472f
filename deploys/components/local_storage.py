"""Node-local persistent volumes for the addons' data (Prometheus TSDB, the log store).

Why node-local PersistentVolumes and not a provisioner: bare metal and the lab have no cloud disks, and the
data these addons keep can be rebuilt (metrics and logs age out by retention). A directory on one chosen node,
made by the toolkit (``local_volume_dirs``, owned by the user the pod runs as), survives a pod restart and a
node reboot; the PV (``local`` volume, node affinity to that node, ``Retain``) is pre-bound to the addon's
claim, so the scheduler puts the pod where its data is. A cloud deploy that wants movable disks sets the
addon's storage class to its CSI class instead.

This addon set holds the StorageClass (no provisioner, ``WaitForFirstConsumer``) and one PV per volume that
an enabled addon declares (``Addon.volumes``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from deploys import addon

TEMPLATE = "addons/local-storage/storage.yaml.j2"

DEFAULTS: dict[str, Any] = {
    "local_storage_enabled": True,  # the StorageClass and the addons' node-local volumes
    "local_storage_dir": "/var/lib/spectra/volumes",  # on the nodes: <dir>/<namespace>/<claim>
    "local_storage_class": "spectra-local",  # the StorageClass name the addons' claims use
    "local_storage_default_class": True,  # mark it the cluster's default StorageClass
}

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check(settings: Mapping[str, Any]) -> list[str]:
    problems = []
    if not str(settings["local_storage_dir"]).startswith("/"):
        problems.append(f"local_storage_dir={settings['local_storage_dir']!r}: an absolute path")
    if not _NAME.match(str(settings["local_storage_class"])):
        problems.append(f"local_storage_class={settings['local_storage_class']!r}: a DNS label such as spectra-local")
    return problems


def volume_path(settings: Mapping[str, Any], volume: addon.LocalVolume) -> str:
    return f"{str(settings['local_storage_dir']).rstrip('/')}/{volume.namespace}/{volume.claim}"


def volume_name(volume: addon.LocalVolume) -> str:
    return f"spectra-{volume.namespace}-{volume.claim}"


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "storage_class": settings["local_storage_class"],
        "default_class": bool(settings["local_storage_default_class"]),
        "volumes": [
            {"name": volume_name(v), "path": volume_path(settings, v), "node": v.node, "capacity": v.capacity,
             "namespace": v.namespace, "claim": v.claim}
            for v in addon.local_volumes(settings)
        ],
    }  # fmt: skip


ADDON = addon.Addon(name="local-storage", defaults=DEFAULTS, templates=(TEMPLATE,), context=context, checks=(check,))
COMPONENT = addon.addon_component(ADDON)
