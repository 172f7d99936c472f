"""cgroup version of the host: v2 (unified), v1 (legacy) or hybrid."""

from __future__ import annotations

from pyinfra.api import FactBase

V1 = "v1"
V2 = "v2"
HYBRID = "hybrid"


class CgroupVersion(FactBase[str | None]):
    """
    ``"v2"`` when /sys/fs/cgroup is a cgroup2 filesystem, ``"hybrid"`` when it is a tmpfs of v1
    controllers with a cgroup2 hierarchy at /sys/fs/cgroup/unified (systemd's hybrid mode; the
    controllers still live in v1), ``"v1"`` for v1 alone, ``None`` when nothing is mounted.
    """

    def command(self) -> str:
        return (
            'echo "root=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"; '
            'echo "unified=$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)"; '
            'echo "memory=$(stat -fc %T /sys/fs/cgroup/memory 2>/dev/null)"'
        )

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        values = {}
        for line in output:
            key, _, value = line.strip().partition("=")
            values[key] = value.strip()
        root = values.get("root", "")
        if root == "cgroup2fs":
            return V2
        if root == "tmpfs" or values.get("memory") == "cgroupfs":
            return HYBRID if values.get("unified") == "cgroup2fs" else V1
        return None
