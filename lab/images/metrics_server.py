"""metrics-server for the lab registry, built from its Go module at the version the addon pins.

``registry.k8s.io/metrics-server/metrics-server:v<x.y.z>`` is the Go module ``sigs.k8s.io/metrics-server`` at
the same version, main package ``cmd/metrics-server``. Like upstream's image (its Dockerfile: distroless
static, ``COPY ... /metrics-server``, ``USER 65534``) the lab image holds ``/metrics-server`` run as 65534;
the version is stamped as upstream's Makefile does (``k8s.io/client-go/pkg/version``: ``gitVersion`` and
``gitCommit``; the build date is left at client-go's fixed default so the build is reproducible). Not in the
lab image: distroless' CA bundle and /etc/passwd (the addon passes every CA it needs as a file).
"""

from __future__ import annotations

import re

from lab.config import LabConfig, LabError
from lab.images.go_image import GoImage, build_record, publish

MODULE = "sigs.k8s.io/metrics-server"
REPOSITORY = "registry.k8s.io/metrics-server/metrics-server"
_TAG = re.compile(rf"^{re.escape(REPOSITORY)}:(v\d+\.\d+\.\d+)$")
VERSION_PACKAGE = "k8s.io/client-go/pkg/version"  # where upstream's Makefile stamps the version


def pinned_image() -> str:
    from deploys.components import metrics_server

    return str(metrics_server.DEFAULTS["metrics_server_image"])


def module_version(reference: str) -> str:
    """``registry.k8s.io/metrics-server/metrics-server:v0.8.0`` -> ``v0.8.0`` (the tag is the module version)."""
    match = _TAG.match(reference)
    if not match:
        raise LabError(f"{reference}: the lab builds {REPOSITORY}:v<major>.<minor>.<patch> only")
    return match.group(1)


def image(reference: str | None = None) -> GoImage:
    reference = reference or pinned_image()
    version = module_version(reference)
    return GoImage(
        name="metrics-server",
        reference=reference,
        module=MODULE,
        version=version,
        package="cmd/metrics-server",
        entrypoint="/metrics-server",
        user="65534:65534",  # upstream: USER 65534, nobody:nobody in distroless' /etc/passwd
        ldflags=(
            "-s",
            "-w",
            f"-X {VERSION_PACKAGE}.gitVersion={version}",
            f"-X {VERSION_PACKAGE}.gitCommit=spectra-lab-module-proxy-build",
        ),
        exposed_ports=("10250/tcp",),
    )


def publish_image(config: LabConfig) -> dict[str, str]:
    return publish(config, image())


def build_seconds(config: LabConfig) -> float:
    return float(build_record(config, image())["seconds"])
