"""Traefik for the lab registry, built from its Go module at the version the gateway addon pins.

The reference is the Docker official image ``docker.io/library/traefik:v<x.y.z>`` (what Traefik's own Helm
chart runs: ``docker.io/traefik:<tag>``). The module's own ``Dockerfile`` (``COPY ... /traefik``) is the one
for ``docker.io/traefik/traefik`` (experimental/canary builds), not for the releases users pull. The official
image (traefik/traefik-library-image) unpacks the release binary into ``/usr/local/bin/traefik`` on Alpine,
runs as root (no ``USER``) and starts ``/entrypoint.sh``, which runs ``traefik "$@"`` when the first argument
is a flag. The addon passes only flags (``args``, no ``command``), so the lab image, whose entrypoint is the
binary itself, starts the same program with the same arguments.

Build: as upstream's Makefile and goreleaser do, ``go build ./cmd/traefik`` with ``-s -w`` and the version in
``github.com/traefik/traefik/v3/pkg/version.{Version,Codename,BuildDate}``; the build date is a fixed string so
the build is reproducible. The module has ``replace`` directives, so ``go install pkg@version`` refuses it: it
is built as the main module from a copy (``placeholders``). Its ``webui/embed.go`` embeds ``webui/static``;
the zip holds only a README there (the dashboard is built with yarn), so a placeholder ``index.html`` is added
and the dashboard is empty. Not in the lab image: Alpine, its CA bundle and time zones, ``/entrypoint.sh``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from lab.artifacts import _go
from lab.config import LabConfig, LabError
from lab.images.go_image import GoImage, build_record, publish
from lab.images.sealed_secrets import go_proxy_env
from lab.mirror import mirror_root

MODULE = "github.com/traefik/traefik/v3"
REPOSITORY = "docker.io/library/traefik"
_TAG = re.compile(rf"^{re.escape(REPOSITORY)}:(v3\.\d+\.\d+)$")
VERSION_PACKAGE = "github.com/traefik/traefik/v3/pkg/version"  # where the Makefile and goreleaser stamp it
CODENAME = "ramequin"  # the release workflow's CODENAME (.github/workflows/release.yaml)
PLACEHOLDERS = ("webui/static/index.html",)  # webui/embed.go: //go:embed static


def pinned_image() -> str:
    """The reference the gateway addon pins (its ``gateway_image``)."""
    gateway = importlib.import_module("deploys.components.gateway")
    return str(gateway.DEFAULTS["gateway_image"])


def module_version(reference: str) -> str:
    """``docker.io/library/traefik:v3.6.12`` -> ``v3.6.12`` (the tag is the module version of ``/v3``)."""
    match = _TAG.match(reference)
    if not match:
        raise LabError(f"{reference}: the lab builds {REPOSITORY}:v3.<minor>.<patch> only")
    return match.group(1)


def image(reference: str | None = None) -> GoImage:
    reference = reference or pinned_image()
    version = module_version(reference)
    return GoImage(
        name="traefik",
        reference=reference,
        module=MODULE,
        version=version,
        package="cmd/traefik",
        entrypoint="/usr/local/bin/traefik",
        user="",  # upstream sets no USER (root); the addon runs it as root with NET_BIND_SERVICE alone
        ldflags=(
            "-s",
            "-w",
            f"-X {VERSION_PACKAGE}.Version={version.removeprefix('v')}",  # goreleaser's {{.Version}}
            f"-X {VERSION_PACKAGE}.Codename={CODENAME}",
            f"-X {VERSION_PACKAGE}.BuildDate=spectra-lab-module-build",
        ),
        exposed_ports=("80/tcp",),
        env=go_proxy_env(),
        placeholders=PLACEHOLDERS,
        notes="no Alpine, CA bundle, zoneinfo or /entrypoint.sh; empty dashboard",
    )


def publish_modules(config: LabConfig) -> list[str]:
    """The Go module zips the gateway addon reads its CRDs out of, on the lab mirror in the module proxy's
    layout (``<mirror>/goproxy/<module>/@v/<version>.zip``): taken from the machine's module proxy with
    ``go mod download`` (into the shared module cache), as production takes them from proxy.golang.org."""
    gateway = importlib.import_module("deploys.components.gateway")
    go_modules = importlib.import_module("spectra.go_modules")
    settings = gateway.DEFAULTS
    wanted = [(gateway.GATEWAY_API_MODULE, str(settings["gateway_api_version"])),
              (gateway.TRAEFIK_MODULE, gateway.traefik_version(settings))]  # fmt: skip
    published = []
    for module, version in wanted:
        found = subprocess.run([_go(), "mod", "download", "-json", f"{module}@{version}"], capture_output=True,
                               text=True, env={**os.environ, **go_proxy_env(), "GOFLAGS": "-mod=mod"},
                               cwd=config.cache_dir)  # fmt: skip
        if found.returncode != 0:
            raise LabError(f"go mod download {module}@{version}: {found.stdout}{found.stderr}")
        source = Path(json.loads(found.stdout)["Zip"])
        target = mirror_root(config) / "goproxy" / go_modules.escaped(module) / "@v" / f"{version}.zip"
        if not target.is_file() or target.stat().st_size != source.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target.with_suffix(".tmp"))
            target.with_suffix(".tmp").rename(target)
        published.append(f"{module}@{version}")
    return published


def publish_image(config: LabConfig) -> dict[str, str]:
    publish_modules(config)
    return publish(config, image())


def build_seconds(config: LabConfig) -> float:
    return float(build_record(config, image())["seconds"])
