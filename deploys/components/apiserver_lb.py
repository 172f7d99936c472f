"""Node-local API server balancer: HAProxy (Debian's package) on every Kubernetes node.

Listens on ``127.0.0.1:6443`` (``apiserver_lb_listen``), where every kubeconfig the PKI writes points
(``pki_kubeconfig_server``), and passes TCP through to the kube-apiserver of every ``control_plane`` host
of the inventory, checking each one every ``apiserver_lb_check_interval``: by default an HTTPS ``GET /readyz``
that must answer 200 (the apiserver's certificate verified with the cluster CA; control planes let anonymous
requests in on that path for these probes), so an apiserver that listens but is not ready yet (RBAC not
synced after a restart) or lost etcd gets no traffic; ``apiserver_lb_check: tcp`` only connects (needed when
``control_plane_anonymous_paths`` leaves out ``/readyz``: every check would get 401 and no apiserver traffic). A
connection that fails before the checks take a dead apiserver out is retried on another one at once
(``option redispatch``), so clients do not see it. With several control planes
the API stays reachable from every node while one is down, without an external load balancer
(kubespray's "localhost load balancing"). On control planes the apiserver binds the host's own address,
so the balancer can hold 127.0.0.1:6443.

The configuration is checked with ``haproxy -c`` before it replaces the live one; HAProxy reloads (no
dropped connections) only when it changed.
"""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.components.pod_network import node_address, runs_kubelet
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, config_state_kwargs, render_template
from deploys.prepare import FactRequest, component_data, prepared_facts, setting
from facts.config_state import ConfigState
from spectra import topology

DEFAULTS: dict[str, Any] = {
    "apiserver_lb_enabled": True,  # run the local balancer on hosts that run a kubelet
    "apiserver_lb_listen": "127.0.0.1:6443",  # where local clients reach the API (the kubeconfigs' server)
    "apiserver_lb_backend_port": 6443,  # kube-apiserver port on the control planes
    "apiserver_lb_servers": None,  # [[name, "address:port"], ...]; None: every control_plane host
    "apiserver_lb_check_interval": "2s",  # health check period of each apiserver
    "apiserver_lb_check": "readyz",  # "readyz": HTTPS GET /readyz must answer 200; "tcp": a connect is enough
    "apiserver_lb_ca_file": "/etc/kubernetes/pki/ca.crt",  # verifies the apiservers in the readyz check
    "apiserver_lb_connect_timeout": "5s",  # connect timeout to an apiserver
    "apiserver_lb_maxconn": 4000,  # connection limit
    "apiserver_lb_package": "haproxy",  # Debian package
}
TYPES: dict[str, type | tuple[type, ...]] = {"apiserver_lb_servers": list}
REQUIRED: set[str] = set()

CONFIG = "/etc/haproxy/haproxy.cfg"
SERVICE = "haproxy.service"


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def backend_servers(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, address:port) of every apiserver, sorted by name."""
    if data["apiserver_lb_servers"]:
        return [(str(name), str(target)) for name, target in data["apiserver_lb_servers"]]
    port = int(data["apiserver_lb_backend_port"])
    servers = []
    for member in host.state.inventory:
        if "control_plane" not in {str(role) for role in (member.data.get("roles") or [])}:
            continue
        address = node_address(member)
        if address is None:
            raise DeployError(f"control plane {member.name} has no address (private_ip or ssh_hostname)")
        servers.append((member.name, f"{_url_host(address)}:{port}"))
    return sorted(servers)


CHECKS = ("readyz", "tcp")
READYZ_CHECK = ["option httpchk", "http-check send meth GET uri /readyz", "http-check expect status 200"]


def health_check(data: dict[str, Any]) -> tuple[list[str], str]:
    """The backend's check directives and the options each server's check adds, for ``apiserver_lb_check``."""
    kind = data["apiserver_lb_check"]
    if kind not in CHECKS:
        raise DeployError(f"apiserver_lb_check must be one of {', '.join(CHECKS)}, not {kind!r}")
    if kind == "tcp":
        return [], ""
    return READYZ_CHECK, f"check-ssl verify required ca-file {data['apiserver_lb_ca_file']}"


def haproxy_config(data: dict[str, Any], servers: list[tuple[str, str]]) -> str:
    check_lines, check_options = health_check(data)
    return render_template(
        "etc/haproxy/haproxy.cfg.j2",
        listen=data["apiserver_lb_listen"],
        servers=servers,
        check_lines=check_lines,
        check_options=check_options,
        check_interval=data["apiserver_lb_check_interval"],
        connect_timeout=data["apiserver_lb_connect_timeout"],
        maxconn=int(data["apiserver_lb_maxconn"]),
    )


def haproxy_check(path: str) -> StringCommand:
    return StringCommand("haproxy", "-c", "-q", "-f", QuoteString(path))


def _files(data: dict[str, Any]) -> list[ConfigFile]:
    servers = backend_servers(data)
    if not servers:
        raise DeployError(f"{host.name}: apiserver balancer: the inventory has no control_plane host")
    return [ConfigFile(CONFIG, haproxy_config(data, servers), validate=haproxy_check)]


def fact_requests() -> list[FactRequest]:
    data = component_data(DEFAULTS)
    if not data["apiserver_lb_enabled"] or not runs_kubelet():
        return []
    return [DebPackages, (ConfigState, config_state_kwargs(_files(data), [SERVICE], [SERVICE]))]


@deploy("API server local balancer", data_defaults=DEFAULTS)
def apiserver_lb() -> None:
    if not setting("apiserver_lb_enabled") or not runs_kubelet():
        host.noop("apiserver balancer: not a Kubernetes node here (apiserver_lb_enabled, pki_node_roles)")
        return
    data = component_data(DEFAULTS)
    files = _files(data)
    packages, state = prepared_facts(*fact_requests())
    managed.apt_packages(
        name="Install HAProxy", packages=[str(setting("apiserver_lb_package"))], update=False, current=packages
    )
    config_files(
        name="HAProxy: local balancer in front of every kube-apiserver (checked with haproxy -c first)",
        files=files,
        enabled_units=[SERVICE],
        running_units=[SERVICE],
        on_change=[StringCommand("systemctl", "reload", SERVICE)],
        current=state,
    )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["apiserver_lb_enabled"]) and topology.runs_kubelet(host)


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="apiserver_lb",
    defaults=DEFAULTS,
    deploy=apiserver_lb,
    should_run=should_run,
    fact_requests=_fact_requests,
)
