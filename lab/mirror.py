"""The artifact mirror: an HTTP file server on the lab bridge, laid out like upstream download sites; it also
records webhook deliveries (``lab/mirror_server.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

from lab.config import LabConfig
from lab.processes import cmdline, start_service


def mirror_root(config: LabConfig) -> Path:
    return config.state_dir / "mirror"


def webhook_dir(config: LabConfig) -> Path:
    """Where the mirror records webhook deliveries (``POST /webhook/<name>`` -> ``<name>.jsonl``)."""
    return config.state_dir / "webhooks"


def is_mirror_process(config: LabConfig, pid: int | None) -> bool:
    argv = cmdline(pid)
    return b"lab.mirror_server" in argv and str(mirror_root(config)).encode() in argv


def start(config: LabConfig) -> int:
    root = mirror_root(config)
    root.mkdir(parents=True, exist_ok=True)
    readme = root / "README.txt"
    if not readme.exists():
        readme.write_text("Spectra lab artifact mirror: same paths as the upstream download sites.\n")
    pid = start_service(
        [
            sys.executable,
            "-m",
            "lab.mirror_server",
            str(root),
            config.gateway,
            str(config.mirror_port),
            str(webhook_dir(config)),
        ],  # fmt: skip
        config.state_dir / "mirror.log",
        f"{config.mirror_url}/README.txt",
        f"the mirror on {config.mirror_url}",
        cwd=Path(__file__).resolve().parent.parent,
    )
    (config.state_dir / "mirror.pid").write_text(f"{pid}\n")
    return pid
