"""Many files' type, mode, owner, group and sha256 (and systemd units' states) in ONE remote command.

pyinfra has no fact cache and ``files.file``/``files.put`` read several facts per path, so a component
that manages ten files would cost thirty remote commands on a no-op run. These facts read everything a
component compares in one go.

Output lines are tab separated and start with a record tag, so one command can carry several kinds:

    F <path> <kind> <mode> <user> <group> <sha256 or ->     an existing path
    M <path>                                                  a missing path
    U <unit> <is-enabled> <is-active>                         a systemd unit
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

# `stat -c %F` words -> short kinds used by the components
_KINDS = {
    "regular file": "file",
    "regular empty file": "file",
    "directory": "directory",
    "symbolic link": "link",
}

# Constant shell bodies (no user input): the paths/units come in as quoted loop words.
_FILE_LOOP_BODY = (
    'do if [ -e "$p" ] || [ -L "$p" ]; then '
    "s=$(stat -c '%F\t%a\t%U\t%G' -- \"$p\"); h=-; "
    'if [ -f "$p" ] && [ ! -L "$p" ]; then h=$(sha256sum -- "$p" | cut -d\' \' -f1); fi; '
    'printf \'F\\t%s\\t%s\\t%s\\n\' "$p" "$s" "${h:--}"; '
    "else printf 'M\\t%s\\n' \"$p\"; fi; done"
)
_UNIT_LOOP_BODY = (
    "do printf 'U\\t%s\\t%s\\t%s\\n' \"$u\" "
    '"$(systemctl is-enabled -- "$u" 2>/dev/null)" "$(systemctl is-active -- "$u" 2>/dev/null)"; done'
)


def normalise_mode(mode: str | int | None) -> str | None:
    """``640``, ``"0640"`` or ``0o640`` -> ``"0640"`` (always four octal digits)."""
    if mode is None:
        return None
    if isinstance(mode, int):
        return f"{mode:04o}"
    digits = mode.strip()
    if digits.startswith("0o"):
        digits = digits[2:]
    int(digits, 8)  # raises ValueError on anything that is not octal
    return digits.lstrip("0").rjust(4, "0") if digits.strip("0") else "0000"


def files_command(paths: Iterable[str]) -> StringCommand:
    """Shell loop printing one F or M line per path."""
    words = [QuoteString(path) for path in paths]
    return StringCommand("for p in", *words, ";", _FILE_LOOP_BODY)


def units_command(units: Iterable[str]) -> StringCommand:
    """Shell loop printing one U line per systemd unit."""
    words = [QuoteString(unit) for unit in units]
    return StringCommand("for u in", *words, ";", _UNIT_LOOP_BODY)


def parse_records(output: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Parse F/M/U lines into ``{"files": {path: state|None}, "units": {unit: state}}``."""
    files: dict[str, Any] = {}
    units: dict[str, Any] = {}
    for raw in output:
        line = raw.rstrip("\n")
        tag, _, rest = line.partition("\t")
        if tag == "M":
            files[rest] = None
        elif tag == "F":
            # The path is the only field that could contain odd characters: split from the right.
            parts = rest.rsplit("\t", 5)
            if len(parts) != 6:
                continue
            path, kind, mode, user, group, sha = parts
            files[path] = {
                "kind": _KINDS.get(kind, kind),
                "mode": normalise_mode(mode),
                "user": user,
                "group": group,
                "sha256": None if sha == "-" else sha,
            }
        elif tag == "U":
            parts = rest.split("\t")
            while len(parts) < 3:
                parts.append("")
            unit, enabled, active = parts[:3]
            units[unit] = {"enabled": enabled or None, "active": active or None}
    return {"files": files, "units": units}


class FileModes(FactBase[dict[str, dict[str, Any] | None]]):
    """
    Type, mode, owner, group and sha256 of many paths in one command; ``None`` for a missing path:

    .. code:: python

        {"/etc/shadow": {"kind": "file", "mode": "0640", "user": "root", "group": "shadow",
                         "sha256": "9f86d0..."},
         "/etc/cron.d": {"kind": "directory", "mode": "0755", "user": "root", "group": "root",
                         "sha256": None},
         "/etc/absent": None}
    """

    @staticmethod
    def default() -> dict[str, dict[str, Any] | None]:
        return {}

    def command(self, paths: list[str] | tuple[str, ...]) -> StringCommand:
        return files_command(paths)

    def process(self, output: list[str]) -> dict[str, dict[str, Any] | None]:
        return parse_records(output)["files"]


class ConfigState(FactBase[dict[str, dict[str, Any]]]):
    """
    Files (as :class:`FileModes`) and systemd units' enabled/active state, in one command:

    .. code:: python

        {"files": {"/etc/nftables.conf": {...}, "/etc/nftables.d/spectra.nft": None},
         "units": {"nftables.service": {"enabled": "enabled", "active": "active"}}}

    A unit systemd does not know has ``{"enabled": None, "active": "inactive"}``.
    """

    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {"files": {}, "units": {}}

    def command(
        self, paths: list[str] | tuple[str, ...], units: list[str] | tuple[str, ...] = ()
    ) -> StringCommand:
        parts: list[Any] = [files_command(paths)]
        if units:
            parts += [";", units_command(units)]
        return StringCommand(*parts)

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        return parse_records(output)
