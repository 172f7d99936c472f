"""What the host-state suite expects of a host, derived from the same owners the deploys read.

With the inventory's context (``$SPECTRA_COMPLY_CONTEXT``: the file ``spectra comply`` writes, roles and the
data the checks read), the expectations are the inventory's for that host. Without one (``pytest
compliance/node --hosts=...`` on its own) the suite cannot know the host's roles: it allows every role's
programs (the API gateway's included), each on its owner's default port, and takes the node exporter's
address from the host's own unit, which the deploy rendered from ``node_exporter_listen_address``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from compliance.context import HostContext
from compliance.listeners import expected_listeners
from spectra import topology

EXPORTER_UNIT = "node_exporter.service"
_LISTEN_ADDRESS_RE = re.compile(r"--web\.listen-address[= ](\S+)")


def exporter_address(exec_start: str) -> str | None:
    """``--web.listen-address`` from the exporter unit's ``systemctl show -p ExecStart`` output, if any."""
    match = _LISTEN_ADDRESS_RE.search(exec_start)
    return match.group(1) if match else None


def host_context(name: str, inventory: HostContext | None, exec_start: Callable[[], str]) -> HostContext:
    """The inventory's context of the host when there is one, else what the host itself shows."""
    if inventory is not None:
        return inventory
    # every role's programs are allowed, the API gateway's too (Traefik on its default ports, as on an edge host)
    data: dict[str, object] = {"gateway_enabled": True, "gateway_edge": True}
    address = exporter_address(exec_start())
    if address:
        data["node_exporter_listen_address"] = address
    return HostContext(name, roles=list(topology.KNOWN_ROLES), data=data)


@dataclass(frozen=True)
class Expectations:
    listeners: dict[int, str]  # TCP port -> the only program allowed to hold it beyond loopback
    ssh_port: int
    exporter_port: int | None  # None: the exporter is turned off for the host
    firewall_table: str


def expectations(context: HostContext) -> Expectations:
    from deploys.components import node_exporter
    from deploys.settings import Settings

    settings = Settings(context)
    return Expectations(
        listeners=expected_listeners(context),
        ssh_port=int(settings["ssh_port"]),
        exporter_port=node_exporter.listen_port(settings),
        firewall_table=str(settings["firewall_table"]),
    )
