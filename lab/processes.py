"""Background processes the lab owns (mirror, registry) and how it recognises its own processes."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from lab.config import LabError


def cmdline(pid: int | None) -> list[bytes]:
    """The argv of a process, or [] when there is no such process."""
    if not pid:
        return []
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def start_service(args: Sequence[str], log_path: Path, ready_url: str, what: str, cwd: Path | None = None) -> int:
    """Start a detached server (no terminal, own session, output to `log_path`) and wait until `ready_url`
    answers. Returns its PID; a server that exits or stays silent for 15 s is an error naming `what`."""
    with open(log_path, "ab") as out, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            list(args), stdin=devnull, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(ready_url, timeout=1).read()
            return process.pid
        except OSError:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise LabError(f"{what} failed to start:\n{tail}") from None
            time.sleep(0.1)
    process.kill()
    raise LabError(f"{what} did not answer within 15 s")
