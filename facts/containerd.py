"""containerd: installed version and the state of its configuration file."""

from __future__ import annotations

import re
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand

from facts.binaries import parse_version

DEFAULT_CONFIG = "/etc/containerd/config.toml"


class ContainerdState(TypedDict):
    version: str | None  # "1.6.20"; None when containerd is not installed
    config_sha256: str | None  # None when the config file is absent
    config_version: int | None  # the ``version = N`` of the config file


class Containerd(FactBase[ContainerdState]):
    """
    ``{"version": "1.6.20", "config_sha256": "ab12...", "config_version": 2}`` in one command.
    """

    def command(self, config: str = DEFAULT_CONFIG) -> StringCommand:
        return StringCommand(
            "sh",
            "-c",
            QuoteString(
                "if command -v containerd >/dev/null 2>&1; then "
                'echo "V $(containerd --version 2>&1 | head -n 1)"; '
                'fi; if [ -f "$1" ]; then echo "S $(sha256sum -- "$1" | cut -d" " -f1)"; '
                "grep -E '^[[:space:]]*version[[:space:]]*=' \"$1\" | head -n 1 | sed 's/^/C /'; fi"
            ),
            "sh",
            QuoteString(config),
        )

    @staticmethod
    def default() -> ContainerdState:
        return {"version": None, "config_sha256": None, "config_version": None}

    def process(self, output: list[str]) -> ContainerdState:
        state = self.default()
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "V":
                state["version"] = parse_version(rest) or rest.strip() or None
            elif kind == "S":
                state["config_sha256"] = rest.strip() or None
            elif kind == "C":
                match = re.search(r"=\s*(\d+)", rest)
                state["config_version"] = int(match.group(1)) if match else None
        return state
