"""Which addon images the lab builds: only those of addons the lab's converge turns on.

An image is built and pushed when its addon's switch (``<addon>_enabled``) is on for the lab: the switch's
default from its owner, overridden by a plain top-level ``<addon>_enabled = True/False`` in
``group_data/all.py`` or ``group_data/lab.py`` (read with ``ast``: the lab has no inventory yet when it builds
images). A switch set any other way (inventory host data, ``--data``) is not seen here: the image is then
built or left out by the files' answer, and a missing image shows as a pod that cannot pull it.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from lab.config import LabConfig
from lab.images import alertmanager, kube_router, metrics_server, prometheus, sealed_secrets, traefik, victorialogs

REPO = Path(__file__).resolve().parents[2]
GROUP_DATA = (REPO / "group_data" / "all.py", REPO / "group_data" / "lab.py")  # later files win

# switch -> the function that builds and pushes the addon's image(s)
IMAGES: dict[str, Callable[[LabConfig], dict[str, str]]] = {
    "prometheus_enabled": prometheus.publish_image,
    "alertmanager_enabled": alertmanager.publish_image,
    "metrics_server_enabled": metrics_server.publish_image,
    "victorialogs_enabled": victorialogs.publish_images,  # the store and its agent vlagent
    "kube_router_enabled": kube_router.publish_image,
    "sealed_secrets_enabled": sealed_secrets.publish_image,  # and kubeseal for the lab host
    "gateway_enabled": traefik.publish_image,  # and the CRDs' Go module zips on the mirror
}


def overrides(files: tuple[Path, ...] = GROUP_DATA) -> dict[str, bool]:
    """Top-level ``x_enabled = True/False`` assignments of the group data files, later files winning."""
    found: dict[str, bool] = {}
    for path in files:
        if not path.exists():
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.endswith("_enabled"):
                        found[target.id] = bool(node.value.value)
    return found


def enabled(switch: str, files: tuple[Path, ...] = GROUP_DATA) -> bool:
    from deploys.settings import owner

    known = owner(switch)
    default = bool(known.default) if known is not None else False
    return overrides(files).get(switch, default)


def publish_enabled(config: LabConfig) -> dict[str, str]:
    """Build (or take from the cache) and push the images of the enabled addons."""
    published: dict[str, str] = {}
    for switch, publish in IMAGES.items():
        if enabled(switch):
            published.update(publish(config))
    return published
