"""Facts about the deploy's own connection to the host, as the host sees it."""

from __future__ import annotations

import ipaddress
from typing import Any

from pyinfra.api import FactBase

# The SSH_CONNECTION of the deploy's session ("client_ip client_port server_ip server_port"): the shell's own
# environment, else (under sudo, which drops it) the nearest ancestor's that has it, read from /proc. Constant
# text: no user data goes into it.
_COMMAND = (
    'c="${SSH_CONNECTION:-}"; p=$$; n=0; '
    'while [ -z "$c" ] && [ "${p:-0}" -gt 1 ] && [ "$n" -lt 32 ]; do '
    "c=$(tr '\\000' '\\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^SSH_CONNECTION=//p' | head -n 1); "
    "p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status 2>/dev/null); n=$((n + 1)); "
    'done; printf "%s\\n" "$c"'
)


class DeploySource(FactBase[dict[str, Any] | None]):
    """The deploy's SSH session as the host sees it: ``{"client": "198.18.40.1", "server": "198.18.40.13",
    "server_port": 22}``; ``None`` when the session is not an SSH one (or the address cannot be read).

    Through a bastion, ``client`` is the bastion's address: the one the host's firewall sees.
    """

    @staticmethod
    def default() -> None:
        return None

    def command(self) -> str:
        return _COMMAND

    def process(self, output: list[str]) -> dict[str, Any] | None:
        fields = " ".join(output).split()
        if len(fields) != 4 or not fields[3].isdigit():
            return None
        try:
            client = ipaddress.ip_address(fields[0])
            server = ipaddress.ip_address(fields[2])
        except ValueError:
            return None
        if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped:
            client = client.ipv4_mapped
        return {"client": str(client), "server": str(server), "server_port": int(fields[3])}
