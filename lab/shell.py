"""Small helpers for running host commands with clear errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from lab.config import LabError


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(args: Sequence[str], *, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, input=input_text)
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise LabError(f"command failed (exit {result.returncode}): {' '.join(args)}\n{output}")
    return result


def succeeds(args: Sequence[str]) -> bool:
    return subprocess.run(list(args), capture_output=True).returncode == 0
