"""Start the pyinfra CLI (through :mod:`spectra_cli.pyinfra_shim`) and turn its outcome into an exit code."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectra_cli.pyinfra_shim import EXIT_INTERRUPTED, RESULT_FILE_ENV


@dataclass
class PyinfraRun:
    """What to pass to pyinfra; ``limit``/``exclude`` are already validated."""

    inventory: str
    operations: Sequence[str]
    limit: Sequence[str] = ()
    exclude: Sequence[str] = ()
    data: Sequence[str] = ()
    group_data: Sequence[str] = ()
    flags: Sequence[str] = ()  # --dry, --diff, -v, --serial, --no-wait, --parallel N ...
    extra: Sequence[str] = ()  # anything after `--`
    yes: bool = True  # -y; without it (and with --dry) pyinfra detects changes while preparing

    def argv(self) -> list[str]:
        args = ["-y"] if self.yes else []
        for pattern in self.limit:
            args += ["--limit", pattern]
        for pattern in self.exclude:
            args += ["--exclude", pattern]
        for item in self.data:
            args += ["--data", item]
        for directory in self.group_data:
            args += ["--group-data", directory]
        args += [*self.flags, *self.extra, self.inventory, *self.operations]
        return args


@dataclass
class RunOutcome:
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def run_pyinfra(run: PyinfraRun, *, env: dict[str, str] | None = None, cwd: str | None = None) -> RunOutcome:
    """Run pyinfra and wait. Exit code: pyinfra's, or 1 when hosts failed or none ran, 130 on Ctrl+C."""
    argv = run.argv()
    print(f"spectra: pyinfra {shlex.join(argv)}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="spectra-run-") as tmp:
        result_file = Path(tmp) / "result.json"
        child_env = dict(os.environ if env is None else env)
        child_env[RESULT_FILE_ENV] = str(result_file)
        process = subprocess.Popen([sys.executable, "-m", "spectra_cli.pyinfra_shim", *argv], env=child_env, cwd=cwd)
        interrupted = False
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:
                # The terminal sent SIGINT to pyinfra too; wait for it to stop, then report.
                interrupted = True
        summary: dict[str, Any] = {}
        try:
            summary = json.loads(result_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
    # The caller's own SPECTRA_RESULT_FILE (tests, CI) gets the same summary: per-host failures and changes.
    requested = (os.environ if env is None else env).get(RESULT_FILE_ENV)
    if requested and summary:
        Path(requested).write_text(json.dumps(summary), encoding="utf-8")

    if interrupted or summary.get("interrupted"):
        return RunOutcome(EXIT_INTERRUPTED, summary, "interrupted")
    if code == 0 and not summary:
        return RunOutcome(1, summary, "pyinfra left no result summary")
    if code < 0:
        return RunOutcome(128 - code, summary, f"pyinfra was killed by signal {-code}")
    return RunOutcome(code, summary, summary.get("reason"))
