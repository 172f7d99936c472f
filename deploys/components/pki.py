"""Cluster PKI: certificates and kubeconfigs made on the machine running pyinfra, installed per role.

The certificates are made (or loaded) once per run, at prepare time, in the PKI directory on the machine
running pyinfra (``spectra.pki.store``): the CAs must be the same for every host, and their keys never need
to be on a host to issue anything. Each host then gets exactly the files its roles need, uploaded only when
their sha256 differs from what the host has (one batched fact for all paths):

* ``control_plane``: the CA certificates (and the cluster CA key, for the controller-manager's CSR signing,
  ``pki_install_ca_key``), apiserver serving and client certificates, the service-account key pair,
  front-proxy client, ``admin.conf``, ``controller-manager.conf``, ``scheduler.conf``;
* ``etcd``: the etcd CA certificate, this member's server and peer certificates, the healthcheck client;
* every node (roles in ``cluster_node_roles``): the cluster CA, ``kubelet.conf`` (its own client
  certificate), its kubelet serving certificate, ``kube-proxy.conf``.

Certificates and keys go under ``kubernetes_pki_dir``, kubeconfigs under ``kubernetes_config_dir``, with
kubeadm's names (``spectra.pki.layout``, where every component that reads one finds its path). Certificates
name each host at its ``spectra.topology.node_address``. Kubeconfigs point at the node-local balancer
(``apiserver_local_address``) unless ``pki_kubeconfig_server``/``pki_kubeconfig_servers`` say otherwise.

Directories 0700 (the config directory 0755), keys and kubeconfigs 0600, certificates ``pki_cert_mode``, all
root-owned (CIS 1.1.x). A host that already holds a *different* CA stops the run unless
``pki_allow_ca_change``: a PKI directory that was lost and regenerated would otherwise silently replace the
cluster's trust root.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host, logger
from pyinfra.api import DeployError, deploy

from deploys.component import Component
from deploys.operations import managed
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, setting
from facts.certificates import Certificates
from facts.files import FileStates
from spectra import cluster_settings, topology
from spectra import pki as pki_lib
from spectra.pki import layout
from spectra.pki.x509 import KEY_ALGORITHMS, PKIError, PrivateKey, fingerprint, load_cert, new_key
from spectra.values import is_https_url, is_whole

DEFAULTS: dict[str, Any] = {
    "pki_enabled": True,  # on the hosts whose roles need it (control_plane, etcd, cluster_node_roles)
    # PKI directory on the machine running pyinfra, where the CA keys live (mode 0700, keys 0600).
    # None: ~/.local/share/spectra/pki/<cluster_name> ($XDG_DATA_HOME respected). Back it up (README).
    "pki_dir": None,
    "pki_apiserver_sans": [],  # more apiserver SANs: load-balancer address and name, public DNS names
    # apiserver URL in every kubeconfig; None: https://<apiserver_local_address>, the node-local balancer
    "pki_kubeconfig_server": None,
    "pki_kubeconfig_servers": {},  # per-kubeconfig URL (admin, controller-manager, scheduler, kube-proxy, kubelet)
    "pki_key_algorithm": "rsa-2048",  # CA and leaf keys: rsa-2048 (kubeadm's default) or ecdsa-p256
    "pki_ca_days": 3650,  # validity of a new CA; an existing CA is never replaced
    "pki_leaf_days": 365,  # validity of leaf certificates
    "pki_renew_before_days": 30,  # reissue a leaf that expires within this many days
    "pki_install_ca_key": True,  # cluster CA key on control planes (controller-manager signs kubelet CSRs)
    "pki_allow_ca_change": False,  # let a host's installed CA be replaced by the PKI directory's one
    "pki_cert_mode": "0600",  # certificate files on hosts: CIS 1.1.20 and 4.1.7 want 0600 (root reads them all)
}

TYPES: dict[str, type | tuple[type, ...]] = {"pki_dir": str, "pki_kubeconfig_server": str}
REQUIRED: set[str] = set()
CHOICES: dict[str, tuple[Any, ...]] = {"pki_key_algorithm": KEY_ALGORITHMS}

# The PKI's own settings that shape certificates every host shares; with the cluster-wide settings they must
# be the same on every host of the inventory.
SHARED_SETTINGS = ("pki_dir", "pki_apiserver_sans", "pki_key_algorithm", "pki_ca_days", "pki_leaf_days",
                   "pki_renew_before_days")  # fmt: skip
CLUSTER_SETTINGS = (*cluster_settings.CLUSTER_WIDE, *SHARED_SETTINGS)

KEY_MODE = "0600"
_CERT_MODE = re.compile(r"^0?[0-7]{3}$")

# Seams for tests: the time every check is made at, and how keys are made.
utcnow: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
key_factory: Callable[[str], PrivateKey] = new_key

_RUNS: WeakKeyDictionary[Any, dict[tuple[Path, pki_lib.ClusterSpec], pki_lib.Pki]] = WeakKeyDictionary()


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats and rules of the PKI settings (pure: ``spectra validate`` runs it too)."""
    problems = []
    servers = settings["pki_kubeconfig_servers"] or {}
    if not isinstance(servers, Mapping):
        problems.append(f"pki_kubeconfig_servers={servers!r}: a mapping of kubeconfig name -> https:// URL")
        servers = {}
    unknown = sorted(set(servers) - set(layout.KUBECONFIG_FILES))
    if unknown:
        known = ", ".join(layout.KUBECONFIG_FILES)
        problems.append(f"pki_kubeconfig_servers: unknown kubeconfigs {unknown} (known: {known})")
    urls = {"pki_kubeconfig_server": settings["pki_kubeconfig_server"]}
    urls.update({f"pki_kubeconfig_servers[{kind!r}]": url for kind, url in servers.items()})
    for key, url in urls.items():
        if url is not None and not is_https_url(url):
            problems.append(f"{key}={url!r}: an https:// URL such as https://10.0.0.10:6443")
    days = {key: settings[key] for key in ("pki_ca_days", "pki_leaf_days", "pki_renew_before_days")}
    for key, value in days.items():
        if not is_whole(value) or value < 0:
            problems.append(f"{key}={value!r}: a whole number of days")
    if all(is_whole(value) and value >= 0 for value in days.values()):
        if days["pki_renew_before_days"] >= days["pki_leaf_days"]:
            problems.append(
                f"pki_renew_before_days={days['pki_renew_before_days']}: the renewal window must be shorter than "
                f"pki_leaf_days ({days['pki_leaf_days']}), or every run would reissue every certificate"
            )
        if days["pki_ca_days"] <= days["pki_leaf_days"]:
            problems.append(f"pki_ca_days={days['pki_ca_days']}: longer than pki_leaf_days ({days['pki_leaf_days']})")
    sans = settings["pki_apiserver_sans"] or []
    if not isinstance(sans, list | tuple) or not all(isinstance(san, str) and san for san in sans):
        problems.append(f"pki_apiserver_sans={sans!r}: a list of DNS names and IP addresses")
    mode = str(settings["pki_cert_mode"])
    if not _CERT_MODE.match(mode) or int(mode, 8) & 0o133:
        problems.append(f"pki_cert_mode={mode!r}: an octal mode such as 0600 or 0644 (no execute, owner-only write)")
    return problems


def cluster_spec(members: Iterable[Any]) -> tuple[Path, pki_lib.ClusterSpec]:
    """The PKI directory and the cluster description, the same whichever host asks (``members``: the whole
    inventory, also under ``--limit``: certificates name every host)."""
    hosts = topology.by_name(members)
    values: dict[str, Any] = {}
    for key in CLUSTER_SETTINGS:
        seen: dict[str, list[str]] = {}
        for member in hosts:
            seen.setdefault(repr(setting(key, member)), []).append(member.name)
        if len(seen) > 1:
            detail = "; ".join(f"{', '.join(names)}: {value}" for value, names in seen.items())
            raise DeployError(f"{key} must be the same on every host (it shapes shared certificates): {detail}")
        values[key] = setting(key, hosts[0])

    def described(chosen: Iterable[Any]) -> tuple[pki_lib.Member, ...]:
        return tuple(pki_lib.Member(member.name, topology.node_address(member)) for member in chosen)

    name = str(values["cluster_name"])
    spec = pki_lib.ClusterSpec(
        name=name,
        control_plane=described(topology.control_planes(hosts)),
        etcd=described(topology.with_role(hosts, topology.ETCD)),
        nodes=described(topology.kubelet_hosts(hosts)),
        cluster_domain=str(values["cluster_domain"]),
        service_cidr=str(values["cluster_service_cidr"]),
        apiserver_sans=tuple(str(san) for san in values["pki_apiserver_sans"] or []),
        key_algorithm=str(values["pki_key_algorithm"]),
        leaf_days=int(values["pki_leaf_days"]),
        ca_days=int(values["pki_ca_days"]),
        renew_before_days=int(values["pki_renew_before_days"]),
    )
    directory = Path(values["pki_dir"]).expanduser() if values["pki_dir"] else pki_lib.default_pki_dir(name)
    return directory, spec


def cluster_pki(directory: Path, spec: pki_lib.ClusterSpec) -> pki_lib.Pki:
    """The PKI for this run: made or loaded by the first host that asks, then shared by all hosts."""
    run = _RUNS.setdefault(host.state, {})
    if (directory, spec) not in run:
        try:
            result = pki_lib.ensure(directory, spec, now=utcnow(), keys=key_factory)
        except PKIError as error:
            raise DeployError(f"PKI {directory}: {error}") from None
        for change in result.changes:
            logger.info(f"PKI {directory}: {change}")
        for warning in result.warnings:
            logger.warning(f"PKI {directory}: {warning}")
        run[(directory, spec)] = result
    return run[(directory, spec)]


def kubeconfig_servers(settings: Mapping[str, Any]) -> dict[str, str]:
    """The apiserver URL of each kubeconfig: its ``pki_kubeconfig_servers`` entry, else ``pki_kubeconfig_server``,
    else the node-local balancer (``apiserver_local_address``)."""
    default = settings["pki_kubeconfig_server"] or cluster_settings.kubeconfig_server(settings)
    overrides = dict(settings["pki_kubeconfig_servers"] or {})
    return {kind: str(overrides.get(kind, default)) for kind in layout.KUBECONFIG_FILES}


@dataclass(frozen=True)
class RemoteFile:
    path: str
    data: bytes
    mode: str
    ca: str | None = None  # the CA id when this file is a CA certificate (checked before it is replaced)


def host_files(
    pki: pki_lib.Pki, name: str, roles: Iterable[str], is_node: bool, settings: Mapping[str, Any]
) -> tuple[dict[str, str], list[RemoteFile]]:
    """The directories (path -> mode, parents first) and files host ``name`` with ``roles`` gets (``is_node``:
    it runs a kubelet). Pure: no facts."""
    roles = set(roles)
    cert_mode = str(settings["pki_cert_mode"])
    servers = kubeconfig_servers(settings)
    pki_dir = str(settings["kubernetes_pki_dir"])
    files: dict[str, RemoteFile] = {}
    directories = {str(settings["kubernetes_config_dir"]): "0755", pki_dir: "0700"}

    def put(relative: str, data: bytes, mode: str, ca: str | None = None) -> None:
        path = layout.pki_file(settings, relative)
        files[path] = RemoteFile(path, data, mode, ca)

    def pair(relative: str, id: str) -> None:
        put(f"{relative}.crt", pki.cert(id), cert_mode)
        put(f"{relative}.key", pki.key(id), KEY_MODE)

    def conf(kind: str) -> None:
        path = layout.kubeconfig_file(settings, kind)
        files[path] = RemoteFile(path, pki_lib.render(pki, kind, servers[kind], node_name=name).encode(), KEY_MODE)

    if topology.CONTROL_PLANE in roles:
        put("ca.crt", pki.cert("ca"), cert_mode, ca="ca")
        if settings["pki_install_ca_key"]:
            put("ca.key", pki.key("ca"), KEY_MODE)
        put("front-proxy-ca.crt", pki.cert("front-proxy-ca"), cert_mode, ca="front-proxy-ca")
        put("etcd/ca.crt", pki.cert("etcd/ca"), cert_mode, ca="etcd/ca")
        for id in ("apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client"):
            pair(id, id)
        put("sa.key", pki.sa_key_pem, KEY_MODE)
        put("sa.pub", pki.sa_pub_pem, cert_mode)
        for kind in ("admin", "controller-manager", "scheduler"):
            conf(kind)
        directories[layout.pki_file(settings, "etcd")] = "0700"
    if topology.ETCD in roles:
        put("etcd/ca.crt", pki.cert("etcd/ca"), cert_mode, ca="etcd/ca")
        pair("etcd/server", f"etcd/{name}/server")
        pair("etcd/peer", f"etcd/{name}/peer")
        pair("etcd/healthcheck-client", "etcd/healthcheck-client")
        directories[layout.pki_file(settings, "etcd")] = "0700"
    if is_node:
        put("ca.crt", pki.cert("ca"), cert_mode, ca="ca")
        pair("kubelet/kubelet", f"nodes/{name}/kubelet")
        directories[layout.pki_file(settings, "kubelet")] = "0700"
        conf("kubelet")
        conf("kube-proxy")
    if not files:
        return {}, []
    ordered = {path: directories[path] for path in sorted(directories, key=lambda path: (path.count("/"), path))}
    return ordered, sorted(files.values(), key=lambda file: file.path)


def _check_installed_cas(files: list[RemoteFile], installed: dict[str, Any], pki: pki_lib.Pki, allow: bool) -> None:
    for file in files:
        if file.ca is None:
            continue
        state = installed.get(file.path) or {}
        if not state.get("exists"):
            continue
        wanted = fingerprint(load_cert(file.data))
        if state.get("fingerprint") == wanted:
            continue
        message = (
            f"{file.path} holds another CA ({state.get('subject')}, sha256 fingerprint "
            f"{state.get('fingerprint') or state.get('error')}) than {pki.directory}/{file.ca}.crt ({wanted})"
        )
        if allow:
            logger.warning(f"{host.name}: {message}: replacing it (pki_allow_ca_change)")
            continue
        created = pki.authorities[file.ca].created
        hint = (
            f"{file.ca} was just created in {pki.directory}: the PKI directory of this cluster is elsewhere or was "
            "lost. Restore it from its backup (then remove the new one)"
            if created
            else "Point pki_dir at this cluster's PKI directory"
        )
        raise DeployError(
            f"{host.name}: {message}. {hint}, or set pki_allow_ca_change=True to replace the CA on every host "
            "(every certificate and token of the cluster changes)."
        )


def _plan(settings: Mapping[str, Any]) -> tuple[pki_lib.Pki, dict[str, str], list[RemoteFile]]:
    """The run's PKI (made once, whichever host asks first) and what this host gets of it."""
    pki = cluster_pki(*cluster_spec(host.state.inventory))
    directories, files = host_files(pki, host.name, topology.roles(host), topology.runs_kubelet(host), settings)
    return pki, directories, files


def _requests(directories: dict[str, str], files: list[RemoteFile]) -> list[FactRequest]:
    return [
        (FileStates, managed.snapshot_files_kwargs([*directories, *(file.path for file in files)])),
        (Certificates, {"paths": [file.path for file in files if file.ca]}),
    ]


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["pki_enabled"]) and topology.has_role(
        host, topology.CONTROL_PLANE, topology.ETCD, *topology.node_roles(host)
    )


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`cluster_pki_files` reads: the state of every file and directory, the installed CAs."""
    _, directories, files = _plan(settings)
    return _requests(directories, files)


@deploy("Cluster PKI")
def cluster_pki_files() -> None:
    settings = Settings()
    pki, directories, files = _plan(settings)
    current, installed = prepared_facts(*_requests(directories, files))
    _check_installed_cas(files, installed, pki, allow=bool(settings["pki_allow_ca_change"]))

    for path, mode in directories.items():
        managed.directory(name=f"Directory {path}", path=path, mode=mode, current=current)
    for file in files:
        managed.content(name=f"Install {file.path}", dest=file.path, data=file.data, mode=file.mode, current=current)


COMPONENT = Component(
    name="pki",
    defaults=DEFAULTS,
    deploy=cluster_pki_files,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check,),
)
