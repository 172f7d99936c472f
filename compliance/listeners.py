"""Sockets a host listens on (``ss``), and the ones it is expected to expose, derived from the ports' owners.

No fact in ``facts/`` reads sockets, so ``ss -Htulnp`` is parsed here. The expected ports come from where
the deploys declare them: ``ssh_port`` (deploys.settings.HOST_KEYS), the node exporter's
``node_exporter_listen_address`` (deploys.components.node_exporter) and the cluster's ports
(spectra.cluster_settings), each for the roles that run the program (spectra.topology). The firewall
opens the same ports from the same owners.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from spectra import topology

# ss shows a process by its kernel command name, at most 15 characters
COMMAND_NAME_LENGTH = 15


@dataclass(frozen=True)
class Listener:
    protocol: str  # tcp, udp
    address: str  # "0.0.0.0", "::", "*" for any
    port: int
    process: str  # first process name, "" when ss could not tell

    @property
    def loopback(self) -> bool:
        return is_loopback(self.address)

    def held_by(self, program: str) -> bool:
        return bool(self.process) and self.process == program[:COMMAND_NAME_LENGTH]

    def __str__(self) -> str:
        owner = f" ({self.process})" if self.process else ""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol} {address}:{self.port}{owner}"


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "*", a name
        return False


_PROCESS_RE = re.compile(r'users:\(\("([^"]+)"')


def parse_ss(output: str) -> list[Listener]:
    """``ss -Htulnp``: Netid State Recv-Q Send-Q Local:Port Peer:Port [Process]."""
    listeners = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[0] not in ("tcp", "udp"):
            continue
        address, _, port = fields[4].rpartition(":")
        address = address.strip("[]").split("%", 1)[0]
        match = _PROCESS_RE.search(line)
        try:
            number = int(port)
        except ValueError:
            continue
        listeners.append(Listener(fields[0], address, number, match.group(1) if match else ""))
    return listeners


def exposed_listeners(listeners: Iterable[Listener], allowed_tcp: Iterable[int]) -> list[Listener]:
    """Listeners beyond loopback other than TCP on ``allowed_tcp``."""
    allowed = set(allowed_tcp)
    return [item for item in listeners if not item.loopback and not (item.protocol == "tcp" and item.port in allowed)]


def expected_listeners(member: topology.Member) -> dict[int, str]:
    """TCP port -> the program that must hold it beyond loopback, from the host's roles and settings: sshd and
    node_exporter everywhere, kubelet on Kubernetes nodes, kube-apiserver on control planes, etcd on etcd
    members, controller-manager and scheduler on control planes while Prometheus scrapes them, kube-router's
    health port on Kubernetes nodes, the API gateway's ports on its edge hosts (each unless its component is
    turned off for the host)."""
    from deploys.components import control_plane_flags, node_exporter
    from deploys.settings import Settings

    settings = Settings(member)
    owners = {int(settings["ssh_port"]): "sshd"}
    exporter_port = node_exporter.listen_port(settings)
    if exporter_port is not None:
        owners[exporter_port] = "node_exporter"
    if topology.runs_kubelet(member) and settings["kubelet_enabled"]:
        owners[int(settings["kubelet_port"])] = "kubelet"
        if settings["kube_router_enabled"]:  # its health port listens on every address (the firewall keeps it in)
            owners[int(settings["kube_router_health_port"])] = "kube-router"
        if settings["gateway_enabled"] and member.data.get("gateway_edge"):  # Traefik on the host's network
            for key in ("gateway_http_port", "gateway_https_port", "gateway_admin_port"):
                owners[int(settings[key])] = "traefik"
    if topology.has_role(member, topology.CONTROL_PLANE) and settings["control_plane_enabled"]:
        owners[int(settings["apiserver_port"])] = "kube-apiserver"
        if control_plane_flags.metrics_exposed(settings):  # on the node address for Prometheus
            owners[int(settings["controller_manager_port"])] = "kube-controller-manager"
            owners[int(settings["scheduler_port"])] = "kube-scheduler"
    if topology.has_role(member, topology.ETCD) and settings["etcd_enabled"]:
        owners[int(settings["etcd_client_port"])] = "etcd"
        owners[int(settings["etcd_peer_port"])] = "etcd"
    return dict(sorted(owners.items()))
