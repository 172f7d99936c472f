"""Helpers for fact tests: a fact's command as shell text, and running it locally when it is portable."""

from __future__ import annotations

import subprocess
from typing import Any

from pyinfra.api import FactBase, StringCommand


def command_text(fact: FactBase[Any], **kwargs: Any) -> str:
    command = fact.command(**kwargs)
    return command.get_raw_value() if isinstance(command, StringCommand) else str(command)


def run_locally(fact: FactBase[Any], **kwargs: Any) -> Any:
    """Run the fact's command with the local sh and process its output, as pyinfra would."""
    completed = subprocess.run(["sh", "-c", command_text(fact, **kwargs)], capture_output=True, text=True, check=True)
    lines = completed.stdout.splitlines()
    return fact.process(lines) if lines else fact.default()
