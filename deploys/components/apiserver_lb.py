"""Node-local API server balancer: HAProxy (Debian's package) on every Kubernetes node.

Listens on ``apiserver_local_address`` (127.0.0.1:6443), where every kubeconfig the PKI writes points, and
passes TCP through to the kube-apiserver of every ``control_plane`` host of the inventory (its
``spectra.topology`` address, ``apiserver_port``), checking each one every ``apiserver_lb_check_interval``:
by default an HTTPS ``GET /readyz`` that must answer 200 (the apiserver's certificate verified with the
cluster CA the PKI installs; control planes let anonymous requests in on that path for these probes), so an
apiserver that listens but is not ready yet (RBAC not synced after a restart) or lost etcd gets no traffic;
``apiserver_lb_check: tcp`` only connects (needed when ``control_plane_anonymous_paths`` leaves out
``/readyz``: every check would get 401 and no apiserver traffic). A connection that fails before the checks
take a dead apiserver out is retried on another one at once (``option redispatch``), so clients do not see
it. With several control planes the API stays reachable from every node while one is down, without an
external load balancer (kubespray's "localhost load balancing"). On control planes the apiserver binds the
host's own address, so the balancer can hold 127.0.0.1:6443.

The configuration is checked with ``haproxy -c`` before it replaces the live one; HAProxy reloads (no
dropped connections) only when it changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, config_state_kwargs, render_template
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.config_state import ConfigState
from spectra import topology
from spectra.cluster_settings import split_host_port
from spectra.pki import layout

DEFAULTS: dict[str, Any] = {
    "apiserver_lb_enabled": True,  # run the local balancer on hosts that run a kubelet
    "apiserver_lb_servers": None,  # [[name, "address:port"], ...]; None: every control_plane host
    "apiserver_lb_check_interval": "2s",  # health check period of each apiserver
    "apiserver_lb_check": "readyz",  # "readyz": HTTPS GET /readyz must answer 200; "tcp": a connect is enough
    "apiserver_lb_connect_timeout": "5s",  # connect timeout to an apiserver
    "apiserver_lb_maxconn": 4000,  # connection limit
    "apiserver_lb_package": "haproxy",  # Debian package
}
TYPES: dict[str, type | tuple[type, ...]] = {"apiserver_lb_servers": list}
REQUIRED: set[str] = set()
CHOICES: dict[str, tuple[Any, ...]] = {"apiserver_lb_check": ("readyz", "tcp")}

CONFIG = "/etc/haproxy/haproxy.cfg"
SERVICE = "haproxy.service"
READYZ_CHECK = ["option httpchk", "http-check send meth GET uri /readyz", "http-check expect status 200"]

_TIME = re.compile(r"^[0-9]+(us|ms|s|m|h|d)?$")  # HAProxy's time format
_SERVER_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]+(=[A-Za-z0-9.+:~-]+)?$")


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats the HAProxy configuration depends on (pure: ``spectra validate`` runs it too)."""
    problems = []
    for key in ("apiserver_lb_check_interval", "apiserver_lb_connect_timeout"):
        if not _TIME.match(str(settings[key])):
            problems.append(f"{key}={settings[key]!r}: an HAProxy time such as 2s or 500ms")
    maxconn = settings["apiserver_lb_maxconn"]
    if not isinstance(maxconn, int) or isinstance(maxconn, bool) or maxconn < 1:
        problems.append(f"apiserver_lb_maxconn={maxconn!r}: a whole number of at least 1")
    if not _PACKAGE.match(str(settings["apiserver_lb_package"])):
        problems.append(f"apiserver_lb_package={settings['apiserver_lb_package']!r}: a Debian package name")
    for entry in settings["apiserver_lb_servers"] or []:
        try:
            name, target = entry
            split_host_port(str(target))
            if not _SERVER_NAME.match(str(name)):
                raise ValueError(f"{name!r} is not a server name")
        except (TypeError, ValueError) as error:
            problems.append(f"apiserver_lb_servers: {entry!r}: [name, 'address:port'] ({error})")
    return problems


def backend_servers(settings: Mapping[str, Any], members: Iterable[Any]) -> list[tuple[str, str]]:
    """(name, address:port) of every apiserver: ``apiserver_lb_servers``, else every control plane of
    ``members`` (the whole inventory) at its address, by name."""
    if settings["apiserver_lb_servers"]:
        return [(str(name), str(target)) for name, target in settings["apiserver_lb_servers"]]
    port = int(settings["apiserver_port"])
    try:
        return [
            (member.name, f"{topology.url_host(topology.require_address(member, 'apiserver balancer'))}:{port}")
            for member in topology.control_planes(members)
        ]
    except topology.TopologyError as error:
        raise DeployError(f"apiserver balancer: {error}") from None


def health_check(settings: Mapping[str, Any]) -> tuple[list[str], str]:
    """The backend's check directives and the options each server's check adds, for ``apiserver_lb_check``."""
    if settings["apiserver_lb_check"] == "tcp":
        return [], ""
    return READYZ_CHECK, f"check-ssl verify required ca-file {layout.pki_file(settings, 'ca.crt')}"


def haproxy_config(settings: Mapping[str, Any], servers: list[tuple[str, str]]) -> str:
    check_lines, check_options = health_check(settings)
    return render_template(
        "etc/haproxy/haproxy.cfg.j2",
        listen=settings["apiserver_local_address"],
        servers=servers,
        check_lines=check_lines,
        check_options=check_options,
        check_interval=settings["apiserver_lb_check_interval"],
        connect_timeout=settings["apiserver_lb_connect_timeout"],
        maxconn=int(settings["apiserver_lb_maxconn"]),
    )


def haproxy_check(path: str) -> StringCommand:
    return StringCommand("haproxy", "-c", "-q", "-f", QuoteString(path))


def _files(settings: Mapping[str, Any]) -> list[ConfigFile]:
    servers = backend_servers(settings, host.state.inventory)
    if not servers:
        raise DeployError(f"{host.name}: apiserver balancer: the inventory has no control_plane host")
    return [ConfigFile(CONFIG, haproxy_config(settings, servers), validate=haproxy_check)]


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["apiserver_lb_enabled"]) and topology.runs_kubelet(host)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`apiserver_lb` reads: the installed packages, its configuration and unit."""
    return [DebPackages, (ConfigState, config_state_kwargs(_files(settings), [SERVICE], [SERVICE]))]


@deploy("API server local balancer")
def apiserver_lb() -> None:
    settings = Settings()
    files = _files(settings)
    packages, state = prepared_facts(*fact_requests(settings))
    managed.apt_packages(
        name="Install HAProxy", packages=[str(settings["apiserver_lb_package"])], update=False, current=packages
    )
    config_files(
        name="HAProxy: local balancer in front of every kube-apiserver (checked with haproxy -c first)",
        files=files,
        enabled_units=[SERVICE],
        running_units=[SERVICE],
        on_change=[StringCommand("systemctl", "reload", SERVICE)],
        current=state,
    )


COMPONENT = Component(
    name="apiserver_lb",
    defaults=DEFAULTS,
    deploy=apiserver_lb,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check,),
)
