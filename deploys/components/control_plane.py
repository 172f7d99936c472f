"""Kubernetes control plane: kube-apiserver, kube-controller-manager and kube-scheduler as systemd services on
the hosts whose ``roles`` include ``control_plane``, with the cluster PKI's files (``deploys/components/pki.py``).

* Binaries: ``deploys/components/kubernetes_binaries.py`` (verified download, ``kubernetes_version``), plus
  kubectl for the health check and the RBAC bootstrap.
* kube-apiserver listens on this host's address only (``--bind-address`` = ``--advertise-address`` =
  ``pki.member_address``), port ``control_plane_apiserver_port``: 127.0.0.1:6443 belongs to the node-local
  balancer in front of every apiserver, where the kubeconfigs point. Flags follow the CIS Kubernetes
  benchmark, section 1.2 (Node,RBAC authorization, NodeRestriction, no profiling, audit log with
  rotation, Secrets encrypted at rest, kubelet serving certificates verified, TLS 1.2+ with strong
  ciphers, service-account issuer and keys, front-proxy request headers). Anonymous requests: the
  structured authentication configuration (``--authentication-config``) lets them in only on the paths of
  ``control_plane_anonymous_paths`` (health endpoints, probed by the balancers without a certificate);
  every other path needs a credential. An empty list turns anonymous access off altogether.
* Secrets encryption key: one for the whole cluster, made once in the PKI directory on the machine running
  pyinfra (``<pki_dir>/secrets-encryption.key``, 0600, beside the CA keys; back it up with them) and never
  regenerated: without it the Secrets stored in etcd cannot be read. A host whose installed configuration
  holds another key (a PKI directory restored without its key file, another cluster's) stops the run
  before anything changes, unless ``control_plane_allow_encryption_key_change``.
* Restarts: a service restarts only when its unit, its binary or one of its configuration files changed,
  or when a PKI file it reads differs from the stamp of sums written at its last (re)start. After a
  (re)start of the apiserver, ``/readyz`` of this host's apiserver must answer ``ok`` within
  ``control_plane_ready_timeout`` seconds (kubectl with admin.conf), else the run fails with its last answer.
* RBAC bootstrap, on the first control-plane host (by name) only: the ClusterRoleBindings the PKI's
  identities need (``kubeadm:cluster-admins`` -> cluster-admin, nodes' client-certificate renewal). They are
  read as admin.conf's identity; only when one is missing (or admin may not read them: the first one is the
  admin's own right) is the break-glass super-admin kubeconfig (``system:masters``) uploaded into a 0700
  directory under /run, used once with ``kubectl apply`` and removed by the same command.
* No-op cost: one remote command for the component (platform, files with the PKI files' sums, units, and
  on the first control plane the bindings read with kubectl).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
from collections.abc import Iterable
from collections.abc import Mapping as _Mapping
from io import BytesIO
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import yaml
from pyinfra import host, inventory, logger
from pyinfra.api import DeployError, FileUploadCommand, OperationError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.components import etcd as etcd_component
from deploys.components import kubernetes_binaries as binaries
from deploys.components import pki as pki_component
from deploys.operations import managed
from deploys.prepare import prepared_facts
from deploys.settings import require, setting
from facts.files import FileStates
from facts.kubernetes import ClusterRoleBindings
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra import pki as pki_lib
from spectra import topology
from spectra.pki.cluster import CLUSTER_ADMINS
from spectra.pki.store import locked

DEFAULTS: dict[str, Any] = {
    "control_plane_enabled": True,  # on control_plane hosts (deploys/cluster.py)
    "control_plane_apiserver_port": 6443,  # kube-apiserver's secure port on this host's address
    "control_plane_pki_dir": "/etc/kubernetes/pki",  # where the PKI component installs certificates and keys
    "control_plane_config_dir": "/etc/kubernetes",  # its kubeconfigs, and the apiserver's config files here
    # etcd client URLs; None: https://<address>:<etcd_client_port> of each host of the inventory group etcd
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
    "control_plane_terminated_pod_gc_threshold": 1000,  # terminated pods kept before the GC deletes them
    "control_plane_apiserver_extra_args": {},  # more kube-apiserver flags: {"flag": "value"} (no leading --)
    "control_plane_controller_manager_extra_args": {},  # same for kube-controller-manager
    "control_plane_scheduler_extra_args": {},  # same for kube-scheduler
    # --shutdown-watch-termination-grace-period: without it a restart waits 60 s for the clients' open watches
    # (kubelets, kube-proxy, controllers, through the balancers) before the apiserver stops; measured in the lab
    "control_plane_shutdown_watch_grace_period": "5s",
    "control_plane_ready_timeout": 180,  # seconds to wait for /readyz after an apiserver (re)start
    "control_plane_rbac_bootstrap": True,  # create the bindings the PKI's identities need (first control plane)
    # let a host's encryption configuration with another key be replaced (the Secrets it encrypted become
    # unreadable): only for a cluster whose key is lost for good
    "control_plane_allow_encryption_key_change": False,
}

TYPES: dict[str, type | tuple[type, ...]] = {"control_plane_etcd_servers": list}
REQUIRED: set[str] = set()

ENCRYPTION_PROVIDERS = ("secretbox", "aescbc")
SERVICES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BINARIES = [*SERVICES, "kubectl"]
# the PKI files (under control_plane_pki_dir) the apiserver reads: it is restarted when one of them changed
APISERVER_PKI_FILES = (
    "ca.crt", "apiserver.crt", "apiserver.key", "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key",
    "apiserver-etcd-client.crt", "apiserver-etcd-client.key", "etcd/ca.crt", "front-proxy-ca.crt",
    "front-proxy-client.crt", "front-proxy-client.key", "sa.pub", "sa.key",
)  # fmt: skip
UNIT_DIR = "/etc/systemd/system"
STAMP_DIR = "/var/lib/spectra-infra"
ENCRYPTION_KEY_FILE = "secrets-encryption.key"  # in the PKI directory on the machine running pyinfra
BOOTSTRAP_DIR = "/run/spectra-rbac-bootstrap"  # tmpfs, 0700, removed by the command that uses it
# ClusterRoleBindings the PKI's identities need: name -> (ClusterRole, Group)
RBAC_BINDINGS: dict[str, tuple[str, str]] = {
    # admin.conf and the apiserver's kubelet client certificate are in this group (spectra/pki/cluster.py)
    CLUSTER_ADMINS: ("cluster-admin", CLUSTER_ADMINS),
    # kubelets renew their own client certificates (CSRs approved by the controller manager)
    "kubeadm:node-autoapprove-certificate-rotation": (
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "system:nodes",
    ),
}


def _pki_setting(key: str) -> Any:
    return setting(key)


def is_control_plane_host() -> bool:
    return "control_plane" in {str(role) for role in (host.data.get("roles") or [])}


def first_control_plane() -> str | None:
    names = sorted(member.name for member in inventory.get_group("control_plane", []))
    return names[0] if names else None


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def etcd_servers() -> list[str]:
    """``https://<address>:<client port>`` of every host of the inventory group ``etcd``, by name."""
    servers = []
    for member in sorted(inventory.get_group("etcd", []), key=lambda member: member.name):
        address = etcd_component.member_address(member)
        require(address is not None, f"etcd member {member.name} has no address (etcd_address or ssh_hostname)")
        port = int(setting("etcd_client_port", member))
        servers.append(f"https://{url_host(str(address))}:{port}")
    return servers


def systemd_arg(text: str) -> str:
    """One ExecStart= argument: systemd's specifiers and variables escaped, quoted when it has spaces."""
    escaped = text.replace("%", "%%").replace("$", "$$")
    if any(char in escaped for char in " \t\"'\\"):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_flags(flags: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """``--flag=value`` arguments, in order, ``extra`` (flag names without ``--``) overriding or adding."""
    merged = dict(flags)
    for key, value in (extra or {}).items():
        name = str(key).lstrip("-")
        require(bool(name) and "=" not in name and " " not in name, f"bad extra flag name {key!r}")
        merged[name] = value
    rendered = []
    for name, value in merged.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | tuple):
            value = ",".join(str(item) for item in value)
        rendered.append(systemd_arg(f"--{name}={value}"))
    return rendered


_KEYS: WeakKeyDictionary[Any, dict[Path, bytes]] = WeakKeyDictionary()


def encryption_key(directory: Path) -> bytes:
    """The cluster's 32-byte Secrets encryption key, from ``directory/secrets-encryption.key`` (base64), made
    there once (0600, under the PKI directory's lock) when missing, never replaced."""
    run = _KEYS.setdefault(host.state, {})
    if directory in run:
        return run[directory]
    path = directory / ENCRYPTION_KEY_FILE
    with locked(directory):
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = None
        if text is None:
            key = secrets.token_bytes(32)
            temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(key).decode() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        else:
            try:
                key = base64.b64decode(text.strip(), validate=True)
            except ValueError:
                key = b""
            if len(key) != 32:
                raise DeployError(
                    f"{path} does not hold a base64 32-byte key: restore it from your backup of {directory} "
                    "(it is never regenerated: the Secrets stored in etcd are encrypted with it)"
                )
            if path.stat().st_mode & 0o777 != 0o600:
                path.chmod(0o600)
    run[directory] = key
    return key


def installed_keys(text: str) -> set[str] | None:
    """The key secrets (base64) of an installed encryption configuration; None when it cannot be read."""
    try:
        document = yaml.safe_load(text)
        found = set()
        for resource in document["resources"]:
            for provider in resource["providers"]:
                for settings in provider.values():
                    for key in (settings or {}).get("keys") or []:
                        found.add(str(key["secret"]))
        return found
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


def check_encryption_key(state: Any, key: bytes, path: str, directory: Path) -> None:
    """Stop when the host's encryption configuration holds keys but not the PKI directory's key: a PKI directory
    restored without its key file (or another cluster's) would otherwise make every stored Secret unreadable."""
    if not state or state.get("content") is None:
        return
    keys = installed_keys(str(state["content"]))
    if keys is not None and base64.b64encode(key).decode() in keys:
        return
    what = "cannot be read" if keys is None else "holds another key"
    message = f"{path} {what} than {directory}/{ENCRYPTION_KEY_FILE}"
    if setting("control_plane_allow_encryption_key_change"):
        logger.warning(f"{host.name}: {message}: replacing it (control_plane_allow_encryption_key_change)")
        return
    raise DeployError(
        f"{host.name}: {message}: the Secrets stored in etcd are encrypted with the installed one. Restore "
        f"{ENCRYPTION_KEY_FILE} from the backup of {directory} (or point pki_dir at this cluster's PKI "
        "directory); set control_plane_allow_encryption_key_change=True only if those Secrets may be lost."
    )


def rbac_manifest(bindings: dict[str, tuple[str, str]]) -> str:
    documents = []
    for name, (role, group) in bindings.items():
        documents.append(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"
            f'metadata:\n  name: "{name}"\n'
            f'roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: "{role}"\n'
            f'subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: Group\n  name: "{group}"\n'
        )
    return "---\n".join(documents)


def missing_bindings(found: dict[str, Any], wanted: dict[str, tuple[str, str]]) -> list[str]:
    """The wanted bindings absent from ``found`` or not granting their role to their group."""
    missing = []
    for name, (role, group) in wanted.items():
        binding = found.get(name)
        if not binding or binding.get("role") != f"ClusterRole/{role}" or f"Group:{group}" not in binding["subjects"]:
            missing.append(name)
    return missing


# $1 kubectl, $2 directory holding super-admin.conf and rbac.yaml, $3 apiserver URL
_APPLY = (
    "trap 'rm -rf \"$2\"' EXIT; "
    '"$1" --kubeconfig "$2/super-admin.conf" --server "$3" --request-timeout=30s apply -f "$2/rbac.yaml"'
)


@operation()
def rbac_bootstrap(
    kubectl: str,
    kubeconfig: str,
    server: str,
    bindings: dict[str, tuple[str, str]],
    super_admin: str,
    current: Any = managed.UNSET,
):
    """
    Create the ClusterRoleBindings ``bindings`` (name -> (ClusterRole, Group)) that are missing, as
    super-admin: its kubeconfig lives on the host only for the one ``kubectl apply`` (a 0700 directory under
    /run, removed by the same command, also on failure).

    + kubeconfig: admin.conf, the identity the bindings are read as (Forbidden: its own binding is missing)
    + server: this host's apiserver (not the node-local balancer, which may not be up yet)
    + current: a ``ClusterRoleBindings`` answer read at prepare time; read again unless it was a full
      answer and nothing changed on the host since
    """
    names = list(bindings)
    prepared = current if isinstance(current, dict) and current.get("state") == "ok" else None
    state = managed.fresh(prepared, ClusterRoleBindings, kubectl=kubectl, kubeconfig=kubeconfig, server=server,
                          names=names)  # fmt: skip
    if state["state"] in ("unavailable", "error"):
        raise OperationError(f"cannot read the cluster's RBAC bindings at {server}: {state['message']}")
    missing = names if state["state"] == "forbidden" else missing_bindings(state["bindings"], bindings)
    if not missing:
        host.noop(f"RBAC bindings exist: {', '.join(names)}")
        return
    manifest = rbac_manifest({name: bindings[name] for name in missing})
    yield StringCommand("rm", "-rf", BOOTSTRAP_DIR, "&&", "install", "-d", "-m", "0700", BOOTSTRAP_DIR)
    yield StringCommand("install", "-m", "0600", "/dev/null", f"{BOOTSTRAP_DIR}/super-admin.conf")
    yield FileUploadCommand(
        BytesIO(super_admin.encode()),
        f"{BOOTSTRAP_DIR}/super-admin.conf",
        remote_temp_filename=f"{BOOTSTRAP_DIR}/super-admin.conf",
    )
    yield FileUploadCommand(
        BytesIO(manifest.encode()),
        f"{BOOTSTRAP_DIR}/rbac.yaml",
        remote_temp_filename=f"{BOOTSTRAP_DIR}/rbac.yaml",
    )
    yield StringCommand(
        "sh", "-c", QuoteString(_APPLY), "spectra-rbac", QuoteString(kubectl), BOOTSTRAP_DIR, QuoteString(server)
    )


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


def _files(directory: str, names: Iterable[str]) -> list[str]:
    return [f"{directory}/{name}" for name in names]


@deploy("Kubernetes control plane", data_defaults=DEFAULTS)
def control_plane() -> None:
    if not setting("control_plane_enabled") or not is_control_plane_host():
        host.noop("control plane: not enabled on this host (control_plane_enabled and the control_plane role)")
        return

    found = pki_component.member_address(host)
    require(found is not None, "control plane: this host has no address (pki_node_address, private_ip, ssh_hostname)")
    address = str(found)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise DeployError(
            f"{host.name}: the apiserver binds to an IP address, not {address!r} (set pki_node_address)"
        ) from None
    require(
        not ip.is_loopback and not ip.is_unspecified,
        f"control plane: the apiserver must not bind to {address}: 127.0.0.1:6443 is the node-local balancer's",
    )
    port = int(setting("control_plane_apiserver_port"))
    servers = setting("control_plane_etcd_servers")
    servers = [str(server) for server in servers] if servers is not None else etcd_servers()
    require(
        bool(servers),
        "control plane: no etcd servers: the inventory group etcd is empty (or set control_plane_etcd_servers)",
    )
    provider = str(setting("control_plane_encryption_provider"))
    require(
        provider in ENCRYPTION_PROVIDERS, f"control_plane_encryption_provider must be one of {ENCRYPTION_PROVIDERS}"
    )
    anonymous_paths = [str(path) for path in setting("control_plane_anonymous_paths") or []]
    require(
        all(path.startswith("/") for path in anonymous_paths),
        f"control_plane_anonymous_paths must be URL paths: {anonymous_paths}",
    )
    timeout = int(setting("control_plane_ready_timeout"))

    pki_dir = str(setting("control_plane_pki_dir")).rstrip("/")
    config_dir = str(setting("control_plane_config_dir")).rstrip("/")
    audit_dir = str(setting("control_plane_audit_log_dir")).rstrip("/")
    cluster_domain = str(_pki_setting("cluster_domain"))
    service_cidr = str(_pki_setting("cluster_service_cidr"))
    sign_csrs = bool(_pki_setting("pki_install_ca_key"))
    issuer = setting("control_plane_service_account_issuer") or f"https://kubernetes.default.svc.{cluster_domain}"

    # the cluster's one encryption key, kept with the CA keys
    directory, spec = pki_component.cluster_spec(pki_component.cluster_hosts())
    key = encryption_key(directory)

    pki = f"{pki_dir}/"
    admin_conf = f"{config_dir}/admin.conf"
    cm_conf = f"{config_dir}/controller-manager.conf"
    scheduler_conf = f"{config_dir}/scheduler.conf"
    encryption_config = f"{config_dir}/encryption-config.yaml"
    audit_policy = f"{config_dir}/audit-policy.yaml"
    authentication_config = f"{config_dir}/authentication-config.yaml"
    credentials = {
        "kube-apiserver": _files(pki_dir, APISERVER_PKI_FILES),
        "kube-controller-manager": [
            cm_conf,
            *_files(pki_dir, ["ca.crt", "sa.key", "front-proxy-ca.crt", *(["ca.key"] if sign_csrs else [])]),
        ],
        "kube-scheduler": [scheduler_conf],
    }
    stamps = {service: f"{STAMP_DIR}/{service}-credentials.sha256" for service in SERVICES}
    units = {service: f"{UNIT_DIR}/{service}.service" for service in SERVICES}
    configs = [encryption_config, audit_policy, authentication_config]
    kubectl = binaries.binary_path("kubectl")
    server = f"https://{url_host(address)}:{port}"
    first = first_control_plane() == host.name
    bootstrap = first and bool(setting("control_plane_rbac_bootstrap"))

    bin_paths, bin_contents, bin_stat_only = binaries.binary_paths(BINARIES)
    credential_paths = sorted({path for paths in credentials.values() for path in paths})
    paths = [*units.values(), *configs, audit_dir, *credential_paths, *bin_paths]
    contents = [*stamps.values(), *bin_contents, encryption_config]
    requests: list[Any] = [
        (Platform, {}),
        (FileStates, managed.snapshot_files_kwargs(paths, contents, bin_stat_only)),
        (SystemdUnits, {"units": [unit_name(service) for service in SERVICES]}),
    ]
    if bootstrap:
        rbac = {"kubectl": kubectl, "kubeconfig": admin_conf, "server": server, "names": list(RBAC_BINDINGS)}
        requests.append((ClusterRoleBindings, rbac))
    _, files, unit_states, *rest = prepared_facts(*requests)

    check_encryption_key(files.get(encryption_config), key, encryption_config, directory)
    installs = binaries.install_binaries(BINARIES, files)

    managed.directory(name="Audit log directory", path=audit_dir, mode="0700", current=files)
    config_ops = [
        managed.template(
            name="Secrets encryption configuration",
            src="etc/kubernetes/encryption-config.yaml.j2",
            dest=encryption_config,
            mode="0600",
            context={"provider": provider, "key": base64.b64encode(key).decode()},
            current=files,
        ),
        managed.template(
            name="Audit policy",
            src="etc/kubernetes/audit-policy.yaml.j2",
            dest=audit_policy,
            mode="0600",
            context={},
            current=files,
        ),
        managed.template(
            name="Authentication configuration",
            src="etc/kubernetes/authentication-config.yaml.j2",
            dest=authentication_config,
            mode="0600",
            context={"anonymous_paths": anonymous_paths},
            current=files,
        ),
    ]

    tls = {
        "tls-min-version": setting("control_plane_tls_min_version"),
        "tls-cipher-suites": list(setting("control_plane_tls_cipher_suites") or []),
    }
    if not tls["tls-cipher-suites"]:
        del tls["tls-cipher-suites"]
    apiserver_flags: dict[str, Any] = {
        "advertise-address": address,
        "bind-address": address,
        "secure-port": port,
        "authentication-config": authentication_config,
        "authorization-mode": "Node,RBAC",
        "enable-admission-plugins": "NodeRestriction",
        "allow-privileged": True,
        "profiling": False,
        "client-ca-file": f"{pki}ca.crt",
        "tls-cert-file": f"{pki}apiserver.crt",
        "tls-private-key-file": f"{pki}apiserver.key",
        **tls,
        "kubelet-certificate-authority": f"{pki}ca.crt",
        "kubelet-client-certificate": f"{pki}apiserver-kubelet-client.crt",
        "kubelet-client-key": f"{pki}apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "etcd-servers": servers,
        "etcd-cafile": f"{pki}etcd/ca.crt",
        "etcd-certfile": f"{pki}apiserver-etcd-client.crt",
        "etcd-keyfile": f"{pki}apiserver-etcd-client.key",
        "encryption-provider-config": encryption_config,
        "service-cluster-ip-range": service_cidr,
        "service-account-issuer": issuer,
        "service-account-key-file": f"{pki}sa.pub",
        "service-account-signing-key-file": f"{pki}sa.key",
        "service-account-lookup": True,
        "requestheader-client-ca-file": f"{pki}front-proxy-ca.crt",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "proxy-client-cert-file": f"{pki}front-proxy-client.crt",
        "proxy-client-key-file": f"{pki}front-proxy-client.key",
        "shutdown-watch-termination-grace-period": setting("control_plane_shutdown_watch_grace_period"),
        "audit-policy-file": audit_policy,
        "audit-log-path": f"{audit_dir}/audit.log",
        "audit-log-maxage": int(setting("control_plane_audit_log_maxage")),
        "audit-log-maxbackup": int(setting("control_plane_audit_log_maxbackup")),
        "audit-log-maxsize": int(setting("control_plane_audit_log_maxsize")),
    }
    controller_manager_flags: dict[str, Any] = {
        "kubeconfig": cm_conf,
        "authentication-kubeconfig": cm_conf,
        "authorization-kubeconfig": cm_conf,
        "bind-address": "127.0.0.1",
        **tls,
        "client-ca-file": f"{pki}ca.crt",
        "requestheader-client-ca-file": f"{pki}front-proxy-ca.crt",
        "cluster-name": spec.name,
        "root-ca-file": f"{pki}ca.crt",
        "service-account-private-key-file": f"{pki}sa.key",
        "use-service-account-credentials": True,
        "service-cluster-ip-range": service_cidr,
        "allocate-node-cidrs": False,
        "controllers": "*,bootstrapsigner,tokencleaner",
        "leader-elect": True,
        "profiling": False,
        "terminated-pod-gc-threshold": int(setting("control_plane_terminated_pod_gc_threshold")),
    }
    if sign_csrs:
        controller_manager_flags["cluster-signing-cert-file"] = f"{pki}ca.crt"
        controller_manager_flags["cluster-signing-key-file"] = f"{pki}ca.key"
    scheduler_flags: dict[str, Any] = {
        "kubeconfig": scheduler_conf,
        "authentication-kubeconfig": scheduler_conf,
        "authorization-kubeconfig": scheduler_conf,
        "bind-address": "127.0.0.1",
        **tls,
        "leader-elect": True,
        "profiling": False,
    }
    flags = {
        "kube-apiserver": render_flags(apiserver_flags, setting("control_plane_apiserver_extra_args")),
        "kube-controller-manager": render_flags(
            controller_manager_flags, setting("control_plane_controller_manager_extra_args")
        ),
        "kube-scheduler": render_flags(scheduler_flags, setting("control_plane_scheduler_extra_args")),
    }
    extra_restart = {"kube-apiserver": config_ops, "kube-controller-manager": [], "kube-scheduler": []}

    services = {}
    new_credentials = {}
    for service in SERVICES:
        unit = managed.template(
            name=f"{service} systemd unit",
            src=f"etc/systemd/system/{service}.service.j2",
            dest=units[service],
            mode="0600",  # CIS 1.1.1-1.1.6: the unit is this control plane's "pod specification"
            context={
                "binary": binaries.binary_path(service),
                "arguments": " \\\n    ".join(flags[service]),
                "audit_dir": audit_dir,
            },
            current=files,
        )
        new_credentials[service] = etcd_component.restart_on_new_credentials(
            name=f"{service} restarted on new PKI files",
            unit=service,
            paths=credentials[service],
            stamp=stamps[service],
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

    apiserver, apiserver_credentials = services["kube-apiserver"], new_credentials["kube-apiserver"]
    wait_ready(
        name="kube-apiserver ready (/readyz)",
        kubectl=kubectl,
        kubeconfig=admin_conf,
        server=server,
        timeout=timeout,
        _if=lambda: apiserver.did_change() or apiserver_credentials.did_change(),
    )
    if bootstrap:
        super_admin = pki_lib.render(pki_component.cluster_pki(directory, spec), "super-admin", server)
        rbac_bootstrap(
            name="RBAC bindings for the cluster's identities",
            kubectl=kubectl,
            kubeconfig=admin_conf,
            server=server,
            bindings=RBAC_BINDINGS,
            super_admin=super_admin,
            current=rest[0],
        )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["control_plane_enabled"]) and topology.has_role(host, topology.CONTROL_PLANE)


COMPONENT = Component(
    name="control_plane",
    defaults=DEFAULTS,
    deploy=control_plane,
    should_run=should_run,
)
