"""The artifact mirror: an HTTP file server on the lab bridge, laid out like upstream download sites."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lab.config import LabConfig, LabError


def mirror_root(config: LabConfig) -> Path:
    return config.state_dir / "mirror"


def is_mirror_process(config: LabConfig, pid: int | None) -> bool:
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b"lab.mirror_server" in cmdline and str(mirror_root(config)).encode() in cmdline


def start(config: LabConfig) -> int:
    root = mirror_root(config)
    root.mkdir(parents=True, exist_ok=True)
    readme = root / "README.txt"
    if not readme.exists():
        readme.write_text("Spectra lab artifact mirror: same paths as the upstream download sites.\n")
    log_path = config.state_dir / "mirror.log"
    with open(log_path, "ab") as out, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            [sys.executable, "-m", "lab.mirror_server", str(root), config.gateway, str(config.mirror_port)],
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
    (config.state_dir / "mirror.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{config.mirror_url}/README.txt", timeout=1).read()
            return process.pid
        except OSError:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1000:]
                raise LabError(f"the mirror on {config.mirror_url} failed to start:\n{tail}") from None
            time.sleep(0.1)
    raise LabError(f"the mirror on {config.mirror_url} did not answer within 10 s")
