"""Kubernetes control plane: kube-apiserver, kube-controller-manager and kube-scheduler as systemd services on
the hosts whose ``roles`` include ``control_plane``, with the cluster PKI's files (``deploys/components/pki.py``).

* Binaries: ``deploys/components/kubernetes_binaries.py`` (verified download, ``kubernetes_version``), plus
  kubectl for the health check and the RBAC bootstrap.
* kube-apiserver listens on this host's address only (``--bind-address`` = ``--advertise-address`` =
  ``spectra.topology.ip_address``), port ``apiserver_port``: ``apiserver_local_address`` (127.0.0.1:6443)
  belongs to the node-local balancer in front of every apiserver, where the kubeconfigs point. Its flags and
  the other two services' are built in ``control_plane_flags.py`` (CIS 1.2-1.4). Anonymous requests: the
  structured authentication configuration (``--authentication-config``) lets them in only on the paths of
  ``control_plane_anonymous_paths`` (health endpoints, probed by the balancers without a certificate);
  every other path needs a credential. An empty list turns anonymous access off altogether.
* Admission: ``control_plane_admission_plugins`` (NodeRestriction, DenyServiceExternalIPs, EventRateLimit)
  with ``admission-config.yaml`` (EventRateLimit's ``control_plane_event_rate_limits``) beside the other
  configuration files; a change of it restarts the apiserver like theirs.
* etcd: every member of the inventory (``spectra.topology.etcd_members``) on ``etcd_client_port``, unless
  ``control_plane_etcd_servers`` names an external cluster.
* Secrets encryption key: one for the cluster, kept in the PKI directory (``control_plane_secrets.py``).
* Restarts: a service restarts only when its unit, its binary or one of its configuration files changed,
  or when a PKI file it reads differs from the stamp of sums written at its last (re)start. After a
  (re)start of the apiserver, ``/readyz`` of this host's apiserver must answer ``ok`` within
  ``control_plane_ready_timeout`` seconds (kubectl with admin.conf), else the run fails with its last answer.
* RBAC bootstrap, on the first control-plane host (by name) only: ``control_plane_rbac.py``.
* No-op cost: nothing of its own (platform, files with the PKI files' sums, units, and on the first control
  plane the bindings read with kubectl are read with the other components' facts).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.components import kubernetes_binaries as binaries
from deploys.components import pki as pki_component
from deploys.components.control_plane_flags import (
    ADMISSION_CONFIG,
    AUDIT_POLICY,
    AUTHENTICATION_CONFIG,
    CONFIG_FILES,
    ENCRYPTION_CONFIG,
    apiserver_flags,
    bad_flag_names,
    config_file,
    controller_manager_flags,
    render_flags,
    scheduler_flags,
)
from deploys.components.control_plane_rbac import RBAC_BINDINGS, rbac_bootstrap
from deploys.components.control_plane_secrets import check_encryption_key, encryption_key
from deploys.components.service_credentials import restart_on_new_credentials
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, require
from facts.files import FileStates
from facts.kubernetes import ClusterRoleBindings
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra import pki as pki_lib
from spectra import topology
from spectra.pki import layout
from spectra.values import is_https_url, is_whole

DEFAULTS: dict[str, Any] = {
    "control_plane_enabled": True,  # on control_plane hosts
    # etcd client URLs (an external etcd); None: https://<address>:<etcd_client_port> of every etcd member
    "control_plane_etcd_servers": None,
    "control_plane_tls_min_version": "VersionTLS12",  # apiserver, controller-manager and scheduler (CIS 1.2)
    # strong suites only (CIS 1.2): AEAD with forward secrecy; TLS 1.3 suites are not configurable in Go
    "control_plane_tls_cipher_suites": [
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ],
    # the only paths anonymous requests may reach (balancer health probes); []: no anonymous access at all
    "control_plane_anonymous_paths": ["/livez", "/readyz", "/healthz"],
    "control_plane_encryption_provider": "secretbox",  # Secrets at rest: secretbox (XSalsa20-Poly1305) or aescbc
    "control_plane_audit_log_dir": "/var/log/kubernetes/audit",  # audit.log here (directory 0700)
    "control_plane_audit_log_maxage": 30,  # days an audit log file is kept (CIS 1.2)
    "control_plane_audit_log_maxbackup": 10,  # rotated audit log files kept
    "control_plane_audit_log_maxsize": 100,  # MB before the audit log rotates
    "control_plane_service_account_issuer": None,  # None: https://kubernetes.default.svc.<cluster_domain>
    # --service-account-extend-token-expiration (CIS 1.2.30: false): true lets tokens live a year for clients
    # that never reload them; every client of this toolkit (kubelet, client-go) reloads its projected token
    "control_plane_service_account_extend_token_expiration": False,
    # admission plugins on top of the apiserver's default ones: NodeRestriction (CIS 1.2.14, required: the Node
    # authorizer relies on it), DenyServiceExternalIPs (CIS 1.2.3, CVE-2020-8554: no Service may claim an
    # external IP and intercept its traffic), EventRateLimit (CIS 1.2.9, limits below)
    "control_plane_admission_plugins": ["NodeRestriction", "DenyServiceExternalIPs", "EventRateLimit"],
    # EventRateLimit's limits (admission-config.yaml): type Server, Namespace, User or SourceAndObject, qps and
    # burst, and cacheSize (the LRU of limited keys) for the per-key types. Generous: a rollout's events fit;
    # a flood is refused with 429 (the event recorders drop it), never a pod or an object
    "control_plane_event_rate_limits": [
        {"type": "Server", "qps": 500, "burst": 1000},
        {"type": "Namespace", "qps": 50, "burst": 100, "cacheSize": 2000},
    ],
    "control_plane_terminated_pod_gc_threshold": 1000,  # terminated pods kept before the GC deletes them
    "control_plane_apiserver_extra_args": {},  # more kube-apiserver flags: {"flag": "value"} (no leading --)
    "control_plane_controller_manager_extra_args": {},  # same for kube-controller-manager
    "control_plane_scheduler_extra_args": {},  # same for kube-scheduler
    # where controller-manager and scheduler listen: "loopback" (127.0.0.1, CIS 1.3.7 and 1.4.2), "node" (the
    # node address, the firewall open to the monitoring hosts only, so Prometheus can scrape them; a token with
    # RBAC on /metrics is still needed), "auto": "node" when the Prometheus addon is on, else "loopback"
    "control_plane_metrics_bind": "auto",
    # --shutdown-watch-termination-grace-period: without it a restart waits 60 s for the clients' open watches
    # (kubelets, kube-proxy, controllers, through the balancers) before the apiserver stops; measured in the lab
    "control_plane_shutdown_watch_grace_period": "5s",
    "control_plane_ready_timeout": 180,  # seconds to wait for /readyz after an apiserver (re)start
    "control_plane_rbac_bootstrap": True,  # create the bindings the PKI's identities need (first control plane)
    # let a host's encryption configuration with another key be replaced (the Secrets it encrypted become
    # unreadable): only for a cluster whose key is lost for good
    "control_plane_allow_encryption_key_change": False,
}

TYPES: dict[str, type | tuple[type, ...]] = {
    "control_plane_etcd_servers": list,
    "control_plane_service_account_issuer": str,
}
REQUIRED: set[str] = set()
CHOICES: dict[str, tuple[Any, ...]] = {
    "control_plane_encryption_provider": ("secretbox", "aescbc"),
    "control_plane_tls_min_version": ("VersionTLS12", "VersionTLS13"),
    "control_plane_metrics_bind": ("auto", "loopback", "node"),
}

SERVICES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BINARIES = [*SERVICES, "kubectl"]
# the PKI files the apiserver reads: it is restarted when one of them changed
APISERVER_PKI_FILES = (
    "ca.crt", "apiserver.crt", "apiserver.key", "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key",
    "apiserver-etcd-client.crt", "apiserver-etcd-client.key", "etcd/ca.crt", "front-proxy-ca.crt",
    "front-proxy-client.crt", "front-proxy-client.key", "sa.pub", "sa.key",
)  # fmt: skip
UNIT_DIR = "/etc/systemd/system"
STAMP_DIR = "/var/lib/spectra-infra"
EXTRA_ARGS = ("control_plane_apiserver_extra_args", "control_plane_controller_manager_extra_args",
              "control_plane_scheduler_extra_args")  # fmt: skip

_URL_PATH = re.compile(r"^/[A-Za-z0-9/_.-]*$")
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")
_CIPHER = re.compile(r"^TLS_[A-Z0-9_]+$")
_PLUGIN = re.compile(r"^[A-Z][A-Za-z0-9]*$")
EVENT_LIMIT_TYPES = ("Server", "Namespace", "User", "SourceAndObject")
EVENT_LIMIT_KEYS = {"type", "qps", "burst", "cacheSize"}


def event_rate_limit_problems(limits: Any) -> list[str]:
    """What is wrong with ``control_plane_event_rate_limits`` (pure)."""
    key = "control_plane_event_rate_limits"
    if not isinstance(limits, list | tuple):
        return [f"{key}={limits!r}: a list of {{type, qps, burst[, cacheSize]}}"]
    problems, seen = [], set()
    for limit in limits:
        if not isinstance(limit, Mapping) or not {"type", "qps", "burst"} <= set(limit) <= EVENT_LIMIT_KEYS:
            problems.append(f"{key}: {limit!r} is not a mapping of type, qps, burst (and cacheSize)")
            continue
        if limit["type"] not in EVENT_LIMIT_TYPES or limit["type"] in seen:
            problems.append(f"{key}: type {limit['type']!r}: one of {', '.join(EVENT_LIMIT_TYPES)}, each once")
        seen.add(limit["type"])
        for field in ("qps", "burst", "cacheSize"):
            if field in limit and (not is_whole(limit[field]) or limit[field] < 1):
                problems.append(f"{key}: {limit['type']} {field}={limit[field]!r}: a whole number of at least 1")
        if limit["type"] == "Server" and "cacheSize" in limit:
            problems.append(f"{key}: a Server limit has no cacheSize (one bucket for the whole apiserver)")
    return problems


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats the control plane's settings must have (pure: ``spectra validate`` runs it too)."""
    problems = []

    def fail(key: str, expected: str) -> None:
        problems.append(f"{key}={settings[key]!r}: {expected}")

    for key in EXTRA_ARGS:
        extra = settings[key] or {}
        if not isinstance(extra, Mapping):
            fail(key, "a mapping of flag name -> value")
        elif bad := bad_flag_names(extra):
            problems.append(f"{key}: {bad} are not flag names (lowercase, digits, '-', '.', with or without --)")
    plugins = settings["control_plane_admission_plugins"]
    if not isinstance(plugins, list | tuple) or not all(_PLUGIN.match(str(name)) for name in plugins):
        fail("control_plane_admission_plugins", "a list of admission plugin names such as DenyServiceExternalIPs")
    elif "NodeRestriction" not in plugins:
        fail("control_plane_admission_plugins", "must keep NodeRestriction (kubelets may only change their own node)")
    elif "EventRateLimit" in plugins and not settings["control_plane_event_rate_limits"]:
        fail("control_plane_event_rate_limits", "at least one limit while EventRateLimit is enabled")
    problems += event_rate_limit_problems(settings["control_plane_event_rate_limits"] or [])
    if not isinstance(settings["control_plane_service_account_extend_token_expiration"], bool):
        fail("control_plane_service_account_extend_token_expiration", "true or false")
    paths = settings["control_plane_anonymous_paths"] or []
    if not isinstance(paths, list | tuple) or not all(_URL_PATH.match(str(path)) for path in paths):
        fail("control_plane_anonymous_paths", "a list of URL paths such as /readyz")
    servers = settings["control_plane_etcd_servers"]
    if servers is not None and (not servers or not all(is_https_url(server) for server in servers)):
        fail("control_plane_etcd_servers", "None (the inventory's etcd members) or a list of https:// URLs")
    issuer = settings["control_plane_service_account_issuer"]
    if issuer is not None and not is_https_url(issuer):
        fail("control_plane_service_account_issuer", "an https:// URL")
    suites = settings["control_plane_tls_cipher_suites"] or []
    if not isinstance(suites, list | tuple) or not all(_CIPHER.match(str(suite)) for suite in suites):
        fail("control_plane_tls_cipher_suites", "a list of Go TLS cipher suite names (TLS_ECDHE_...)")
    if not _DURATION.match(str(settings["control_plane_shutdown_watch_grace_period"])):
        fail("control_plane_shutdown_watch_grace_period", "a duration such as 5s or 1m30s")
    if not str(settings["control_plane_audit_log_dir"]).startswith("/"):
        fail("control_plane_audit_log_dir", "an absolute path")
    for key, least in (("control_plane_audit_log_maxage", 0), ("control_plane_audit_log_maxbackup", 0),
                       ("control_plane_audit_log_maxsize", 1), ("control_plane_terminated_pod_gc_threshold", 0),
                       ("control_plane_ready_timeout", 1)):  # fmt: skip
        if not is_whole(settings[key]) or settings[key] < least:
            fail(key, f"a whole number of at least {least}")
    return problems


def admission_event_rate_limits(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """EventRateLimit's limits for the admission configuration: none when the plugin is not enabled."""
    if "EventRateLimit" not in (settings["control_plane_admission_plugins"] or []):
        return []
    return [dict(limit) for limit in settings["control_plane_event_rate_limits"] or []]


def etcd_servers(settings: Mapping[str, Any], members: Any) -> list[str]:
    """``control_plane_etcd_servers``, else ``https://<address>:<etcd_client_port>`` of every etcd member."""
    if settings["control_plane_etcd_servers"] is not None:
        return [str(server) for server in settings["control_plane_etcd_servers"]]
    try:
        peers = topology.etcd_members(members)
    except topology.TopologyError as error:
        raise DeployError(f"control plane: {error}") from None
    port = int(settings["etcd_client_port"])
    return [f"https://{topology.url_host(address)}:{port}" for _, address in peers]


def apiserver_address() -> str:
    """This host's IP, where its apiserver binds (never loopback: 127.0.0.1 is the node-local balancer's)."""
    try:
        address = topology.ip_address(host, "the apiserver's bind address")
    except topology.TopologyError as error:
        raise DeployError(f"control plane: {error}") from None
    ip = ipaddress.ip_address(address)
    require(
        not ip.is_loopback and not ip.is_unspecified,
        f"control plane: the apiserver must not bind to {address}: loopback is the node-local balancer's",
    )
    return address


def own_server(settings: Mapping[str, Any], address: str) -> str:
    """This host's apiserver at ``address`` (not the node-local balancer, which may not be up yet)."""
    return f"https://{topology.url_host(address)}:{int(settings['apiserver_port'])}"


def credentials(settings: Mapping[str, Any]) -> dict[str, list[str]]:
    """The PKI files each service reads at start: a change restarts it."""
    pki = [layout.pki_file(settings, name) for name in ("ca.crt", "sa.key", "front-proxy-ca.crt")]
    if settings["pki_install_ca_key"]:
        pki.append(layout.pki_file(settings, "ca.key"))
    return {
        "kube-apiserver": [layout.pki_file(settings, name) for name in APISERVER_PKI_FILES],
        "kube-controller-manager": [layout.kubeconfig_file(settings, "controller-manager"), *pki],
        "kube-scheduler": [layout.kubeconfig_file(settings, "scheduler")],
    }


STAMPS = {service: f"{STAMP_DIR}/{service}-credentials.sha256" for service in SERVICES}
UNITS = {service: f"{UNIT_DIR}/{service}.service" for service in SERVICES}


def bootstraps_rbac(settings: Mapping[str, Any]) -> bool:
    return bool(settings["control_plane_rbac_bootstrap"]) and topology.is_first_control_plane(
        host, host.state.inventory
    )


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["control_plane_enabled"]) and topology.has_role(host, topology.CONTROL_PLANE)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`control_plane` reads: the arch, its files (the PKI files hashed), its units and, on the
    first control plane, the bindings (read as admin.conf)."""
    configs = [config_file(settings, name) for name in CONFIG_FILES]
    bin_paths, bin_contents, bin_stat_only = binaries.binary_paths(BINARIES)
    credential_paths = sorted({path for paths in credentials(settings).values() for path in paths})
    audit_dir = str(settings["control_plane_audit_log_dir"]).rstrip("/")
    paths = [*UNITS.values(), *configs, audit_dir, *credential_paths, *bin_paths]
    contents = [*STAMPS.values(), *bin_contents, config_file(settings, ENCRYPTION_CONFIG)]
    requests: list[FactRequest] = [
        Platform,
        (FileStates, managed.snapshot_files_kwargs(paths, contents, bin_stat_only)),
        (SystemdUnits, {"units": [unit_name(service) for service in SERVICES]}),
    ]
    if bootstraps_rbac(settings):
        kubeconfig = layout.kubeconfig_file(settings, "admin")
        requests.append(
            (ClusterRoleBindings, {"kubectl": binaries.binary_path("kubectl"), "kubeconfig": kubeconfig,
                                   "server": own_server(settings, apiserver_address()), "names": list(RBAC_BINDINGS)})
        )  # fmt: skip
    return requests


@operation(is_idempotent=False)
def wait_ready(kubectl: str, kubeconfig: str, server: str, timeout: int = 180):
    """``/readyz`` of one apiserver (kubectl with ``kubeconfig``: its CA and client certificate), once a
    second for ``timeout`` seconds; fails with the last answer."""
    check = StringCommand(
        QuoteString(kubectl), "--kubeconfig", QuoteString(kubeconfig), "--server", QuoteString(server),
        "--request-timeout=5s", "get", "--raw", "/readyz",
    )  # fmt: skip
    yield StringCommand(
        "i=0;", "until", "out=$(", check, "2>&1);", "do",
        "i=$((i+1));", "if", "[", "$i", "-ge", str(int(timeout)), "];", "then",
        'echo "kube-apiserver not ready after', str(int(timeout)), 's: $out"', ">&2;",
        QuoteString(kubectl), "--kubeconfig", QuoteString(kubeconfig), "--server", QuoteString(server),
        "--request-timeout=5s", "get", "--raw", "'/readyz?verbose'", ">&2", "2>&1;", "exit", "1;", "fi;",
        "sleep", "1;", "done;", 'echo "$i s: $out"',
    )  # fmt: skip


@deploy("Kubernetes control plane")
def control_plane() -> None:
    settings = Settings()
    address = apiserver_address()
    server = own_server(settings, address)
    servers = etcd_servers(settings, host.state.inventory)
    require(bool(servers), "control plane: no etcd servers: no inventory host has the etcd role "
            "(or set control_plane_etcd_servers)")  # fmt: skip
    # the cluster's one encryption key, kept with the CA keys
    directory, spec = pki_component.cluster_spec(host.state.inventory)
    key = encryption_key(directory)
    _, files, unit_states, *bindings = prepared_facts(*fact_requests(settings))  # bindings: when bootstrapping

    encryption_config = config_file(settings, ENCRYPTION_CONFIG)
    check_encryption_key(files.get(encryption_config), key, encryption_config, directory,
                         allow_change=bool(settings["control_plane_allow_encryption_key_change"]))  # fmt: skip
    installs = binaries.install_binaries(BINARIES, files)

    audit_dir = str(settings["control_plane_audit_log_dir"]).rstrip("/")
    managed.directory(name="Audit log directory", path=audit_dir, mode="0700", current=files)
    config_ops = [
        managed.template(
            name="Secrets encryption configuration",
            src=f"etc/kubernetes/{ENCRYPTION_CONFIG}.j2",
            dest=encryption_config,
            mode="0600",
            context={"provider": settings["control_plane_encryption_provider"], "key": base64.b64encode(key).decode()},
            current=files,
        ),
        managed.template(
            name="Audit policy",
            src=f"etc/kubernetes/{AUDIT_POLICY}.j2",
            dest=config_file(settings, AUDIT_POLICY),
            mode="0600",
            context={},
            current=files,
        ),
        managed.template(
            name="Authentication configuration",
            src=f"etc/kubernetes/{AUTHENTICATION_CONFIG}.j2",
            dest=config_file(settings, AUTHENTICATION_CONFIG),
            mode="0600",
            context={"anonymous_paths": [str(path) for path in settings["control_plane_anonymous_paths"] or []]},
            current=files,
        ),
        managed.template(
            name="Admission configuration (EventRateLimit)",
            src=f"etc/kubernetes/{ADMISSION_CONFIG}.j2",
            dest=config_file(settings, ADMISSION_CONFIG),
            mode="0600",
            context={"event_rate_limits": admission_event_rate_limits(settings)},
            current=files,
        ),
    ]

    flags = {
        "kube-apiserver": render_flags(
            apiserver_flags(settings, address, servers), settings["control_plane_apiserver_extra_args"]
        ),
        "kube-controller-manager": render_flags(
            controller_manager_flags(settings, address), settings["control_plane_controller_manager_extra_args"]
        ),
        "kube-scheduler": render_flags(
            scheduler_flags(settings, address), settings["control_plane_scheduler_extra_args"]
        ),
    }
    extra_restart = {"kube-apiserver": config_ops, "kube-controller-manager": [], "kube-scheduler": []}
    service_credentials = credentials(settings)

    services = {}
    new_credentials = {}
    for service in SERVICES:
        unit = managed.template(
            name=f"{service} systemd unit",
            src=f"etc/systemd/system/{service}.service.j2",
            dest=UNITS[service],
            mode="0600",  # CIS 1.1.1-1.1.6: the unit is this control plane's "pod specification"
            context={
                "binary": binaries.binary_path(service),
                "arguments": " \\\n    ".join(flags[service]),
                "audit_dir": audit_dir,
            },
            current=files,
        )
        new_credentials[service] = restart_on_new_credentials(
            name=f"{service} restarted on new PKI files",
            unit=service,
            paths=service_credentials[service],
            stamp=STAMPS[service],
            current=files,
        )
        services[service] = managed.service(
            name=f"{service} running and enabled",
            unit=service,
            restarted=unit.will_change
            or installs[service].will_change
            or any(op.will_change for op in extra_restart[service]),
            daemon_reload=unit.will_change,
            current=unit_states,
        )

    kubectl = binaries.binary_path("kubectl")
    admin_conf = layout.kubeconfig_file(settings, "admin")
    apiserver, apiserver_credentials = services["kube-apiserver"], new_credentials["kube-apiserver"]
    wait_ready(
        name="kube-apiserver ready (/readyz)",
        kubectl=kubectl,
        kubeconfig=admin_conf,
        server=server,
        timeout=int(settings["control_plane_ready_timeout"]),
        _if=lambda: apiserver.did_change() or apiserver_credentials.did_change(),
    )
    if bootstraps_rbac(settings):
        super_admin = pki_lib.render(pki_component.cluster_pki(directory, spec), "super-admin", server)
        rbac_bootstrap(
            name="RBAC bindings for the cluster's identities",
            kubectl=kubectl,
            kubeconfig=admin_conf,
            server=server,
            bindings=RBAC_BINDINGS,
            super_admin=super_admin,
            current=bindings[0],
        )


COMPONENT = Component(
    name="control_plane",
    defaults=DEFAULTS,
    deploy=control_plane,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check, binaries.check),
)
