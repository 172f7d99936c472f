"""The directories behind the addons' node-local volumes (``local_storage``), on the nodes that hold them.

Runs on every host; a host makes the directories of the volumes placed on it (``<local_storage_dir>/
<namespace>/<claim>``, 2770, owned by the user and group the addon's pod runs as), nothing elsewhere. Never deletes
one: a volume that leaves the set keeps its data until an operator removes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, deploy

from deploys import addon
from deploys.component import Component
from deploys.components import local_storage
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.files import FileStates

DEFAULTS: dict[str, Any] = {
    # make the volumes' directories (False: an operator mounts a disk at each path before the addons run)
    "local_volume_dirs_enabled": True,
}


def here(settings: Mapping[str, Any]) -> list[addon.LocalVolume]:
    if not (settings["local_volume_dirs_enabled"] and settings["cluster_addons_enabled"]):
        return []
    if not settings["local_storage_enabled"]:
        return []
    try:
        wanted = addon.local_volumes(settings)
    except addon.AddonError as error:
        raise DeployError(f"{host.name}: node-local volumes: {error}") from None
    return [volume for volume in wanted if volume.node == host.name]


def paths(settings: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, addon.LocalVolume]]]:
    """(parent directories, (path, volume) of each volume here)."""
    volumes = [(local_storage.volume_path(settings, volume), volume) for volume in here(settings)]
    base = str(settings["local_storage_dir"]).rstrip("/")
    parents = sorted({base} | {path.rsplit("/", 1)[0] for path, _ in volumes})
    return parents, volumes


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(here(settings))


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    parents, volumes = paths(settings)
    return [(FileStates, managed.snapshot_files_kwargs([*parents, *(path for path, _ in volumes)]))]


@deploy("Node-local volume directories")
def local_volume_dirs() -> None:
    settings = Settings()
    parents, volumes = paths(settings)
    (files,) = prepared_facts(*fact_requests(settings))
    for parent in parents:
        managed.directory(name=f"Volume directory {parent}", path=parent, mode="0755", current=files)
    for path, volume in volumes:
        managed.directory(
            # 2770: what kubelet makes of a volume's root for the pod's fsGroup (group rwx, setgid); made so
            # up front, kubelet's OnRootMismatch policy leaves the data alone and this stays converged
            name=f"Volume {volume.namespace}/{volume.claim}", path=path, mode="2770",
            user=volume.user, group=volume.group, current=files,
        )  # fmt: skip


COMPONENT = Component(
    name="local_volume_dirs",
    defaults=DEFAULTS,
    deploy=local_volume_dirs,
    should_run=should_run,
    fact_requests=fact_requests,
)
