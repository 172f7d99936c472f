"""Fact sets for component tests: a fresh Debian 12 node and a converged one."""

from __future__ import annotations

from typing import Any

from facts.cgroup import CgroupVersion
from facts.files import FileStates
from facts.kernel import KernelFeatures
from facts.platform import Platform
from facts.swap import Swap
from facts.sysctl import SysctlValues
from facts.systemd import SystemdUnits

BOOKWORM = {
    "id": "debian",
    "version_id": "12",
    "codename": "bookworm",
    "pretty_name": "Debian GNU/Linux 12 (bookworm)",
    "machine": "x86_64",
    "arch": "amd64",
    "kernel": "6.1.0-18-amd64",
    "dpkg_arch": "amd64",
}

RUNNING = {"load": "loaded", "active": "active", "sub": "running", "enabled": "enabled"}


def fresh(overrides: dict[Any, Any] | None = None) -> dict[Any, Any]:
    """A bare node: nothing installed, no files, modules loadable, swap on."""
    facts: dict[Any, Any] = {
        Platform: BOOKWORM,
        KernelFeatures: lambda names, **_: {name: "loadable" for name in names},
        CgroupVersion: "v2",
        FileStates: lambda paths, **_: {path: None for path in paths},
        SystemdUnits: lambda units, **_: {unit: None for unit in units},
        SysctlValues: lambda keys, **_: {key: None for key in keys},
        Swap: {"active": ["/swapfile"], "fstab": ["/swapfile none swap sw 0 0"]},
        "deb.DebPackages": {},
    }
    facts.update(overrides or {})
    return facts


def files_from_uploads(uploads: dict[str, str], modes: dict[str, str] | None = None, user: str = "root") -> Any:
    """A FileStates fact answering as if the uploads of a first run had landed (for no-op re-runs)."""
    import hashlib

    by_dest = {}
    for temp, text in uploads.items():
        directory, name = temp.rsplit("/", 1)
        by_dest[f"{directory}/{name[1:].removesuffix('.spectra-new')}"] = hashlib.sha256(text.encode()).hexdigest()

    def lookup(paths: list[str], **_: Any) -> dict[str, Any]:
        return {
            path: (
                {
                    "type": "file",
                    "mode": (modes or {}).get(path, "644"),
                    "user": user,
                    "group": "root",
                    "size": 1,
                    "sha256": by_dest[path],
                }
                if path in by_dest
                else None
            )
            for path in paths
        }

    return lookup
