"""The lab's OCI registry: Debian's docker-registry on the lab bridge, a mirror of the upstream registries.

No container registry answers from the lab machines. The lab builds the images the cluster needs, pushes
them here under the upstream repository paths, and group_data/lab.py makes containerd on the nodes use this
registry as a mirror for those upstream names, so image references are the same in the lab and production.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab.config import LabConfig, LabError
from lab.images.build import build_binary, docker_archive
from lab.processes import cmdline, start_service
from lab.shell import log

REGISTRY_BINARY = "/usr/bin/docker-registry"

CONFIG_TEMPLATE = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}:{port}
"""


def registry_dir(config: LabConfig) -> Path:
    return config.state_dir / "registry"


def registry_address(config: LabConfig) -> str:
    return f"{config.gateway}:{config.registry_port}"


def is_registry_process(config: LabConfig, pid: int | None) -> bool:
    argv = cmdline(pid)
    return (
        bool(argv)
        and argv[0].endswith(b"docker-registry")
        and (str(registry_dir(config) / "config.yml").encode() in argv)
    )


def start(config: LabConfig) -> int:
    if not Path(REGISTRY_BINARY).exists():
        raise LabError("the lab registry needs Debian's docker-registry: apt-get install -y docker-registry")
    directory = registry_dir(config)
    (directory / "storage").mkdir(parents=True, exist_ok=True)
    config_file = directory / "config.yml"
    config_file.write_text(
        CONFIG_TEMPLATE.format(storage=directory / "storage", address=config.gateway, port=config.registry_port)
    )
    return start_service(
        [REGISTRY_BINARY, "serve", str(config_file)],
        config.state_dir / "registry.log",
        f"http://{registry_address(config)}/v2/",
        f"the lab registry on {registry_address(config)}",
    )


def push_archive(config: LabConfig, archive: Path, repository: str) -> None:
    """Push a docker-archive to `<lab registry>/<repository>` (e.g. `pause:3.10`)."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise LabError("pushing lab images needs skopeo: apt-get install -y skopeo")
    result = subprocess.run(
        [
            skopeo,
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"docker-archive:{archive}",
            f"docker://{registry_address(config)}/{repository}",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LabError(f"skopeo could not push {repository} to the lab registry:\n{result.stderr.strip()}")


def upstream_to_mirror_path(reference: str) -> tuple[str, str]:
    """`registry.k8s.io/pause:3.10` -> (`registry.k8s.io`, `pause:3.10`): where a mirror serves it.

    A containerd mirror receives the repository path without the registry host, so an image is pushed to
    the lab registry under exactly that path."""
    registry, _, path = reference.partition("/")
    # Like Docker: the first component is a registry only if it looks like a host name.
    if not path or ("." not in registry and ":" not in registry and registry != "localhost"):
        registry, path = "docker.io", reference
    if registry == "docker.io" and "/" not in path.split(":")[0]:
        path = f"library/{path}"
    return registry, path


def publish_images(config: LabConfig, sandbox_image: str) -> dict[str, str]:
    """Build the lab's images and push them. Returns {upstream reference: registry it mirrors}."""
    build_dir = config.cache_dir / "images"
    images = {
        sandbox_image: ("pause", "/pause"),
        "docker.io/spectra/hello:lab": ("hello", "/hello"),
    }
    published = {}
    for reference, (program, entrypoint) in images.items():
        binary = build_binary(program, build_dir)
        archive = docker_archive(binary, reference, entrypoint, build_dir / f"{program}.tar")
        registry, path = upstream_to_mirror_path(reference)
        push_archive(config, archive, path)
        published[reference] = registry
    log(f"lab registry {registry_address(config)}: {', '.join(sorted(published))}")
    return published


def pinned_sandbox_image() -> str:
    from deploys.components import container_runtime

    return str(container_runtime.DEFAULTS["containerd_sandbox_image"])
