"""A component's files and systemd units in ONE remote command.

Composes the two batched facts :class:`facts.files.FileStates` and :class:`facts.systemd.SystemdUnits`
into a single shell command (their outputs cannot be confused: file lines start with one of
``facts.files.LINE_PREFIXES``, unit lines are ``U=``, ``Key=value`` or blank), so an operation that
manages a set of configuration files and the service reading them costs one remote command on a no-op run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyinfra.api import FactBase, StringCommand

from facts.files import LINE_PREFIXES, FileStates
from facts.systemd import SystemdUnits

_FILE_PREFIXES = LINE_PREFIXES


def split_file_lines(output: Sequence[str]) -> tuple[list[str], list[str]]:
    """(FileStates lines, everything else) from the output of a combined command."""
    file_lines = [line for line in output if line.startswith(_FILE_PREFIXES)]
    other_lines = [line for line in output if not line.startswith(_FILE_PREFIXES)]
    return file_lines, other_lines


class ConfigState(FactBase[dict[str, dict[str, Any]]]):
    """
    Files as :class:`FileStates` (with sha256) and units as :class:`SystemdUnits`:

    .. code:: python

        {"files": {"/etc/nftables.conf": {"type": "file", "mode": "755", "user": "root", ...},
                   "/etc/nftables.d/spectra.nft": None},
         "units": {"nftables.service": {"load": "loaded", "active": "active", "enabled": "enabled", ...}}}
    """

    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {"files": {}, "units": {}}

    def command(self, paths: Sequence[str], units: Sequence[str] = ()) -> StringCommand:
        parts: list[Any] = [FileStates().command(list(paths))]
        if units:
            # "|| true": a host without systemd still reports its files
            parts += [";", "{", SystemdUnits().command(list(units)), "||", "true", ";", "}"]
        return StringCommand(*parts)

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        file_lines, unit_lines = split_file_lines(output)
        files = FileStates().process(file_lines) if file_lines else {}
        units = SystemdUnits().process(unit_lines) if unit_lines else {}
        return {"files": dict(files), "units": dict(units)}
