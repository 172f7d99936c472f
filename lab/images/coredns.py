"""CoreDNS for the lab registry: built from its Go module at the version the addon pins, as upstream's image.

No container registry answers here, so the lab builds ``registry.k8s.io/coredns/coredns:<tag>`` itself:
``go install github.com/coredns/coredns@<tag>`` (its main package, with the default plugin set that
includes ``kubernetes``), static, then one layer holding ``/coredns``, run as 65532:65532 like upstream's
distroless ``nonroot`` image, with ``cap_net_bind_service=+ep`` on the binary as upstream's Dockerfile
sets it (so the non-root process can bind port 53 where the pod adds NET_BIND_SERVICE). Not in the lab
image: upstream's /etc/ssl/certs (only ``forward . tls://...`` needs it).

Cache: ``<cache>/coredns/<version>/`` (bin/coredns, the image archive, build.json), rebuilt when the
archive is missing; labs side by side share it under a lock. Every ``up`` pushes the archive to the lab
registry under the upstream path, which containerd on the nodes uses as a mirror of registry.k8s.io.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from lab.artifacts import _go, go_install
from lab.config import LabConfig, LabError
from lab.images.build import docker_archive
from lab.registry import push_archive, upstream_to_mirror_path
from lab.shell import log

MODULE = "github.com/coredns/coredns"
# Upstream's Makefile sets only the commit; the module proxy does not give it, so the lab build says
# where it came from (`coredns -version` prints it after the Go version).
GIT_COMMIT = "spectra-lab-module-proxy-build"
USER = "65532:65532"  # distroless nonroot, as in upstream's image
FILE_CAPABILITIES = ("CAP_NET_BIND_SERVICE",)
EXPOSED_PORTS = ("53/tcp", "53/udp")
_TAG_RE = re.compile(r"^v(\d+\.\d+\.\d+)$")


def pinned_image() -> str:
    """The image reference the addon manifest uses by default: the lab builds exactly this."""
    from deploys.components import coredns

    return str(coredns.DEFAULTS["coredns_image"])


def version_of(reference: str) -> str:
    """`registry.k8s.io/coredns/coredns:v1.14.2` -> `1.14.2` (the Go module's version without its `v`)."""
    registry, path = upstream_to_mirror_path(reference)
    repository, tagged, tag = path.rpartition(":")
    if not tagged:
        repository, tag = path, ""
    if f"{registry}/{repository}" != "registry.k8s.io/coredns/coredns":
        raise LabError(f"{reference}: the lab builds registry.k8s.io/coredns/coredns:<tag> only")
    match = _TAG_RE.match(tag)
    if not match:
        raise LabError(f"{reference}: the tag must be a CoreDNS release such as v1.14.2 (the module version)")
    return match.group(1)


def ldflags() -> str:
    return f"-s -w -X {MODULE}/coremain.GitCommit={GIT_COMMIT}"


def cache_dir(config: LabConfig, version: str) -> Path:
    return config.cache_dir / "coredns" / version


def archive_name(version: str) -> str:
    return f"coredns-v{version}-linux-amd64.docker-archive.tar"


def _build(cache: Path, version: str, reference: str, archive: Path) -> dict[str, Any]:
    started = time.monotonic()
    binary = go_install(MODULE, f"v{version}", cache / "bin", ldflags())
    seconds = round(time.monotonic() - started, 1)
    tmp = archive.with_name(archive.name + ".tmp")
    docker_archive(
        binary, reference, "/coredns", tmp, user=USER, file_capabilities=FILE_CAPABILITIES, exposed_ports=EXPOSED_PORTS
    )
    data = tmp.read_bytes()
    record = {
        "reference": reference,
        "module": f"{MODULE}@v{version}",
        "seconds": seconds,
        "go": subprocess.run([_go(), "version"], capture_output=True, text=True).stdout.strip(),
        "ldflags": ldflags(),
        "binary_bytes": binary.stat().st_size,
        "archive_bytes": len(data),
        "archive_sha256": hashlib.sha256(data).hexdigest(),
    }
    (cache / "build.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.rename(archive)
    return record


def image_archive(config: LabConfig, reference: str) -> Path:
    """The docker-archive of ``reference`` from the cache, built first when it is missing."""
    version = version_of(reference)
    cache = cache_dir(config, version)
    archive = cache / archive_name(version)
    cache.mkdir(parents=True, exist_ok=True)
    # Labs side by side share the cache: one builds, the others wait for its archive.
    with open(cache.parent / f"{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            log(f"building CoreDNS {version} from its Go module (a few minutes the first time)")
            record = _build(cache, version, reference, archive)
            log(f"CoreDNS {version}: image {record['archive_bytes'] / 1e6:.1f} MB, built in {record['seconds']:.0f} s")
    return archive


def publish(config: LabConfig, reference: str | None = None) -> dict[str, str]:
    """Build (or take from the cache) the CoreDNS image and push it. Returns {reference: registry it mirrors}."""
    reference = reference or pinned_image()
    archive = image_archive(config, reference)
    registry, path = upstream_to_mirror_path(reference)
    push_archive(config, archive, path)
    log(f"lab registry {config.gateway}:{config.registry_port}: {reference}")
    return {reference: registry}
