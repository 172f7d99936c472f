"""Cluster PKI: certificates and kubeconfigs made on the machine running pyinfra, installed per role.

The certificates are made (or loaded) once per run, at prepare time, in the PKI directory on the machine
running pyinfra (``spectra.pki.store``): the CAs must be the same for every host, and their keys never need
to be on a host to issue anything. Each host then gets exactly the files its roles need, uploaded only when
their sha256 differs from what the host has (one batched fact for all paths):

* ``control_plane``: the CA certificates (and the cluster CA key, for the controller-manager's CSR signing,
  ``pki_install_ca_key``), apiserver serving and client certificates, the service-account key pair,
  front-proxy client, ``admin.conf``, ``controller-manager.conf``, ``scheduler.conf``;
* ``etcd``: the etcd CA certificate, this member's server and peer certificates, the healthcheck client;
* every node (roles in ``pki_node_roles``): the cluster CA, ``kubelet.conf`` (its own client certificate),
  its kubelet serving certificate, ``kube-proxy.conf``.

Directories 0700 (``/etc/kubernetes`` 0755), keys and kubeconfigs 0600, certificates ``pki_cert_mode``, all
root-owned (CIS 1.1.x). A host that already holds a *different* CA stops the run unless
``pki_allow_ca_change``: a PKI directory that was lost and regenerated would otherwise silently replace the
cluster's trust root.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Callable, Iterable
from collections.abc import Mapping as _Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host, logger
from pyinfra.api import DeployError, deploy

from deploys.component import Component
from deploys.operations import managed
from deploys.prepare import prepared_facts
from deploys.settings import owners, require, setting
from facts.certificates import Certificates
from facts.files import FileStates
from spectra import pki as pki_lib
from spectra import topology
from spectra.pki.kubeconfig import kubeconfig_specs
from spectra.pki.x509 import KEY_ALGORITHMS, PKIError, PrivateKey, fingerprint, load_cert, new_key

DEFAULTS: dict[str, Any] = {
    "pki_enabled": True,  # on the hosts whose roles need it (deploys/cluster.py)
    # PKI directory on the machine running pyinfra, where the CA keys live (mode 0700, keys 0600).
    # None: ~/.local/share/spectra/pki/<cluster_name> ($XDG_DATA_HOME respected). Back it up (README).
    "pki_dir": None,
    "pki_apiserver_sans": [],  # more apiserver SANs: load-balancer address and name, public DNS names
    "pki_kubeconfig_server": "https://127.0.0.1:6443",  # apiserver URL in kubeconfigs: the node-local balancer
    "pki_kubeconfig_servers": {},  # per-kubeconfig URL (admin, controller-manager, scheduler, kube-proxy, kubelet)
    "pki_key_algorithm": "rsa-2048",  # CA and leaf keys: rsa-2048 (kubeadm's default) or ecdsa-p256
    "pki_ca_days": 3650,  # validity of a new CA; an existing CA is never replaced
    "pki_leaf_days": 365,  # validity of leaf certificates
    "pki_renew_before_days": 30,  # reissue a leaf that expires within this many days
    "pki_node_roles": ["control_plane", "workers"],  # hosts with one of these roles run a kubelet
    # this host's address in its certificates; None: host data private_ip, else ssh_hostname
    "pki_node_address": None,
    "pki_install_ca_key": True,  # cluster CA key on control planes (controller-manager signs kubelet CSRs)
    "pki_allow_ca_change": False,  # let a host's installed CA be replaced by the PKI directory's one
    "pki_remote_dir": "/etc/kubernetes/pki",  # certificates and keys on the hosts
    "pki_kubeconfig_dir": "/etc/kubernetes",  # kubeconfigs on the hosts
    "pki_cert_mode": "0600",  # certificate files on hosts: CIS 1.1.20 and 4.1.7 want 0600 (root reads them all)
}

TYPES: dict[str, type | tuple[type, ...]] = {"pki_dir": str, "pki_node_address": str}
REQUIRED: set[str] = set()

# Settings that shape certificates every host shares: they must be the same on every host of the inventory.
CLUSTER_SETTINGS = (
    "pki_dir",
    "cluster_domain",
    "cluster_service_cidr",
    "pki_apiserver_sans",
    "pki_key_algorithm",
    "pki_ca_days",
    "pki_leaf_days",
    "pki_renew_before_days",
    "pki_node_roles",
)

KEY_MODE = "0600"

# Seams for tests: the time every check is made at, and how keys are made.
utcnow: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
key_factory: Callable[[str], PrivateKey] = new_key

_RUNS: WeakKeyDictionary[Any, dict[tuple[Path, pki_lib.ClusterSpec], pki_lib.Pki]] = WeakKeyDictionary()


def cluster_hosts() -> list[Any]:
    """Every host of the inventory (with ``--limit`` too: certificates name the whole cluster)."""
    return list(host.state.inventory)


def _get(member: Any, key: str) -> Any:
    return setting(key, member)


def member_address(member: Any) -> str | None:
    """The address a host is reached at inside the cluster: ``pki_node_address``, ``private_ip``, ``ssh_hostname``."""
    for key in ("pki_node_address", "private_ip", "ssh_hostname"):
        value = member.data.get(key)
        if value:
            return str(value)
    return None


def _roles(member: Any) -> set[str]:
    return {str(role) for role in (member.data.get("roles") or [])}


def cluster_spec(members: Iterable[Any]) -> tuple[Path, pki_lib.ClusterSpec]:
    """The PKI directory and the cluster description, the same whichever host asks."""
    hosts = sorted(members, key=lambda member: member.name)
    values: dict[str, Any] = {}
    for key in CLUSTER_SETTINGS:
        seen: dict[str, list[str]] = {}
        for member in hosts:
            seen.setdefault(repr(_get(member, key)), []).append(member.name)
        if len(seen) > 1:
            detail = "; ".join(f"{', '.join(names)}: {value}" for value, names in seen.items())
            raise DeployError(f"{key} must be the same on every host (it shapes shared certificates): {detail}")
        values[key] = _get(hosts[0], key) if hosts else owners()[key].default
    names = {str(member.data.get("cluster_name") or "kubernetes") for member in hosts}
    if len(names) > 1:
        raise DeployError(f"one inventory, one cluster: hosts have cluster_name {sorted(names)}")
    name = names.pop() if names else "kubernetes"
    node_roles = set(values["pki_node_roles"] or [])

    def members_with(roles: set[str]) -> tuple[pki_lib.Member, ...]:
        return tuple(pki_lib.Member(m.name, member_address(m)) for m in hosts if _roles(m) & roles)

    spec = pki_lib.ClusterSpec(
        name=name,
        control_plane=members_with({"control_plane"}),
        etcd=members_with({"etcd"}),
        nodes=members_with(node_roles),
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


@dataclass(frozen=True)
class RemoteFile:
    path: str
    data: bytes
    mode: str
    ca: str | None = None  # the CA id when this file is a CA certificate (checked before it is replaced)


def host_files(
    pki: pki_lib.Pki,
    name: str,
    roles: Iterable[str],
    node_roles: Iterable[str],
    remote_dir: str,
    kubeconfig_dir: str,
    servers: dict[str, str],
    install_ca_key: bool,
    cert_mode: str,
) -> tuple[dict[str, str], list[RemoteFile]]:
    """The directories (path -> mode, parents first) and files a host with ``roles`` gets (pure: no facts)."""
    roles = set(roles)
    files: dict[str, RemoteFile] = {}
    directories = {kubeconfig_dir: "0755", remote_dir: "0700"}

    def put(relative: str, data: bytes, mode: str, ca: str | None = None) -> None:
        path = posixpath.join(remote_dir, relative)
        files[path] = RemoteFile(path, data, mode, ca)

    def pair(relative: str, id: str) -> None:
        put(f"{relative}.crt", pki.cert(id), cert_mode)
        put(f"{relative}.key", pki.key(id), KEY_MODE)

    def conf(kind: str) -> None:
        spec = kubeconfig_specs(name)[kind]
        text = pki_lib.render(pki, kind, servers[kind], node_name=name)
        path = posixpath.join(kubeconfig_dir, spec.file)
        files[path] = RemoteFile(path, text.encode(), KEY_MODE)

    if "control_plane" in roles:
        put("ca.crt", pki.cert("ca"), cert_mode, ca="ca")
        if install_ca_key:
            put("ca.key", pki.key("ca"), KEY_MODE)
        put("front-proxy-ca.crt", pki.cert("front-proxy-ca"), cert_mode, ca="front-proxy-ca")
        put("etcd/ca.crt", pki.cert("etcd/ca"), cert_mode, ca="etcd/ca")
        for id in ("apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client"):
            pair(id, id)
        put("sa.key", pki.sa_key_pem, KEY_MODE)
        put("sa.pub", pki.sa_pub_pem, cert_mode)
        for kind in ("admin", "controller-manager", "scheduler"):
            conf(kind)
        directories[posixpath.join(remote_dir, "etcd")] = "0700"
    if "etcd" in roles:
        put("etcd/ca.crt", pki.cert("etcd/ca"), cert_mode, ca="etcd/ca")
        pair("etcd/server", f"etcd/{name}/server")
        pair("etcd/peer", f"etcd/{name}/peer")
        pair("etcd/healthcheck-client", "etcd/healthcheck-client")
        directories[posixpath.join(remote_dir, "etcd")] = "0700"
    if roles & set(node_roles):
        put("ca.crt", pki.cert("ca"), cert_mode, ca="ca")
        pair("kubelet/kubelet", f"nodes/{name}/kubelet")
        directories[posixpath.join(remote_dir, "kubelet")] = "0700"
        conf("kubelet")
        conf("kube-proxy")
    if not files:
        return {}, []
    ordered = {path: directories[path] for path in sorted(directories, key=lambda path: (path.count("/"), path))}
    return ordered, sorted(files.values(), key=lambda file: file.path)


def _check_installed_cas(files: list[RemoteFile], installed: dict[str, Any], pki: pki_lib.Pki) -> None:
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
        if setting("pki_allow_ca_change"):
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


@deploy("Cluster PKI", data_defaults=DEFAULTS)
def cluster_pki_files() -> None:
    if not setting("pki_enabled"):
        host.noop("cluster PKI disabled (pki_enabled=False)")
        return
    require(setting("pki_key_algorithm") in KEY_ALGORITHMS, f"pki_key_algorithm must be one of {KEY_ALGORITHMS}")
    roles = _roles(host)
    node_roles = list(setting("pki_node_roles") or [])
    if not roles & {"control_plane", "etcd", *node_roles}:
        host.noop(f"no cluster role ({', '.join(sorted(roles)) or 'none'}): no certificates")
        return
    directory, spec = cluster_spec(cluster_hosts())
    pki = cluster_pki(directory, spec)
    default_server = str(setting("pki_kubeconfig_server"))
    overrides = dict(setting("pki_kubeconfig_servers") or {})
    unknown = set(overrides) - set(kubeconfig_specs(host.name))
    require(not unknown, f"pki_kubeconfig_servers: unknown kubeconfigs {sorted(unknown)}")
    servers = {kind: str(overrides.get(kind, default_server)) for kind in kubeconfig_specs(host.name)}
    for kind, url in servers.items():
        require(url.startswith("https://"), f"kubeconfig server for {kind} must be an https:// URL, not {url!r}")

    directories, files = host_files(
        pki,
        host.name,
        roles,
        node_roles,
        remote_dir=str(setting("pki_remote_dir")).rstrip("/"),
        kubeconfig_dir=str(setting("pki_kubeconfig_dir")).rstrip("/"),
        servers=servers,
        install_ca_key=bool(setting("pki_install_ca_key")),
        cert_mode=str(setting("pki_cert_mode")),
    )
    ca_paths = [file.path for file in files if file.ca]
    current, installed = prepared_facts(
        (FileStates, managed.snapshot_files_kwargs([*directories, *(file.path for file in files)])),
        (Certificates, {"paths": ca_paths}),
    )
    _check_installed_cas(files, installed, pki)

    for path, mode in directories.items():
        managed.directory(name=f"Directory {path}", path=path, mode=mode, current=current)
    for file in files:
        managed.content(name=f"Install {file.path}", dest=file.path, data=file.data, mode=file.mode, current=current)


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["pki_enabled"]) and topology.has_role(
        host, topology.CONTROL_PLANE, topology.ETCD, *topology.node_roles(host)
    )


COMPONENT = Component(
    name="pki",
    defaults=DEFAULTS,
    deploy=cluster_pki_files,
    should_run=should_run,
)
