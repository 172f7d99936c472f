"""State of many systemd units in one remote command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand

_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState")


class UnitState(TypedDict):
    id: str
    load: str  # "loaded", "not-found", "masked"
    active: str  # "active", "inactive", "failed", "activating", ...
    sub: str  # "running", "dead", "exited", ...
    enabled: str  # UnitFileState: "enabled", "disabled", "static", "masked", "" when not found


def unit_name(unit: str) -> str:
    """``containerd`` -> ``containerd.service``; names with a unit suffix are kept."""
    suffixes = (".service", ".socket", ".timer", ".mount", ".target", ".path", ".slice", ".swap")
    return unit if unit.endswith(suffixes) else f"{unit}.service"


def is_running(state: UnitState | None) -> bool:
    return bool(state) and state is not None and state["active"] in ("active", "activating", "reloading")


def is_enabled(state: UnitState | None) -> bool:
    return bool(state) and state is not None and state["enabled"] in ("enabled", "enabled-runtime", "alias")


class SystemdUnits(FactBase[dict[str, UnitState | None]]):
    """
    Load, active and enabled state of many units from one ``systemctl show``, keyed by the name asked
    (``.service`` added when no suffix is given). ``None`` for a unit systemd does not know:

    .. code:: python

        {"containerd.service": {"id": "containerd.service", "load": "loaded", "active": "active",
                                "sub": "running", "enabled": "enabled"},
         "node_exporter.service": None}
    """

    def requires_command(self, units: Sequence[str]) -> str:
        return "systemctl"

    def command(self, units: Sequence[str]) -> StringCommand:
        names = [unit_name(unit) for unit in units]
        # The names asked, in order, then one block per unit (blank-line separated, same order).
        return StringCommand(
            "printf",
            QuoteString("U=%s\\n"),
            *[QuoteString(name) for name in names],
            "&&",
            "systemctl",
            "show",
            "--no-pager",
            "-p",
            ",".join(_PROPERTIES),
            "--",
            *[QuoteString(name) for name in names],
        )

    @staticmethod
    def default() -> dict[str, UnitState | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, UnitState | None]:
        asked: list[str] = []
        blocks: list[dict[str, str]] = []
        current: dict[str, str] = {}
        for line in output:
            if line.startswith("U="):
                asked.append(line[2:])
                continue
            if not line.strip():
                if current:
                    blocks.append(current)
                    current = {}
                continue
            key, _, value = line.partition("=")
            current[key] = value
        if current:
            blocks.append(current)

        units: dict[str, UnitState | None] = {}
        for name, block in zip(asked, blocks, strict=False):
            if block.get("LoadState", "not-found") == "not-found":
                units[name] = None
                continue
            units[name] = UnitState(
                id=block.get("Id", name),
                load=block.get("LoadState", ""),
                active=block.get("ActiveState", ""),
                sub=block.get("SubState", ""),
                enabled=block.get("UnitFileState", ""),
            )
        for name in asked[len(blocks) :]:
            units[name] = None
        return units
