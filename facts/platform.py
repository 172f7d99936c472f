"""The host's OS release, architecture and kernel, in one remote command."""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

# uname -m -> the architecture names used by Go release tarballs and Debian.
MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "armv7",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class Platform(FactBase[dict[str, Any]]):
    """
    OS release (from /etc/os-release), machine, kernel release and dpkg architecture:

    .. code:: python

        {"id": "debian", "version_id": "12", "codename": "bookworm", "pretty_name": "Debian GNU/Linux 12",
         "machine": "x86_64", "arch": "amd64", "kernel": "6.1.0-18-amd64", "dpkg_arch": "amd64"}
    """

    def command(self) -> str:
        return (
            "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; "
            'echo "SPECTRA_MACHINE=$(uname -m)"; echo "SPECTRA_KERNEL=$(uname -r)"; '
            'echo "SPECTRA_DPKG_ARCH=$(dpkg --print-architecture 2>/dev/null)"'
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def process(self, output: list[str]) -> dict[str, Any]:
        values: dict[str, str] = {}
        for line in output:
            key, sep, value = line.strip().partition("=")
            if not sep or not key:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[key] = value
        machine = values.get("SPECTRA_MACHINE") or None
        return {
            "id": values.get("ID") or None,
            "id_like": values.get("ID_LIKE") or None,
            "version_id": values.get("VERSION_ID") or None,
            "codename": values.get("VERSION_CODENAME") or None,
            "pretty_name": values.get("PRETTY_NAME") or None,
            "machine": machine,
            "arch": MACHINE_TO_ARCH.get(machine or "", machine),
            "kernel": values.get("SPECTRA_KERNEL") or None,
            "dpkg_arch": values.get("SPECTRA_DPKG_ARCH") or None,
        }
