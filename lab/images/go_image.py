"""Addon images for the lab registry, built from their Go modules at the versions the addons pin.

No container registry answers here, so the lab builds each upstream image it needs (same reference, same
entrypoint path and user as upstream's) from the program's Go module, as one static binary in one layer,
and pushes it to the lab registry under the upstream path; containerd on the nodes uses that registry as a
mirror of the upstream one. What the lab image leaves out of upstream's is said by each image's ``notes``.

Cache: ``<cache>/images/<name>/<version>/`` (bin/, the image archive, build.json), rebuilt when the archive
is missing; every build shares the machine's one Go module and build cache (``go env GOMODCACHE GOCACHE``);
labs side by side share the cache under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.artifacts import ARCH, _go
from lab.config import LabConfig, LabError
from lab.images.build import docker_archive
from lab.registry import push_archive, upstream_to_mirror_path
from lab.shell import log


@dataclass(frozen=True)
class GoImage:
    name: str  # cache directory name
    reference: str  # the upstream image reference the manifests use
    module: str  # Go module path
    version: str  # module version ("v0.316.0")
    package: str  # main package inside the module ("cmd/prometheus", "" for the module root)
    entrypoint: str  # where upstream's image has the program ("/bin/prometheus")
    user: str = "65534:65534"
    tags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ("-s", "-w")
    exposed_ports: tuple[str, ...] = ()
    file_capabilities: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # build environment (GOEXPERIMENT, ...)
    # files the module's go:embed patterns need but its zip leaves out (built web UIs): the build then runs in a
    # copy of the module with a one-line placeholder at each path, as the main module (its go.sum pins all)
    placeholders: tuple[str, ...] = ()
    notes: str = ""  # what differs from upstream's image

    @property
    def import_path(self) -> str:
        return f"{self.module}/{self.package}" if self.package else self.module


def _module_copy(image: GoImage, work: Path) -> Path:
    """A writable copy of the module's source at ``work/src`` with the placeholder files added."""
    listed = subprocess.run(
        [_go(), "mod", "download", "-json", f"{image.module}@{image.version}"],
        env=dict(os.environ, GOWORK="off"), capture_output=True, text=True, cwd=work,
    )  # fmt: skip
    if listed.returncode != 0:
        raise LabError(f"go mod download {image.module}@{image.version} failed:\n{listed.stdout}{listed.stderr}")
    source = Path(json.loads(listed.stdout)["Dir"])
    copy = work / "src"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy)
    for directory, _, files in os.walk(copy):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(Path(directory) / name, 0o644)
    for relative in image.placeholders:
        target = copy / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("This build leaves the web UI out (its built assets are not in the Go module).\n")
    return copy


def go_install(image: GoImage, package: str, out_dir: Path) -> tuple[Path, float]:
    """``go install module/package@version`` static for linux/amd64 into ``out_dir``: (binary, seconds)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if image.placeholders:
        return _build_copy(image, package, out_dir)
    env = dict(os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=ARCH, GOBIN=str(out_dir), GOWORK="off", **image.env)
    target = f"{image.module}/{package}" if package else image.module
    command = [_go(), "install", "-trimpath", f"-ldflags={' '.join(image.ldflags)}"]
    if image.tags:
        command.append(f"-tags={','.join(image.tags)}")
    started = time.monotonic()
    result = subprocess.run(
        ["nice", "-n", "10", *command, f"{target}@{image.version}"],
        env=env,
        capture_output=True,
        text=True,
        cwd=out_dir,
    )
    if result.returncode != 0:
        raise LabError(f"go install {target}@{image.version} failed:\n{result.stderr.strip()[-3000:]}")
    seconds = round(time.monotonic() - started, 1)
    log(f"built {target}@{image.version} in {seconds:.0f} s")
    return out_dir / target.rstrip("/").split("/")[-1], seconds


def _build_copy(image: GoImage, package: str, out_dir: Path) -> tuple[Path, float]:
    copy = _module_copy(image, out_dir.parent)
    binary = out_dir / package.rstrip("/").split("/")[-1]
    env = dict(
        os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=ARCH, GOWORK="off", GOFLAGS="-mod=readonly", **image.env
    )
    command = [_go(), "build", "-trimpath", f"-ldflags={' '.join(image.ldflags)}", "-o", str(binary)]
    if image.tags:
        command.append(f"-tags={','.join(image.tags)}")
    started = time.monotonic()
    result = subprocess.run(["nice", "-n", "10", *command, f"./{package}"], env=env, capture_output=True, text=True,
                            cwd=copy)  # fmt: skip
    if result.returncode != 0:
        raise LabError(f"go build ./{package} of {image.module}@{image.version} failed:\n{result.stderr[-3000:]}")
    shutil.rmtree(copy)
    seconds = round(time.monotonic() - started, 1)
    log(f"built {image.module}/{package}@{image.version} (module copy) in {seconds:.0f} s")
    return binary, seconds


def cache_dir(config: LabConfig, image: GoImage) -> Path:
    return config.cache_dir / "images" / image.name / image.version


def _build(cache: Path, image: GoImage, archive: Path) -> dict[str, Any]:
    binary, seconds = go_install(image, image.package, cache / "bin")
    tmp = archive.with_name(archive.name + ".tmp")
    docker_archive(
        binary, image.reference, image.entrypoint, tmp, user=image.user,
        file_capabilities=image.file_capabilities, exposed_ports=image.exposed_ports,
    )  # fmt: skip
    data = tmp.read_bytes()
    record = {
        "reference": image.reference,
        "module": f"{image.import_path}@{image.version}",
        "tags": list(image.tags),
        "seconds": seconds,
        "go": subprocess.run([_go(), "version"], capture_output=True, text=True).stdout.strip(),
        "binary_bytes": binary.stat().st_size,
        "archive_bytes": len(data),
        "archive_sha256": hashlib.sha256(data).hexdigest(),
    }
    (cache / "build.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.rename(archive)
    return record


def image_archive(config: LabConfig, image: GoImage) -> Path:
    """The docker-archive of ``image`` from the cache, built first when it is missing."""
    cache = cache_dir(config, image)
    archive = cache / f"{image.name}-{image.version}-linux-{ARCH}.docker-archive.tar"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{image.version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            log(f"building {image.reference} from {image.import_path}@{image.version} (minutes the first time)")
            record = _build(cache, image, archive)
            log(f"{image.name}: image {record['archive_bytes'] / 1e6:.1f} MB, built in {record['seconds']:.0f} s")
    return archive


def build_record(config: LabConfig, image: GoImage) -> dict[str, Any]:
    """What the cached build recorded (reference, seconds, sizes), building it first when needed."""
    image_archive(config, image)
    return dict(json.loads((cache_dir(config, image) / "build.json").read_text()))


def publish(config: LabConfig, image: GoImage) -> dict[str, str]:
    """Build (or take from the cache) ``image`` and push it. Returns {reference: registry it mirrors}."""
    archive = image_archive(config, image)
    registry, path = upstream_to_mirror_path(image.reference)
    push_archive(config, archive, path)
    log(f"lab registry {config.gateway}:{config.registry_port}: {image.reference}")
    return {image.reference: registry}


def companion_binary(config: LabConfig, image: GoImage, package: str) -> Path:
    """Another program of the same module and version (promtool beside prometheus), cached beside the image."""
    cache = cache_dir(config, image)
    binary = cache / "bin" / package.rstrip("/").split("/")[-1]
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{image.version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            go_install(image, package, cache / "bin")
    return binary
