"""Active swap and swap entries of /etc/fstab, in one remote command."""

from __future__ import annotations

from typing import TypedDict

from pyinfra.api import FactBase


class SwapState(TypedDict):
    active: list[str]  # devices/files from /proc/swaps
    fstab: list[str]  # uncommented /etc/fstab lines whose type is swap


class Swap(FactBase[SwapState]):
    """``{"active": ["/swapfile"], "fstab": ["/swapfile none swap sw 0 0"]}``."""

    def command(self) -> str:
        return (
            "tail -n +2 /proc/swaps 2>/dev/null | sed 's/^/A /'; "
            'awk \'$1 !~ /^#/ && $3 == "swap" { print "F " $0 }\' /etc/fstab 2>/dev/null; true'
        )

    @staticmethod
    def default() -> SwapState:
        return {"active": [], "fstab": []}

    def process(self, output: list[str]) -> SwapState:
        state: SwapState = {"active": [], "fstab": []}
        for line in output:
            if line.startswith("A "):
                fields = line[2:].split()
                if fields:
                    state["active"].append(fields[0])
            elif line.startswith("F "):
                state["fstab"].append(line[2:].strip())
        return state
