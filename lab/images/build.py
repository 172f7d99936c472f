"""Build tiny single-binary container images from Go sources, as docker-archive tars `ctr` can import."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from lab.config import LabError

IMAGES_DIR = Path(__file__).resolve().parent


def _tar_bytes(members: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0  # reproducible layers: same source, same digest
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


def docker_archive(binary: Path, reference: str, entrypoint: str, dest: Path) -> Path:
    """Write a docker-archive (the `docker save` layout) holding one layer with `binary` at `entrypoint`."""
    layer = _tar_bytes({entrypoint.lstrip("/"): (binary.read_bytes(), 0o755)})
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [entrypoint], "Env": ["PATH=/"]},
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
