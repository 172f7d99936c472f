"""etcd: a TLS cluster (client and peer, client certificates required both ways) on the hosts whose
``roles`` include ``etcd``, as a systemd service, health-checked after a (re)start, with snapshots taken by
a systemd timer and the newest ``etcd_snapshot_keep`` kept.

* Binaries: the upstream release tarball ``{base}/v{version}/etcd-v{version}-linux-{arch}.tar.gz`` (the lab
  mirror publishes its own build in the same layout), sha256 from ``etcd_sha256[version][arch]`` checked
  before anything lands (``deploys/operations/download.py``); etcd, etcdctl and etcdutl go to
  ``etcd_bin_dir``. No sum, no install: the deploy stops naming the missing entry.
* Members: every host of the inventory group ``etcd``, by name, at its address (``etcd_address`` host data,
  else ``private_ip``, else ``ssh_hostname``: the order the PKI puts in the certificates' SANs).
* TLS material: paths on the host (``etcd_*_file``), by default where ``deploys/components/pki.py``
  installs them (kubeadm's names). etcd runs as its own user; the root-only keys reach it through systemd
  ``LoadCredential=`` (copied by systemd at start into a directory only the service can read), so the
  PKI files keep their owner and mode. systemd copies them only at start, so etcd is restarted when the
  sha256 of one of them differs from the stamp written at its last (re)start (a reissued certificate).
* Restarted only when its unit file, its binary or its TLS files changed. No-op cost: one remote command
  for the whole component (file states, with the TLS files' sums, and unit states read together); a run
  in which an earlier operation changed the host (the PKI reissuing a certificate) reads the TLS files'
  sums once more when it gets to them.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host, inventory
from pyinfra.api import OperationError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.download import download, download_paths, download_stat_only
from deploys.prepare import prepared_fact, prepared_facts, require, setting
from facts.files import FileStates
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra import topology

PKI = "/etc/kubernetes/pki/etcd"

DEFAULTS: dict[str, Any] = {
    "etcd_enabled": True,  # on the hosts whose roles need it (deploys/cluster.py)
    "etcd_version": "3.6.16",  # upstream release (the 3.6 line Kubernetes 1.36 is tested with)
    # base of the release URLs: {base}/v{version}/etcd-v{version}-linux-{arch}.tar.gz
    "etcd_download_base_url": "https://github.com/etcd-io/etcd/releases/download",
    # sha256 of the release tarballs (the release's SHA256SUMS), per version and arch. Empty: no published
    # sum was at hand when this was written; fill it from upstream's SHA256SUMS (never a computed guess).
    "etcd_sha256": {},
    "etcd_bin_dir": "/usr/local/bin",  # etcd, etcdctl and etcdutl go here
    "etcd_verify_binary": False,  # hash the installed etcd binary on every run instead of trusting its stamp
    "etcd_user": "etcd",  # system user (and group) etcd runs as
    "etcd_data_dir": "/var/lib/etcd",  # member data (mode 0700, owned by etcd_user)
    "etcd_address": None,  # this member's address (host data); None: private_ip, else ssh_hostname
    "etcd_metrics_port": 2381,  # plain-HTTP /metrics and /health on 127.0.0.1 only
    "etcd_cluster_token": "spectra-etcd",  # --initial-cluster-token: keeps separate clusters apart
    "etcd_ca_file": f"{PKI}/ca.crt",  # etcd CA: verifies client and peer certificates
    "etcd_cert_file": f"{PKI}/server.crt",  # this member's serving certificate (its name and address as SANs)
    "etcd_key_file": f"{PKI}/server.key",  # ... and its key
    "etcd_peer_cert_file": f"{PKI}/peer.crt",  # this member's peer certificate (server and client use)
    "etcd_peer_key_file": f"{PKI}/peer.key",  # ... and its key
    "etcd_healthcheck_cert_file": f"{PKI}/healthcheck-client.crt",  # client cert for health checks, snapshots
    "etcd_healthcheck_key_file": f"{PKI}/healthcheck-client.key",  # ... and its key
    "etcd_health_timeout": 30,  # seconds to wait for `etcdctl endpoint health` after a (re)start
    "etcd_snapshot_enabled": True,  # take snapshots on a timer
    "etcd_snapshot_dir": "/var/backups/etcd",  # where snapshots go (mode 0700, owned by etcd_user)
    "etcd_snapshot_schedule": "*-*-* 03:00:00",  # systemd OnCalendar= of the snapshot timer
    "etcd_snapshot_keep": 7,  # newest snapshots kept; older ones are deleted after each snapshot
}

TYPES: dict[str, type | tuple[type, ...]] = {"etcd_address": str}
REQUIRED: set[str] = set()

COMMANDS = ("etcd", "etcdctl", "etcdutl")
UNIT = "/etc/systemd/system/etcd.service"
SNAPSHOT_SERVICE = "/etc/systemd/system/etcd-snapshot.service"
SNAPSHOT_TIMER = "/etc/systemd/system/etcd-snapshot.timer"
SNAPSHOT_SCRIPT = "/usr/local/sbin/etcd-snapshot"
# sha256 of the TLS files etcd was last (re)started with
CREDENTIALS_STAMP = "/var/lib/spectra-infra/etcd-credentials.sha256"


def tarball_url(base: str, version: str, arch: str) -> str:
    return f"{base.rstrip('/')}/v{version}/etcd-v{version}-linux-{arch}.tar.gz"


def member_address(member: Any) -> str | None:
    """A member's address: ``etcd_address``, ``private_ip``, then ``ssh_hostname`` (the PKI's SAN order)."""
    for key in ("etcd_address", "private_ip", "ssh_hostname"):
        value = member.data.get(key)
        if value:
            return str(value)
    return None


def members() -> list[tuple[str, str]]:
    """(name, address) of every host in the inventory group ``etcd``, sorted by name."""
    found = []
    for member in inventory.get_group("etcd", []):
        address = member_address(member)
        require(address is not None, f"etcd member {member.name} has no address (etcd_address or ssh_hostname)")
        found.append((member.name, str(address)))
    return sorted(found)


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def initial_cluster(peers: list[tuple[str, str]], peer_port: int) -> str:
    """``--initial-cluster``: ``name=https://address:peer_port`` for each member, comma-separated."""
    return ",".join(f"{name}=https://{url_host(address)}:{peer_port}" for name, address in peers)


def is_etcd_host() -> bool:
    return "etcd" in {str(role) for role in (host.data.get("roles") or [])}


def credentials_stamp(sums: dict[str, str | None]) -> str:
    return "".join(f"{sums[path]}  {path}\n" for path in sorted(sums))


@operation()
def restart_on_new_credentials(unit: str, paths: list[str], stamp: str, current: Any = managed.UNSET):
    """
    Restart ``unit`` (if it runs: ``systemctl try-restart``) when the sha256 of one of ``paths`` differs
    from ``stamp``, then record the sums. systemd hands ``LoadCredential=`` files over only at start.

    + current: a ``FileStates`` snapshot holding ``paths`` (hashed) and ``stamp`` (content), read at prepare;
      read again here when an earlier operation of the run changed the host (the PKI may just have
      reissued a certificate)
    """
    wanted = sorted(set(paths))
    states = managed.fresh(current, FileStates, paths=[*wanted, stamp], contents=[stamp])
    sums = {path: (states.get(path) or {}).get("sha256") for path in wanted}
    missing = [path for path, digest in sums.items() if not digest]
    if missing:
        raise OperationError(f"{unit}: TLS files missing on the host: {', '.join(missing)} (install the PKI first)")
    text = credentials_stamp(sums)
    if ((states.get(stamp) or {}).get("content") or "") == text:
        host.noop(f"{unit}: TLS files unchanged since its last start")
        return
    yield StringCommand("systemctl", "try-restart", QuoteString(unit_name(unit)))
    yield from managed.content._inner(stamp, text, mode="0644", current=states.get(stamp))


@operation(is_idempotent=False)
def health_check(etcdctl: str, endpoint: str, ca: str, cert: str, key: str, timeout: int = 30):
    """``etcdctl endpoint health`` over TLS with the health-check client certificate, retried once a
    second for ``timeout`` seconds; fails with etcdctl's last answer."""
    check = StringCommand(
        QuoteString(etcdctl), "--endpoints", QuoteString(endpoint), "--cacert", QuoteString(ca),
        "--cert", QuoteString(cert), "--key", QuoteString(key), "--command-timeout=3s", "endpoint", "health",
    )  # fmt: skip
    yield StringCommand(
        "i=0;", "until", "out=$(", check, "2>&1);", "do",
        "i=$((i+1));", "if", "[", "$i", "-ge", str(int(timeout)), "];", "then",
        'echo "etcd not healthy after', str(int(timeout)), 's: $out"', ">&2;", "exit", "1;", "fi;",
        "sleep", "1;", "done;", 'echo "$out"',
    )  # fmt: skip


@deploy("etcd", data_defaults=DEFAULTS)
def etcd() -> None:
    if not setting("etcd_enabled") or not is_etcd_host():
        host.noop("etcd: not enabled on this host (etcd_enabled and the etcd role)")
        return

    version = str(setting("etcd_version"))
    user = str(setting("etcd_user"))
    bin_dir = str(setting("etcd_bin_dir")).rstrip("/")
    data_dir = str(setting("etcd_data_dir"))
    snapshot_enabled = bool(setting("etcd_snapshot_enabled"))
    snapshot_dir = str(setting("etcd_snapshot_dir"))
    keep = int(setting("etcd_snapshot_keep"))
    require(keep >= 1, f"etcd_snapshot_keep must be at least 1, got {keep}")
    client_port, peer_port = int(setting("etcd_client_port")), int(setting("etcd_peer_port"))
    found = member_address(host)
    require(found is not None, "etcd: this host has no address (etcd_address, private_ip or ssh_hostname)")
    address = str(found)
    peers = members()
    require(
        any(name == host.name for name, _ in peers),
        f"etcd: host has the etcd role but is not in the inventory group etcd ({[n for n, _ in peers]})",
    )
    arch = prepared_fact(Platform).get("arch") or "unknown"
    sums = (setting("etcd_sha256") or {}).get(version) or {}
    require(
        bool(sums.get(arch)),
        f"no sha256 for etcd {version} on {arch}: fill etcd_sha256[{version!r}][{arch!r}] with the published "
        f"sum (SHA256SUMS of the v{version} release); nothing is installed without it",
    )

    binaries = {command: f"{bin_dir}/{command}" for command in COMMANDS}
    verify = bool(setting("etcd_verify_binary"))
    unit_files = [UNIT] + ([SNAPSHOT_SERVICE, SNAPSHOT_TIMER, SNAPSHOT_SCRIPT] if snapshot_enabled else [])
    ca = str(setting("etcd_ca_file"))
    credentials = [
        ("ca.crt", ca),
        ("server.crt", str(setting("etcd_cert_file"))),
        ("server.key", str(setting("etcd_key_file"))),
        ("peer.crt", str(setting("etcd_peer_cert_file"))),
        ("peer.key", str(setting("etcd_peer_key_file"))),
    ]
    credential_paths = sorted({path for _, path in credentials})
    paths = [data_dir, *unit_files, *credential_paths] + ([snapshot_dir] if snapshot_enabled else [])
    contents = ["/etc/passwd", CREDENTIALS_STAMP]
    stat_only: list[str] = []
    for binary in binaries.values():
        paths += download_paths(binary)
        contents.append(download_paths(binary)[1])
        stat_only += download_stat_only(binary, verify=verify)
    timer = unit_name("etcd-snapshot.timer")
    files, units = prepared_facts(
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name("etcd"), timer]}),
    )

    passwd = (files.get("/etc/passwd") or {}).get("content")
    managed.system_user(name=f"System user {user}", username=user, home=data_dir, passwd=passwd)

    url = tarball_url(str(setting("etcd_download_base_url")), version, arch)
    installs = {
        command: download(
            name=f"Install {command} {version}",
            url=url,
            dest=path,
            sha256=sums[arch],
            extract=f"etcd-v{version}-linux-{arch}/{command}",
            current=files,
        )
        for command, path in binaries.items()
    }
    managed.directory(name="etcd data directory", path=data_dir, mode="0700", user=user, group=user, current=files)

    hc_cert, hc_key = str(setting("etcd_healthcheck_cert_file")), str(setting("etcd_healthcheck_key_file"))
    context = {
        "name": host.name,
        "user": user,
        "binary": binaries["etcd"],
        "data_dir": data_dir,
        "client_urls": [f"https://{url_host(address)}:{client_port}", f"https://127.0.0.1:{client_port}"],
        "advertise_client_url": f"https://{url_host(address)}:{client_port}",
        "peer_url": f"https://{url_host(address)}:{peer_port}",
        "metrics_url": f"http://127.0.0.1:{int(setting('etcd_metrics_port'))}",
        "initial_cluster": initial_cluster(peers, peer_port),
        "cluster_token": setting("etcd_cluster_token"),
        "credentials": credentials,
    }
    unit = managed.template(
        name="etcd systemd unit",
        src="etc/systemd/system/etcd.service.j2",
        dest=UNIT,
        mode="0600",  # CIS 1.1.7: the unit is this member's "pod specification"
        context=context,
        current=files,
    )
    unit_changes = [unit]

    if snapshot_enabled:
        managed.directory(
            name="etcd snapshot directory", path=snapshot_dir, mode="0700", user=user, group=user, current=files
        )
        managed.template(
            name="etcd snapshot script",
            src="usr/local/sbin/etcd-snapshot.j2",
            dest=SNAPSHOT_SCRIPT,
            mode="0755",
            context={  # shell-quoted here: the script is plain sh
                "etcdctl_q": shlex.quote(binaries["etcdctl"]),
                "endpoint_q": shlex.quote(f"https://127.0.0.1:{client_port}"),
                "snapshot_dir": snapshot_dir,
                "snapshot_dir_q": shlex.quote(snapshot_dir),
                "keep": keep,
            },
            current=files,
        )
        snapshot_context = {
            "user": user,
            "script": SNAPSHOT_SCRIPT,
            "snapshot_dir": snapshot_dir,
            "schedule": setting("etcd_snapshot_schedule"),
            "credentials": [("ca.crt", ca), ("client.crt", hc_cert), ("client.key", hc_key)],
        }
        for kind, dest in (("service", SNAPSHOT_SERVICE), ("timer", SNAPSHOT_TIMER)):
            unit_changes.append(
                managed.template(
                    name=f"etcd snapshot {kind}",
                    src=f"etc/systemd/system/etcd-snapshot.{kind}.j2",
                    dest=dest,
                    context=snapshot_context,
                    current=files,
                )
            )

    new_credentials = restart_on_new_credentials(
        name="etcd restarted on new TLS files",
        unit="etcd",
        paths=credential_paths,
        stamp=CREDENTIALS_STAMP,
        current=files,
    )
    reload = any(op.will_change for op in unit_changes)
    service = managed.service(
        name="etcd running and enabled",
        unit="etcd",
        restarted=unit.will_change or installs["etcd"].will_change,
        daemon_reload=reload,
        current=units,
    )
    health_check(
        name="etcd endpoint health",
        etcdctl=binaries["etcdctl"],
        endpoint=f"https://127.0.0.1:{client_port}",
        ca=ca,
        cert=hc_cert,
        key=hc_key,
        timeout=int(setting("etcd_health_timeout")),
        _if=lambda: service.did_change() or new_credentials.did_change(),
    )
    if snapshot_enabled:
        managed.service(name="etcd snapshot timer running and enabled", unit=timer, current=units)


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["etcd_enabled"]) and topology.has_role(host, topology.ETCD)


COMPONENT = Component(
    name="etcd",
    defaults=DEFAULTS,
    deploy=etcd,
    should_run=should_run,
)
