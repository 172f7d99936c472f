"""Build tiny single-binary container images from Go sources, as docker-archive tars `ctr` can import."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

from lab.config import LabError

IMAGES_DIR = Path(__file__).resolve().parent


# Capability numbers (linux/capability.h) of the file capabilities an image may give its entrypoint.
CAPABILITIES = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_NET_ADMIN": 12}


def file_capabilities_xattr(names: list[str] | tuple[str, ...]) -> bytes:
    """The ``security.capability`` value (``setcap NAMES=+ep``): struct vfs_cap_data, revision 2.

    Permitted and effective: a non-root process that runs the file gets the capabilities, as far as its
    bounding set (the container's ``capabilities.add``) allows."""
    permitted = 0
    for name in names:
        if name not in CAPABILITIES:
            raise LabError(f"unknown capability {name!r}; known: {', '.join(sorted(CAPABILITIES))}")
        permitted |= 1 << CAPABILITIES[name]
    revision_2_effective = 0x02000000 | 0x000001
    return struct.pack("<IIIII", revision_2_effective, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


def _tar_bytes(members: dict[str, tuple[bytes, int]], xattrs: dict[str, dict[str, bytes]] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0  # reproducible layers: same source, same digest
            # Extended attributes as GNU tar and Go's archive/tar (containerd's unpacker) write them.
            # surrogateescape: tarfile writes the value's bytes back unchanged (hdrcharset=BINARY if needed).
            attributes = (xattrs or {}).get(name, {})
            pax = {f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape") for key, value in attributes.items()}
            if pax:
                info.pax_headers = pax
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_binary(program: str, out_dir: Path, goarch: str = "amd64") -> Path:
    source = IMAGES_DIR / program
    if not (source / "main.go").exists():
        raise LabError(f"no image source at {source}")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / f"{program}-{goarch}"
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise LabError("Go is needed to build the lab's images: apt-get install golang-go")
    env = dict(os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=goarch)
    result = subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LabError(f"go build of {program} failed:\n{result.stderr.strip()}")
    return binary


def docker_archive(
    binary: Path,
    reference: str,
    entrypoint: str,
    dest: Path,
    *,
    user: str | None = None,
    file_capabilities: tuple[str, ...] = (),
    exposed_ports: tuple[str, ...] = (),
) -> Path:
    """Write a docker-archive (the `docker save` layout) holding one layer with `binary` at `entrypoint`.

    `user` ("65532:65532") is the image's USER; `file_capabilities` are set on the binary as `setcap
    ...=+ep` would (so a non-root entrypoint can, e.g., bind port 53); `exposed_ports` ("53/udp")."""
    name = entrypoint.lstrip("/")
    xattrs = {name: {"security.capability": file_capabilities_xattr(file_capabilities)}} if file_capabilities else {}
    layer = _tar_bytes({name: (binary.read_bytes(), 0o755)}, xattrs)
    layer_digest = hashlib.sha256(layer).hexdigest()
    image_config: dict[str, object] = {"Entrypoint": [entrypoint], "Env": ["PATH=/"]}
    if user is not None:
        image_config["User"] = user
        image_config["WorkingDir"] = "/"
    if exposed_ports:
        image_config["ExposedPorts"] = {port: {} for port in exposed_ports}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": "spectra lab image builder"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": [f"{layer_digest}/layer.tar"]}]
    archive = _tar_bytes(
        {
            f"{layer_digest}/layer.tar": (layer, 0o644),
            config_name: (config_bytes, 0o644),
            "manifest.json": (json.dumps(manifest).encode(), 0o644),
        }
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(archive)
    return dest
