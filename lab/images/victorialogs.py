"""VictoriaLogs and its collector vlagent for the lab registry, built from their Go module.

Upstream publishes both from ``github.com/VictoriaMetrics/VictoriaLogs`` (``make publish``): the image tag is
the release's git tag (``docker.io/victoriametrics/victoria-logs:v1.52.1``, ``.../vlagent:v1.52.1``), the
program sits at ``/victoria-logs-prod`` and ``/vlagent-prod`` on ``gcr.io/distroless/static`` (which runs as
root: the addon's pods choose their user). The module has no replace directives, so ``go install
<module>/app/<program>@<version>`` builds each one as it is.

What the lab image leaves out of upstream's: distroless' CA bundle, /etc/passwd and time zones (the addon
talks plain HTTP inside the cluster and logs in UTC); the amd64 release links the C zstd library (cgo), the
lab build is the pure-Go one (upstream's ``*-pure`` variant: same formats, somewhat slower compression). The
web UI is compiled into victoria-logs from the module (``app/vlselect/vmui``), so it is there.
"""

from __future__ import annotations

import re

from lab.config import LabConfig, LabError
from lab.images.go_image import GoImage, build_record, publish

MODULE = "github.com/VictoriaMetrics/VictoriaLogs"
# upstream stamps this (lib/buildinfo of the VictoriaMetrics module); `-version` and the
# vm_app_version metric print it
BUILDINFO = "github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version"
_TAG = re.compile(r"^docker\.io/victoriametrics/(victoria-logs|vlagent):(v\d+\.\d+\.\d+)$")


def pinned(key: str) -> str:
    """The image reference a setting's owner pins (the store's module or the agent's)."""
    from deploys.settings import owner

    known = owner(key)
    if known is None:
        raise LabError(f"no addon declares {key}")
    return str(known.default)


def module_version(reference: str, program: str) -> str:
    """``docker.io/victoriametrics/vlagent:v1.52.1`` -> ``v1.52.1`` (the tag is the module version)."""
    match = _TAG.match(reference)
    if not match or match.group(1) != program:
        raise LabError(f"{reference}: the lab builds docker.io/victoriametrics/{program}:v<x.y.z> only")
    return match.group(2)


def image(program: str, reference: str) -> GoImage:
    version = module_version(reference, program)
    return GoImage(
        name=program,
        reference=reference,
        module=MODULE,
        version=version,
        package=f"app/{program}",
        entrypoint=f"/{program}-prod",
        user="0:0",  # as distroless/static; the manifests set runAsUser
        # as upstream's release stamp (<app>-<date>-tags-<tag>-0-g<commit>), with no date or commit to give
        ldflags=("-s", "-w", f"-X {BUILDINFO}={program}-spectra-lab-tags-{version}-0-gmoduleproxy"),
        exposed_ports=("9428/tcp",) if program == "victoria-logs" else ("9429/tcp",),
        notes="pure-Go build (no cgo zstd); no CA bundle, passwd or zoneinfo from distroless",
    )


STORE = image("victoria-logs", "docker.io/victoriametrics/victoria-logs:v1.52.1")
AGENT = image("vlagent", "docker.io/victoriametrics/vlagent:v1.52.1")


def store_image() -> GoImage:
    """The store image the addon pins (``victorialogs_image``)."""
    return image("victoria-logs", pinned("victorialogs_image"))


def agent_image() -> GoImage:
    """The collector image the addon pins (``victorialogs_agent_image``)."""
    return image("vlagent", pinned("victorialogs_agent_image"))


def publish_images(config: LabConfig) -> dict[str, str]:
    """Build (or take from the cache) both pinned images and push them to the lab registry."""
    return {**publish(config, store_image()), **publish(config, agent_image())}


def build_seconds(config: LabConfig) -> dict[str, float]:
    return {one.name: float(build_record(config, one)["seconds"]) for one in (store_image(), agent_image())}
