"""Installed versions of several binaries, in one remote command."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pyinfra.api import FactBase, QuoteString, StringCommand

_VERSION = re.compile(r"\bv?(\d+\.\d+(?:\.\d+)?(?:-(?:rc|alpha|beta)\.?\d+)?)")

# For each "name<TAB>command" pair: when the command's first word resolves (a PATH lookup or an
# absolute path), print "name<TAB>first line of its output", otherwise "name<TAB>" alone.
_SCRIPT = (
    'while [ $# -gt 1 ]; do n="$1"; c="$2"; shift 2; b="${c%% *}"; '
    'if command -v "$b" >/dev/null 2>&1; then '
    'o="$(sh -c "$c" 2>&1 </dev/null | head -n 1)"; printf \'%s\\t+%s\\n\' "$n" "$o"; '
    "else printf '%s\\t-\\n' \"$n\"; fi; done"
)


def parse_version(text: str) -> str | None:
    """The first dotted version in a ``--version`` line: ``runc version 1.1.5+ds1`` -> ``1.1.5``."""
    match = _VERSION.search(text)
    return match.group(1) if match else None


class BinaryVersions(FactBase[dict[str, str | None]]):
    """
    Versions of binaries, given a mapping of name to version command
    (``{"containerd": "containerd --version", "node_exporter": "/usr/local/bin/node_exporter --version"}``).

    .. code:: python

        {"containerd": "1.6.20", "node_exporter": None}

    ``None``: the command's binary is absent. When present but no version can be read from the first
    output line, that line itself is returned (``""`` if it printed nothing).
    """

    def command(self, commands: Mapping[str, str]) -> StringCommand:
        args: list[QuoteString] = []
        for name, version_command in commands.items():
            args += [QuoteString(name), QuoteString(version_command)]
        return StringCommand("sh", "-c", QuoteString(_SCRIPT), "sh", *args)

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        versions: dict[str, str | None] = {}
        for line in output:
            name, sep, rest = line.partition("\t")
            if not sep or not name:
                continue
            if rest.startswith("+"):
                first_line = rest[1:].strip()
                versions[name] = parse_version(first_line) or first_line
            else:
                versions[name] = None
        return versions
