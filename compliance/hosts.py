"""Hosts of a pyinfra inventory as testinfra targets: an ssh_config file and the per-host context.

testinfra's ssh backend runs OpenSSH with ``-F`` this file, so host keys are checked exactly as ssh does
it (``StrictHostKeyChecking yes`` unless the inventory says otherwise for the host; with an unknown or
changed key the host's checks fail). Connections are multiplexed (``ControlPath`` in the run's directory).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from compliance.context import CONTEXT_KEYS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class HostError(Exception):
    """A host cannot be targeted (a name ssh_config cannot hold, a value with a newline...)."""


@dataclass
class ComplyHost:
    name: str
    hostname: str
    user: str | None = None
    port: int | None = None
    key: str | None = None
    known_hosts: str | None = None
    strict_host_key_checking: str = "yes"
    proxy_jump: str | None = None
    proxy_command: str | None = None
    roles: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the keys checks read (see CONTEXT_KEYS)

    @property
    def spec(self) -> str:
        return f"ssh://{self.name}"


def _text(value: Any, what: str, host: str) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    if any(char in text for char in '\n\r"'):
        raise HostError(f"{host}: {what} {text!r} contains a newline or a double quote")
    return text


def _proxy(config_file: str | None, hostname: str) -> tuple[str | None, str | None]:
    """ProxyJump/ProxyCommand an inventory's own ssh config file (``ssh_config_file``) gives the address."""
    if not config_file:
        return None, None
    import paramiko

    try:
        options = paramiko.SSHConfig.from_path(config_file).lookup(hostname)
    except OSError as exc:
        raise HostError(f"ssh_config_file {config_file}: {exc}") from exc
    return options.get("proxyjump"), options.get("proxycommand")


def resolve_host(host: Any, edge: bool = False) -> ComplyHost:
    """A pyinfra ``Host`` (inventory data and groups applied) as a target; ``edge``: one the API gateway
    listens on (``spectra.topology.edge_hosts`` of its inventory)."""
    name = str(host.name)
    if not NAME_RE.match(name):
        raise HostError(f"{name!r}: host names for compliance runs use letters, digits, '.', '_' and '-' only")
    data = host.data
    hostname = _text(data.get("ssh_hostname"), "ssh_hostname", name) or name
    port = data.get("ssh_port")
    strict = data.get("ssh_strict_host_key_checking")
    proxy_jump, proxy_command = _proxy(_text(data.get("ssh_config_file"), "ssh_config_file", name), hostname)
    context = {key: data.get(key) for key in CONTEXT_KEYS if data.get(key) is not None}
    if edge:
        context["gateway_edge"] = True
    roles = data.get("roles") or []
    return ComplyHost(
        name=name,
        hostname=hostname,
        user=_text(data.get("ssh_user"), "ssh_user", name),
        port=int(port) if port else None,
        key=_text(data.get("ssh_key"), "ssh_key", name),
        known_hosts=_text(data.get("ssh_known_hosts_file"), "ssh_known_hosts_file", name),
        strict_host_key_checking=_text(strict, "ssh_strict_host_key_checking", name) or "yes",
        proxy_jump=_text(proxy_jump, "ProxyJump", name),
        proxy_command=_text(proxy_command, "ProxyCommand", name),
        roles=[str(role) for role in roles],
        groups=sorted(str(group) for group in host.groups),
        data=context,
    )


def resolve_hosts(inventory: Any, names: Sequence[str]) -> list[ComplyHost]:
    from spectra import topology

    by_name = {host.name: host for host in inventory}
    edge = {member.name for member in topology.edge_hosts(list(by_name.values()))}
    return [resolve_host(by_name[name], edge=name in edge) for name in names]


def ssh_config(hosts: Iterable[ComplyHost], control_dir: str | None = None) -> str:
    """An ssh_config with one ``Host`` block per host, named as in the inventory."""
    lines = ["# written by spectra comply", ""]
    for host in hosts:
        options: list[tuple[str, Any]] = [
            ("HostName", host.hostname), ("User", host.user), ("Port", host.port),
            ("IdentityFile", host.key), ("IdentitiesOnly", "yes" if host.key else None),
            ("UserKnownHostsFile", host.known_hosts), ("StrictHostKeyChecking", host.strict_host_key_checking),
            ("ProxyJump", host.proxy_jump), ("ProxyCommand", host.proxy_command),
            ("BatchMode", "yes"), ("LogLevel", "ERROR"), ("ServerAliveInterval", 15),
            ("ControlPath", f"{control_dir}/cm-%C" if control_dir else None),
        ]  # fmt: skip
        lines.append(f"Host {host.name}")
        for key, value in options:
            if value is None:
                continue
            text = str(value)
            lines.append(f'    {key} "{text}"' if " " in text and key != "ProxyCommand" else f"    {key} {text}")
        lines.append("")
    return "\n".join(lines)


def context(hosts: Iterable[ComplyHost]) -> dict[str, Any]:
    """The per-host context the suite reads (``SPECTRA_COMPLY_CONTEXT``)."""
    return {"hosts": {host.name: {"roles": host.roles, "groups": host.groups, "data": host.data} for host in hosts}}
