"""The API gateway: Gateway API routes served by Traefik on the edge hosts, TLS, rate limits, security headers.

Two addon sets, both switched by ``gateway_enabled``:

* ``gateway-crds``: the Gateway API's standard CRDs (``sigs.k8s.io/gateway-api`` ``gateway_api_version``, with
  its ``safe-upgrades`` admission policy) and Traefik's CRDs (its ``Middleware`` carries the rate limit). Both
  are read out of the projects' Go module zips, fetched from ``gateway_module_proxy`` and verified against the
  ``h1:`` hashes pinned in ``deploys/checksums/go_modules.yaml`` (``spectra.go_modules``): no CRD is copied into
  this repository, and a zip that is not the pinned one is refused.
* ``gateway`` (namespace ``gateway``, Pod Security ``privileged``: the pods use the host's network): Traefik as a
  DaemonSet on the **edge** hosts (the ``edge`` role; every worker when no host has it), listening on the
  hosts' ``gateway_http_port``/``gateway_https_port`` through the node firewall (``firewall`` opens them to
  ``gateway_cidrs`` on those hosts only). Host networking rather than host ports: the node firewall's input
  chain sees the traffic (a host port is DNATed past it) and the client's own address reaches the rate limiter.
  Traefik runs as root with every capability dropped but ``NET_BIND_SERVICE`` (a non-root process gets no
  effective capability from the runtime), a read-only root and no privilege escalation.

Objects, all generated from group data: the ``GatewayClass`` and one ``Gateway`` (``spectra``) with an HTTP
listener, whose one route redirects every request to HTTPS (301), and one HTTPS listener per route host name,
each with the certificate that covers the name; one ``HTTPRoute`` per ``gateway_routes`` entry, to a Service of
``application_services`` (the Service's port is the named container port: declare Services that way), with
``ResponseHeaderModifier`` (``gateway_security_headers``) and a Traefik ``Middleware`` rate limit per client
address (average and burst per second, ``gateway_rate_limit`` or the route's own; 429 above it). Routes and
middlewares live in ``gateway``; each backend namespace gets a ``ReferenceGrant`` for them. The network
policies let the gateway's pods reach exactly the routed ports (``network_policies``).

Certificates: ``gateway_certificates`` (PEM text, usually ``from_file(...)`` outside the repository) cover the
names their SANs cover; the key must match the certificate and it must be valid now. Every other route name is
in one certificate of the gateway's own CA in the cluster PKI directory (``spectra.pki.gateway``). Expiry is
reported twice: each served certificate (no key) is kept under ``<kubernetes_pki_dir>/gateway/`` on the first
control plane, where the certificate fact and ``certificate_metrics`` read it (``CertificateExpiringSoon``), and
Traefik's own ``traefik_tls_certs_not_after`` gives ``GatewayCertificateExpiring`` 21 days ahead.

Traefik is told nothing it would phone home with (no version check, no usage statistics) and only reads the
``gateway`` namespace and the routed ones. Its ping and metrics answer on ``gateway_admin_port`` (open only to
the monitoring addresses).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from pyinfra import host, logger
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy

from deploys import addon
from deploys.component import Component
from deploys.operations.config_files import ConfigFile, config_files
from deploys.prepare import FactRequest, prepared_facts
from facts.config_state import ConfigState
from spectra import go_modules, topology, values
from spectra.pki import gateway as gateway_pki
from spectra.pki.x509 import PKIError, cert_sans, key_matches, load_key

NAMESPACE = "gateway"
NAME = "traefik"
GATEWAY = "spectra"  # the Gateway object
GATEWAY_CLASS = "spectra"
CONTROLLER = "traefik.io/gateway-controller"  # Traefik's controllerName
PKI_SECRET = "tls-spectra-pki"
TEMPLATES = ("addons/gateway/rbac.yaml.j2", "addons/gateway/traefik.yaml.j2", "addons/gateway/routes.yaml.j2")
CRD_TEMPLATES = ("addons/gateway/crds.yaml.j2",)
MODULES_TABLE = Path(__file__).resolve().parents[1] / "checksums" / "go_modules.yaml"
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
GATEWAY_API_FILES = ("config/crd/standard/*.yaml",)
TRAEFIK_MODULE = "github.com/traefik/traefik/v3"
TRAEFIK_FILES = ("docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml",)
TRAEFIK_TAG = re.compile(r":(v3\.\d+\.\d+)(@sha256:[0-9a-f]{64})?$")
ANY = ["0.0.0.0/0", "::/0"]
ROUTE_KEYS = {"hostnames", "to", "port", "path", "rate_limit"}
RATE_KEYS = {"average", "burst"}
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are 1.2 MB of YAML
RESOURCE_KEYS = ("gateway_cpu_request", "gateway_memory_request", "gateway_cpu_limit", "gateway_memory_limit")

DEFAULTS: dict[str, Any] = {
    "gateway_enabled": False,  # Traefik on the edge hosts, the Gateway API CRDs, and the routes below
    "gateway_image": "docker.io/library/traefik:v3.6.12",  # its tag picks the Traefik CRDs' module version
    "gateway_api_version": "v1.6.3",  # sigs.k8s.io/gateway-api: the standard channel's CRDs
    # where the CRDs' Go modules are downloaded from (the Go module proxy layout); verified by their h1 hashes
    "gateway_module_proxy": "https://proxy.golang.org",
    "gateway_http_port": 80,  # on the edge hosts; redirects to HTTPS
    "gateway_https_port": 443,
    "gateway_admin_port": 9180,  # Traefik's ping (probes) and metrics, on the edge hosts
    "gateway_cidrs": ANY,  # who may reach the HTTP and HTTPS ports (node firewall)
    # "<name>": {"hostnames": [...], "to": "<namespace>/<service>" (application_services), "port": "<port name>",
    #            "path": "/" (prefix), "rate_limit": {"average": N, "burst": M} | None (the default below) }
    "gateway_routes": {},
    "gateway_rate_limit": {"average": 100, "burst": 200},  # requests per second per client address, per route
    # user-supplied certificates: "<name>": {"cert": PEM (chain), "key": PEM}; from_file(...) keeps them out of git
    "gateway_certificates": {},
    # set on every response of every route
    "gateway_security_headers": {
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    },
    "gateway_cpu_request": "100m",
    "gateway_memory_request": "64Mi",
    "gateway_cpu_limit": "1",
    "gateway_memory_limit": "256Mi",
}


# --- settings -----------------------------------------------------------------------------------------------


def rate_limit(settings: Mapping[str, Any], route: Mapping[str, Any]) -> Mapping[str, Any]:
    limit = route.get("rate_limit")
    return limit if limit is not None else settings["gateway_rate_limit"]


def _check_rate(limit: Any, key: str) -> list[str]:
    if (
        not isinstance(limit, Mapping)
        or set(limit) != RATE_KEYS
        or not all(values.is_whole(limit[name]) and limit[name] > 0 for name in RATE_KEYS)
    ):
        return [f"{key}={limit!r}: {{'average': N, 'burst': M}}, requests per second per client, both above 0"]
    return []


def _check_routes(settings: Mapping[str, Any]) -> list[str]:
    routes = settings["gateway_routes"]
    if not isinstance(routes, Mapping):
        return [f"gateway_routes={routes!r}: a mapping of route name to its hostnames, service and port"]
    services = settings["application_services"] if isinstance(settings["application_services"], Mapping) else {}
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for name, route in routes.items():
        key = f"gateway_routes[{name!r}]"
        if not values.is_dns_label(name) or len(name) > 40:
            problems.append(f"{key}: a route name is a DNS label of at most 40 characters")
            continue
        if not isinstance(route, Mapping) or set(route) - ROUTE_KEYS or not {"hostnames", "to", "port"} <= set(route):
            problems.append(f"{key}: a mapping with 'hostnames', 'to', 'port' (and optionally 'path', 'rate_limit')")
            continue
        hostnames = route["hostnames"]
        if (
            not isinstance(hostnames, list)
            or not hostnames
            or not all(isinstance(h, str) and _HOSTNAME.match(h) for h in hostnames)
        ):
            problems.append(f"{key}.hostnames={hostnames!r}: DNS names such as shop.example.com (or *.example.com)")
            hostnames = []
        path = route.get("path", "/")
        if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " ?#"):
            problems.append(f"{key}.path={path!r}: a path prefix such as / or /api")
        for hostname in hostnames:
            if (hostname, path) in seen:
                problems.append(f"{key}: {hostname}{path} is also routed by {seen[(hostname, path)]!r}")
            seen[(hostname, path)] = name
        target = route["to"]
        service = services.get(target)
        if not isinstance(service, Mapping):
            problems.append(f"{key}.to={target!r}: not a declared application service (application_services)")
        elif route["port"] not in (service.get("ports") or {}):
            declared = sorted(service.get("ports") or {})
            problems.append(f"{key}.port={route['port']!r}: not a port of {target} ({declared})")
        if route.get("rate_limit") is not None:
            problems += _check_rate(route["rate_limit"], f"{key}.rate_limit")
    return problems


def _pem_certificates(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def user_certificate(name: str, entry: Any, now: dt.datetime | None = None) -> tuple[list[str], list[str]]:
    """(problems, the DNS names it covers) of one ``gateway_certificates`` entry."""
    key = f"gateway_certificates[{name!r}]"
    if not values.is_dns_label(name) or len(name) > 40:
        return [f"{key}: a certificate name is a DNS label of at most 40 characters"], []
    if not isinstance(entry, Mapping) or set(entry) != {"cert", "key"}:
        return [f"{key}: a mapping with 'cert' and 'key' (PEM text, such as from_file('~/tls/shop.pem'))"], []
    try:
        chain = _pem_certificates(str(entry["cert"]))
    except ValueError as error:
        return [f"{key}.cert: not a PEM certificate ({error})"], []
    try:
        private = load_key(str(entry["key"]).encode())
    except (ValueError, TypeError) as error:
        return [f"{key}.key: not a PEM private key ({error})"], []
    leaf = chain[0]
    problems = []
    if not key_matches(leaf, private):
        problems.append(f"{key}: the key does not match the certificate (subject {leaf.subject.rfc4514_string()})")
    moment = now or dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= moment < leaf.not_valid_after_utc:
        problems.append(f"{key}: the certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%d} to "
                        f"{leaf.not_valid_after_utc:%Y-%m-%d}, not now")  # fmt: skip
    dns, _ = cert_sans(leaf)
    if not dns:
        problems.append(f"{key}: the certificate names no DNS name (subjectAltName)")
    return problems, list(dns)


def covers(pattern: str, hostname: str) -> bool:
    """A certificate name covers a host name: equal, or a wildcard for exactly one label more."""
    if pattern == hostname:
        return True
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and head != "*" and rest == pattern[2:]
    return False


def hostnames(settings: Mapping[str, Any]) -> list[str]:
    routes = settings["gateway_routes"] or {}
    return sorted({str(h) for route in routes.values() for h in route["hostnames"]})


def certificate_of(settings: Mapping[str, Any]) -> dict[str, str]:
    """Route host name -> the ``gateway_certificates`` name that covers it, or "" for the PKI's certificate."""
    names = {name: user_certificate(name, entry)[1] for name, entry in (settings["gateway_certificates"] or {}).items()}
    return {h: next((name for name, sans in sorted(names.items()) if any(covers(s, h) for s in sans)), "")
            for h in hostnames(settings)}  # fmt: skip


def pki_hostnames(settings: Mapping[str, Any]) -> list[str]:
    return sorted(h for h, certificate in certificate_of(settings).items() if not certificate)


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure but for reading the certificates it is given;
    ``spectra validate`` runs it too)."""
    problems: list[str] = []

    def expect(ok: bool, key: str, expected: str) -> None:
        if not ok:
            problems.append(f"{key}={settings[key]!r}: {expected}")

    image = settings["gateway_image"]
    expect(isinstance(image, str) and bool(TRAEFIK_TAG.search(image)), "gateway_image",
           "a Traefik v3 image tagged with its version, such as docker.io/library/traefik:v3.6.12")  # fmt: skip
    version = settings["gateway_api_version"]
    expect(isinstance(version, str) and bool(re.match(r"^v1\.\d+\.\d+$", version)), "gateway_api_version",
           "a Gateway API release such as v1.6.3")  # fmt: skip
    expect(isinstance(settings["gateway_module_proxy"], str)
           and bool(re.match(r"^https?://[^\s]+$", settings["gateway_module_proxy"])), "gateway_module_proxy",
           "an http(s) URL of a Go module proxy, such as https://proxy.golang.org")  # fmt: skip
    ports = ("gateway_http_port", "gateway_https_port", "gateway_admin_port")
    for key in ports:
        expect(values.is_port(settings[key]), key, "a TCP port (1-65535)")
    if all(values.is_port(settings[key]) for key in ports) and len({settings[key] for key in ports}) < 3:
        problems.append(f"gateway ports {[settings[key] for key in ports]}: http, https and admin ports differ")
    cidrs = settings["gateway_cidrs"]
    expect(isinstance(cidrs, list) and bool(cidrs) and all(values.is_cidr(c) for c in cidrs), "gateway_cidrs",
           "a non-empty list of CIDRs")  # fmt: skip
    problems += _check_rate(settings["gateway_rate_limit"], "gateway_rate_limit")
    headers = settings["gateway_security_headers"]
    expect(isinstance(headers, Mapping) and all(isinstance(k, str) and _HEADER.match(k) and isinstance(v, str)
           and v and "\n" not in v for k, v in headers.items()), "gateway_security_headers",
           "a mapping of response header name to its value")  # fmt: skip
    for key in RESOURCE_KEYS:
        expect(values.is_quantity(settings[key]), key,
               "a Kubernetes quantity such as 100m, 1 or 64Mi")  # fmt: skip
    certificates = settings["gateway_certificates"]
    if not isinstance(certificates, Mapping):
        problems.append(f"gateway_certificates={certificates!r}: a mapping of name to {{'cert': ..., 'key': ...}}")
    else:
        for name, entry in certificates.items():
            problems += user_certificate(name, entry)[0]
    problems += _check_routes(settings)
    if settings["gateway_enabled"] and not settings["kube_router_enabled"] and settings["network_policies_enabled"]:
        problems.append("gateway_enabled: the network policies need kube_router_enabled")
    return problems


# --- what the templates place ------------------------------------------------------------------------------


def edge_hosts(members: Any) -> list[Any]:
    """The hosts the gateway listens on (``spectra.topology.edge_hosts``); an edge host must be a Kubernetes node."""
    not_nodes = [m.name for m in topology.with_role(members, topology.EDGE) if not topology.runs_kubelet(m)]
    if not_nodes:
        raise addon.AddonError(f"edge hosts {not_nodes} run no kubelet (add 'edge' to cluster_node_roles)")
    return topology.edge_hosts(members)


def module_pins() -> dict[str, dict[str, str]]:
    table = yaml.safe_load(MODULES_TABLE.read_text()) or {}
    return {str(module): {str(v): str(h) for v, h in versions.items()} for module, versions in table.items()}


def _module_files(settings: Mapping[str, Any], module: str, version: str, patterns: tuple[str, ...]) -> dict[str, str]:
    pinned = module_pins().get(module, {}).get(version)
    if pinned is None:
        raise addon.AddonError(f"{module}@{version}: no h1 hash pinned in {MODULES_TABLE.name} (add it from "
                               "go.sum or sum.golang.org)")  # fmt: skip
    try:
        data = go_modules.fetch(str(settings["gateway_module_proxy"]), module, version, pinned)
        return go_modules.files(data, module, version, patterns)
    except go_modules.ModuleError as error:
        raise addon.AddonError(f"gateway CRDs: {error}") from None


def traefik_version(settings: Mapping[str, Any]) -> str:
    match = TRAEFIK_TAG.search(str(settings["gateway_image"]))
    assert match is not None  # check() refused it otherwise
    return match.group(1)


def crd_documents(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The CRDs (and the Gateway API's admission policy) out of the two verified module zips."""
    found: list[dict[str, Any]] = []
    sources = (
        (GATEWAY_API_MODULE, str(settings["gateway_api_version"]), GATEWAY_API_FILES),
        (TRAEFIK_MODULE, traefik_version(settings), TRAEFIK_FILES),
    )
    for module, version, patterns in sources:
        for path, text in _module_files(settings, module, version, patterns).items():
            for document in yaml.load_all(text, Loader=_LOADER):
                if isinstance(document, dict) and document.get("kind"):
                    found.append(document)
                elif document is not None:
                    raise addon.AddonError(f"{module}@{version}/{path}: a document that is not a Kubernetes object")
    return found


def crds_context(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"documents": crd_documents(settings)}


def tls_secrets(settings: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Secret name -> its ``tls.crt``/``tls.key`` (and ``ca.crt`` for the PKI's): one per certificate in use."""
    used = certificate_of(settings)
    secrets: dict[str, dict[str, str]] = {}
    for name, entry in sorted((settings["gateway_certificates"] or {}).items()):
        if name in used.values():
            secrets[f"tls-{name}"] = {"tls.crt": str(entry["cert"]), "tls.key": str(entry["key"])}
    names = pki_hostnames(settings)
    if names:
        from deploys.components import pki

        directory, spec = pki.cluster_spec(list(host.state.inventory))
        try:
            issued = gateway_pki.ensure(directory, tuple(names), spec.key_algorithm, spec.ca_days, spec.leaf_days,
                                        spec.renew_before_days)  # fmt: skip
        except PKIError as error:
            raise addon.AddonError(f"PKI {directory}: {error}") from None
        for change in issued.changes:
            logger.info(f"PKI {directory}: {change}")
        secrets[PKI_SECRET] = {"tls.crt": issued.cert_pem.decode(), "tls.key": issued.key_pem.decode(),
                               "ca.crt": issued.ca_pem.decode()}  # fmt: skip
    return secrets


def listener_name(hostname: str) -> str:
    return "https-" + hostname.replace("*", "wildcard").replace(".", "-")


def listeners(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    same = {"namespaces": {"from": "Same"}}
    found: list[dict[str, Any]] = [
        {"name": "http", "protocol": "HTTP", "port": int(settings["gateway_http_port"]), "allowedRoutes": same}
    ]
    for hostname, certificate in sorted(certificate_of(settings).items()):
        secret = f"tls-{certificate}" if certificate else PKI_SECRET
        found.append({
            "name": listener_name(hostname), "protocol": "HTTPS", "port": int(settings["gateway_https_port"]),
            "hostname": hostname, "allowedRoutes": same,
            "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]},
        })  # fmt: skip
    return found


def routes(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per route: the HTTPRoute's parts, its backend and its rate limit."""
    services = settings["application_services"]
    headers = [{"name": k, "value": v} for k, v in sorted(settings["gateway_security_headers"].items())]
    found = []
    for name, route in sorted((settings["gateway_routes"] or {}).items()):
        namespace, service = str(route["to"]).split("/")
        found.append({
            "name": name,
            "hostnames": list(route["hostnames"]),
            "sections": [listener_name(h) for h in route["hostnames"]],
            "path": route.get("path", "/"),
            "namespace": namespace,
            "service": service,
            "port": int(services[route["to"]]["ports"][route["port"]]),
            "headers": headers,
            "rate_limit": dict(rate_limit(settings, route)),
        })  # fmt: skip
    return found


def backend_namespaces(settings: Mapping[str, Any]) -> list[str]:
    return sorted({str(route["to"]).split("/")[0] for route in (settings["gateway_routes"] or {}).values()})


def routed_ports(settings: Mapping[str, Any]) -> dict[str, list[str]]:
    """``application_services`` key -> the port names the gateway reaches (the network policies open them)."""
    found: dict[str, set[str]] = {}
    for route in (settings["gateway_routes"] or {}).values():
        found.setdefault(str(route["to"]), set()).add(str(route["port"]))
    return {target: sorted(ports) for target, ports in sorted(found.items())}


def args(settings: Mapping[str, Any]) -> list[str]:
    admin = int(settings["gateway_admin_port"])
    watched = ",".join([NAMESPACE, *backend_namespaces(settings)])
    return [
        f"--entryPoints.web.address=:{int(settings['gateway_http_port'])}/tcp",
        f"--entryPoints.websecure.address=:{int(settings['gateway_https_port'])}/tcp",
        f"--entryPoints.traefik.address=:{admin}/tcp",
        "--ping=true",
        "--ping.entryPoint=traefik",
        "--metrics.prometheus=true",
        "--metrics.prometheus.entryPoint=traefik",
        "--metrics.prometheus.addRoutersLabels=true",
        "--providers.kubernetesgateway=true",
        f"--providers.kubernetesgateway.namespaces={watched}",
        "--providers.kubernetescrd=true",
        f"--providers.kubernetescrd.namespaces={NAMESPACE}",
        "--providers.kubernetescrd.allowCrossNamespace=false",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=INFO",
        "--log.noColor=true",
        "--accesslog=true",
        "--accesslog.format=json",
    ]


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the templates place (``addon.render_addon`` has run ``check`` first)."""
    edge = edge_hosts(list(host.state.inventory))
    if not edge:
        raise addon.AddonError("gateway_enabled: no host has the edge or workers role to listen on")
    return {
        "namespace": NAMESPACE,
        "name": NAME,
        "gateway": GATEWAY,
        "gateway_class": GATEWAY_CLASS,
        "controller": CONTROLLER,
        "image": settings["gateway_image"],
        "args": args(settings),
        "admin_port": int(settings["gateway_admin_port"]),
        "http_port": int(settings["gateway_http_port"]),
        "https_port": int(settings["gateway_https_port"]),
        "edge_nodes": [str(m.name) for m in edge],
        "listeners": listeners(settings),
        "routes": routes(settings),
        "backend_namespaces": backend_namespaces(settings),
        "tls_secrets": tls_secrets(settings),
        "resources": {key.removeprefix("gateway_"): settings[key] for key in RESOURCE_KEYS},
    }


# --- the served certificates on the first control plane -----------------------------------------------------

CERT_DIR = "gateway"  # under kubernetes_pki_dir
INDEX = "served.list"  # the names of the certificates there: a change of the set changes this file


def cert_dir(settings: Mapping[str, Any]) -> str:
    return f"{str(settings['kubernetes_pki_dir']).rstrip('/')}/{CERT_DIR}"


def served_names(settings: Mapping[str, Any]) -> list[str]:
    """The Secrets' names of the certificates the gateway serves (from the settings alone)."""
    used = certificate_of(settings)
    return sorted({f"tls-{name}" if name else PKI_SECRET for name in used.values()})


def _cert_paths(settings: Mapping[str, Any]) -> list[str]:
    return [f"{cert_dir(settings)}/{name}.crt" for name in served_names(settings)] + [f"{cert_dir(settings)}/{INDEX}"]


def cert_files_should_run(settings: Mapping[str, Any]) -> bool:
    return addon.on_first_control_plane(settings, "gateway_enabled")


def cert_files_facts(settings: Mapping[str, Any]) -> list[FactRequest]:
    return [(ConfigState, {"paths": _cert_paths(settings), "units": []})]


@deploy("Gateway certificates on the host")
def gateway_cert_files() -> None:
    """Each served certificate (no key) under ``<kubernetes_pki_dir>/gateway/``, where the certificate fact and
    the certificate expiry metrics (``certificate_metrics``: ``CertificateExpiringSoon``) find them; a
    certificate no longer served is removed when the index changes."""
    from deploys.settings import Settings

    settings = Settings()
    try:
        secrets = tls_secrets(settings)
    except addon.AddonError as error:
        raise DeployError(f"{host.name}: addon gateway: {error}") from None
    (current,) = prepared_facts(*cert_files_facts(settings))
    directory = cert_dir(settings)
    names = served_names(settings)
    mode = str(settings["pki_cert_mode"])
    files = [ConfigFile(f"{directory}/{name}.crt", secrets[name]["tls.crt"], mode=mode) for name in names]
    files.append(ConfigFile(f"{directory}/{INDEX}", "".join(f"{name}.crt\n" for name in names), mode=mode))
    keep = [arg for name in names for arg in ("!", "-name", QuoteString(f"{name}.crt"))]
    config_files(
        name="The certificates the gateway serves",
        files=files,
        on_change=[
            StringCommand("find", QuoteString(directory), "-maxdepth", "1", "-name", "'*.crt'", *keep, "-delete")
        ],  # fmt: skip
        current=current,
    )


CERT_FILES_COMPONENT = Component(
    name="gateway_cert_files",
    defaults={},
    deploy=gateway_cert_files,
    should_run=cert_files_should_run,
    fact_requests=cert_files_facts,
)


@dataclass(frozen=True)
class _CrdsAddon(addon.Addon):
    """The CRDs' set: on with the gateway."""

    @property
    def switch(self) -> str:
        return "gateway_enabled"


CRDS_ADDON = _CrdsAddon(name="gateway-crds", defaults=DEFAULTS, templates=CRD_TEMPLATES, context=crds_context)
CRDS_COMPONENT = addon.addon_component(CRDS_ADDON)
ADDON = addon.Addon(
    name="gateway",
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    namespace=NAMESPACE,
    pod_security="privileged",  # host network (see the module's docstring); nothing else runs there
    checks=(check,),
)
COMPONENT = addon.addon_component(ADDON)
