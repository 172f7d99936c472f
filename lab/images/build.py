"""Build small container images (a Go binary, optionally over a root filesystem) as docker-archive tars for `ctr`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
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


def _tar_bytes(
    members: dict[str, tuple[bytes, int]],
    xattrs: dict[str, dict[str, bytes]] | None = None,
    links: dict[str, str] | None = None,
    directories: dict[str, int] | None = None,
) -> bytes:
    """A reproducible tar: regular files (data, mode), symlinks (name -> target), directories (name -> mode)."""
    entries: dict[str, tuple[bytes, int, str | None, bool]] = {n: (d, m, None, False) for n, (d, m) in members.items()}
    entries.update({name: (b"", 0o777, target, False) for name, target in (links or {}).items()})
    entries.update({name: (b"", mode, None, True) for name, mode in (directories or {}).items()})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode, target, directory) in sorted(entries.items()):
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 0  # reproducible layers: same source, same digest
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
            elif directory:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            # Extended attributes as GNU tar and Go's archive/tar (containerd's unpacker) write them.
            # surrogateescape: tarfile writes the value's bytes back unchanged (hdrcharset=BINARY if needed).
            attributes = (xattrs or {}).get(name, {})
            pax = {f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape") for key, value in attributes.items()}
            if pax:
                info.pax_headers = pax
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def tree_members(root: Path) -> tuple[dict[str, tuple[bytes, int]], dict[str, str], dict[str, int]]:
    """The files, symlinks and directories under ``root`` as layer members (names relative to it, modes kept)."""
    files: dict[str, tuple[bytes, int]] = {}
    links: dict[str, str] = {}
    directories: dict[str, int] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            links[name] = os.readlink(path)
        elif stat.S_ISDIR(info.st_mode):
            directories[name] = stat.S_IMODE(info.st_mode)
        elif stat.S_ISREG(info.st_mode):
            files[name] = (path.read_bytes(), stat.S_IMODE(info.st_mode))
        else:
            raise LabError(f"{path}: only files, directories and symlinks can go into a layer")
    return files, links, directories


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
    tree: Path | None = None,
    env: tuple[str, ...] = ("PATH=/",),
    working_dir: str | None = None,
) -> Path:
    """Write a docker-archive (the `docker save` layout) holding one layer with `binary` at `entrypoint`.

    `user` ("65532:65532") is the image's USER; `file_capabilities` are set on the binary as `setcap
    ...=+ep` would (so a non-root entrypoint can, e.g., bind port 53); `exposed_ports` ("53/udp").
    `tree` is a root filesystem directory that goes into the same layer under the binary (with a
    directory entry for every parent, so the layer unpacks by itself); `env` the image's environment;
    `working_dir` its WORKDIR (default: "/" when a user is set, none otherwise)."""
    name = entrypoint.lstrip("/")
    xattrs = {name: {"security.capability": file_capabilities_xattr(file_capabilities)}} if file_capabilities else {}
    if tree is None:
        layer = _tar_bytes({name: (binary.read_bytes(), 0o755)}, xattrs)
    else:
        files, links, directories = tree_members(tree)
        files[name] = (binary.read_bytes(), 0o755)
        for member in [*files, *links, *directories]:
            parent = Path(member).parent
            while parent != Path("."):
                directories.setdefault(parent.as_posix(), 0o755)
                parent = parent.parent
        layer = _tar_bytes(files, xattrs, links, directories)
    layer_digest = hashlib.sha256(layer).hexdigest()
    image_config: dict[str, object] = {"Entrypoint": [entrypoint], "Env": list(env)}
    if user is not None:
        image_config["User"] = user
        image_config["WorkingDir"] = "/"
    if working_dir is not None:
        image_config["WorkingDir"] = working_dir
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
