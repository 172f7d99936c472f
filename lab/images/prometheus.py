"""Prometheus for the lab registry (and promtool for the rule tests), built from its Go module.

``quay.io/prometheus/prometheus:v3.<minor>.<patch>`` is the Go module ``github.com/prometheus/prometheus``
at ``v0.3<minor>.<patch>`` (Prometheus 3.16.0 is v0.316.0). The lab image holds ``/bin/prometheus`` (as
upstream's) running as nobody (65534), built with Kubernetes service discovery only
(``remove_all_sd,enable_kubernetes_sd``: the addon's configuration uses that and static targets) and without
the web UI (the module does not ship its assets; the HTTP API, which the tests use, is all there). Upstream's
image also carries promtool, a default configuration and the console templates; the addon mounts its own
configuration.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab.config import LabConfig, LabError
from lab.images.go_image import GoImage, build_record, companion_binary, publish

MODULE = "github.com/prometheus/prometheus"
_TAG = re.compile(r"^quay\.io/prometheus/prometheus:v3\.(\d+)\.(\d+)$")


def pinned_image() -> str:
    from deploys.components import prometheus

    return str(prometheus.DEFAULTS["prometheus_image"])


def module_version(reference: str) -> str:
    """``quay.io/prometheus/prometheus:v3.16.0`` -> ``v0.316.0``."""
    match = _TAG.match(reference)
    if not match:
        raise LabError(f"{reference}: the lab builds quay.io/prometheus/prometheus:v3.<minor>.<patch> only")
    minor, patch = int(match.group(1)), int(match.group(2))
    return f"v0.3{minor:02d}.{patch}"


def image(reference: str | None = None) -> GoImage:
    reference = reference or pinned_image()
    version = module_version(reference)
    release = reference.rpartition(":v")[2]
    stamp = "github.com/prometheus/common/version"
    return GoImage(
        name="prometheus",
        reference=reference,
        module=MODULE,
        version=version,
        package="cmd/prometheus",
        entrypoint="/bin/prometheus",
        tags=("remove_all_sd", "enable_kubernetes_sd"),
        ldflags=(
            "-s",
            "-w",
            f"-X {stamp}.Version={release}",
            f"-X {stamp}.Revision=spectra-lab-module-proxy-build",
            f"-X {stamp}.Branch=HEAD",
            f"-X {stamp}.BuildUser=spectra-lab",
        ),  # fmt: skip
        exposed_ports=("9090/tcp",),
    )


def publish_image(config: LabConfig) -> dict[str, str]:
    return publish(config, image())


def promtool_path(config: LabConfig | None = None) -> Path:
    """promtool of the pinned Prometheus version, built into the lab cache when missing."""
    return companion_binary(config or LabConfig(nodes=[]), image(), "cmd/promtool")


def build_seconds(config: LabConfig) -> float:
    return float(build_record(config, image())["seconds"])
