"""What the inventory says about a host, as the checks see it: roles, groups and the settings they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The data keys checks read (their defaults are their owners', deploys.settings): compliance copies these
# from the inventory into each host's context, and nothing else (the context file must hold no secrets).
CONTEXT_KEYS: tuple[str, ...] = (
    "roles",
    "cluster_node_roles",
    "ssh_port",
    "kubelet_port",
    "apiserver_port",
    "etcd_client_port",
    "etcd_peer_port",
    "controller_manager_port",
    "scheduler_port",
    "control_plane_metrics_bind",
    "prometheus_enabled",
    "kubelet_enabled",
    "control_plane_enabled",
    "etcd_enabled",
    "node_exporter_enabled",
    "kube_router_enabled",
    "kube_router_health_port",
    "node_exporter_listen_address",
    "fluentd_enabled",
    "audit_rules_path",
    "firewall_table",
    "gateway_enabled",
    "gateway_http_port",
    "gateway_https_port",
    "gateway_admin_port",
    "gateway_edge",  # derived (compliance.hosts): the API gateway listens on this host
)


@dataclass
class HostContext:
    """One host for the checks: a member for ``spectra.topology`` and ``deploys.settings`` (``.name``,
    ``.data``), with its inventory groups."""

    name: str
    roles: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # topology reads roles from data, as from a pyinfra host's
        self.data.setdefault("roles", list(self.roles))

    def setting(self, key: str) -> Any:
        """The deploys' view of this host's setting: its data, else the default of the key's owner."""
        from deploys.settings import setting

        return setting(key, self)
