"""``spectra drift``: a deploy in dry mode; what would change, per host, and a non-zero exit if anything would.

Exit codes: 0 nothing would change; 3 drift (an operation would change a host); 1 the dry run failed
(a host failed or was unreachable); 2 invalid input; 130 interrupted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

EXIT_DRIFT = 3


@dataclass(frozen=True)
class Drift:
    host: str
    operation: str
    commands: list[str]
    more_commands: int = 0
    conditional: bool = False
    error: str | None = None


def parse_drift(summary: dict[str, Any]) -> tuple[list[Drift], list[Drift]]:
    """(operations that would change, conditional operations that might) from the shim's summary."""
    changes: list[Drift] = []
    conditional: list[Drift] = []
    for host, items in sorted((summary.get("would_change") or {}).items()):
        for item in items:
            drift = Drift(
                host=host, operation=item["operation"], commands=list(item.get("commands") or []),
                more_commands=int(item.get("more_commands") or 0), conditional=bool(item.get("conditional")),
                error=item.get("error"),
            )  # fmt: skip
            (conditional if drift.conditional else changes).append(drift)
    return changes, conditional


def format_drift(changes: list[Drift], conditional: list[Drift], hosts: list[str]) -> list[str]:
    lines = []
    for drift in changes:
        lines.append(f"DRIFT {drift.host} | {drift.operation}")
        for command in drift.commands:
            lines.append(f"      {command}")
        if drift.more_commands:
            lines.append(f"      ... and {drift.more_commands} more command(s)")
        if drift.error:
            lines.append(f"      (commands unknown: {drift.error})")
    for drift in conditional:
        lines.append(f"maybe {drift.host} | {drift.operation} (runs only if its _if condition holds)")
    by_host = {host: 0 for host in hosts}
    for drift in changes:
        by_host[drift.host] = by_host.get(drift.host, 0) + 1
    lines.append("drift per host: " + ", ".join(f"{host} {count}" for host, count in sorted(by_host.items())))
    return lines


def report(summary: dict[str, Any]) -> int:
    """Print the drift and return 0 (clean) or EXIT_DRIFT."""
    if "would_change" not in summary:
        print("spectra drift: the dry run left no change list", file=sys.stderr)
        return 1
    changes, conditional = parse_drift(summary)
    for line in format_drift(changes, conditional, list(summary.get("activated_hosts") or [])):
        print(line)
    if changes:
        hosts = sorted({drift.host for drift in changes})
        print(f"spectra drift: {len(changes)} operation(s) would change {', '.join(hosts)}", file=sys.stderr)
        return EXIT_DRIFT
    print("spectra drift: no drift, nothing would change", file=sys.stderr)
    return 0
