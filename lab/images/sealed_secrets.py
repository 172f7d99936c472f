"""The sealed-secrets controller for the lab registry, and kubeseal for the lab host, built from their Go module.

Upstream publishes ``docker.io/bitnami/sealed-secrets-controller:<x.y.z>``: the release tag without its ``v``
(the release workflow's ``IMAGE_TAG``; the chart's ``image.tag``), built by goreleaser from ``./cmd/controller``
with ``-X main.VERSION=<x.y.z>``. Its ``docker/controller.Dockerfile`` puts ``controller`` in
``/usr/local/bin/`` on distroless static and runs it as ``USER 1001``; so does the lab image. The Go module
declares its path as ``github.com/bitnami/sealed-secrets`` (the repository moved from ``bitnami-labs``), has no
replace directives, and ``go install <module>/cmd/controller@v<x.y.z>`` builds it as it is, with one change to
the build's environment: the module proxy here answers 403 to this path's version list, which ``go install
pkg@version`` reads for a deprecation notice, so the machine's module cache (whose list holds the version once it
is downloaded) answers when the proxy refuses (``GOPROXY=<proxy>|file://<GOMODCACHE>/cache/download``).

kubeseal (``cmd/kubeseal``, the same module and version) is a companion binary in the image's cache, for the
lab host: the lab tests seal with it, offline, from the PKI's certificate. What the lab image leaves out of
upstream's: distroless' CA bundle, /etc/passwd and time zones (the controller talks only to the apiserver,
with the ServiceAccount's CA).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lab.artifacts import _go
from lab.config import LabConfig, LabError
from lab.images.go_image import GoImage, build_record, companion_binary, publish

MODULE = "github.com/bitnami/sealed-secrets"
REPOSITORY = "docker.io/bitnami/sealed-secrets-controller"
_TAG = re.compile(rf"^{re.escape(REPOSITORY)}:(\d+\.\d+\.\d+)$")


def pinned_image() -> str:
    from deploys.components import sealed_secrets

    return str(sealed_secrets.DEFAULTS["sealed_secrets_image"])


def module_version(reference: str) -> str:
    """``docker.io/bitnami/sealed-secrets-controller:0.40.0`` -> ``v0.40.0`` (the tag is the version without v)."""
    match = _TAG.match(reference)
    if not match:
        raise LabError(f"{reference}: the lab builds {REPOSITORY}:<major>.<minor>.<patch> only")
    return f"v{match.group(1)}"


def go_proxy_env() -> dict[str, str]:
    """GOPROXY: the machine's first proxy, then its module cache for what that proxy refuses (any error, ``|``).
    Nothing when Go cannot say (the build then fails with Go's own message)."""
    try:
        found = subprocess.run([_go(), "env", "GOPROXY", "GOMODCACHE"], capture_output=True, text=True, check=True)
    except (OSError, LabError, subprocess.CalledProcessError):
        return {}
    proxy, cache = (found.stdout.splitlines() + ["", ""])[:2]
    first = re.split(r"[,|]", proxy)[0]
    if not first or first in ("off", "direct") or not cache:
        return {}
    return {"GOPROXY": f"{first}|file://{cache}/cache/download"}


def image(reference: str | None = None) -> GoImage:
    reference = reference or pinned_image()
    version = module_version(reference)
    return GoImage(
        name="sealed-secrets-controller",
        reference=reference,
        module=MODULE,
        version=version,
        package="cmd/controller",
        entrypoint="/usr/local/bin/controller",
        user="1001",  # upstream: USER 1001 (no such user in distroless' /etc/passwd: group 0)
        ldflags=("-s", "-w", f"-X main.VERSION={version.removeprefix('v')}"),  # as goreleaser's {{ .Version }}
        exposed_ports=("8080/tcp", "8081/tcp"),
        env=go_proxy_env(),
        notes="no CA bundle, passwd or zoneinfo from distroless",
    )


def kubeseal_path(config: LabConfig | None = None) -> Path:
    """kubeseal of the pinned version, built into the lab cache beside the controller when missing."""
    return companion_binary(config or LabConfig(nodes=[]), image(), "cmd/kubeseal")


def publish_image(config: LabConfig) -> dict[str, str]:
    """Build (or take from the cache) and push the controller; kubeseal is built with it for the lab tests."""
    published = publish(config, image())
    kubeseal_path(config)
    return published


def build_seconds(config: LabConfig) -> float:
    return float(build_record(config, image())["seconds"])
