"""Alertmanager for the lab registry, built from its Go module at the version the addon pins.

``quay.io/prometheus/alertmanager:v0.35.0`` is ``github.com/prometheus/alertmanager`` at v0.35.0. The module's
zip leaves out the built web UI its ``ui/web.go`` embeds (``ui/app/dist``), so the lab builds in a copy of the
module with a placeholder page there (``GoImage.placeholders``): the HTTP API (v2), which the tests and
Prometheus use, is all there; the UI is not. ``/bin/alertmanager`` as nobody, like upstream's image; amtool and
the default configuration of upstream's image are left out (the addon mounts its own).
"""

from __future__ import annotations

import re

from lab.config import LabConfig, LabError
from lab.images.go_image import GoImage, publish

MODULE = "github.com/prometheus/alertmanager"
_TAG = re.compile(r"^quay\.io/prometheus/alertmanager:(v\d+\.\d+\.\d+)$")


def pinned_image() -> str:
    from deploys.components import alertmanager

    return str(alertmanager.DEFAULTS["alertmanager_image"])


def image(reference: str | None = None) -> GoImage:
    reference = reference or pinned_image()
    match = _TAG.match(reference)
    if not match:
        raise LabError(f"{reference}: the lab builds quay.io/prometheus/alertmanager:v<x.y.z> only")
    version = match.group(1)
    stamp = "github.com/prometheus/common/version"
    return GoImage(
        name="alertmanager",
        reference=reference,
        module=MODULE,
        version=version,
        package="cmd/alertmanager",
        entrypoint="/bin/alertmanager",
        ldflags=(
            "-s",
            "-w",
            f"-X {stamp}.Version={version.lstrip('v')}",
            f"-X {stamp}.Revision=spectra-lab-module-proxy-build",
            f"-X {stamp}.Branch=HEAD",
        ),  # fmt: skip
        exposed_ports=("9093/tcp",),
        placeholders=("ui/app/dist/elm/index.html", "ui/app/dist/mantine/index.html"),
    )


def publish_image(config: LabConfig) -> dict[str, str]:
    return publish(config, image())
