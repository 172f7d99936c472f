"""etcd: a TLS cluster (client and peer, client certificates required both ways) on the hosts whose
``roles`` include ``etcd``, as a systemd service, health-checked after a (re)start, with snapshots taken by
a systemd timer and the newest ``etcd_snapshot_keep`` kept.

* Binaries: the upstream release tarball ``{base}/v{version}/etcd-v{version}-linux-{arch}.tar.gz`` (the lab
  mirror publishes its own build in the same layout), sha256 from ``etcd_sha256[version][arch]`` checked
  before anything lands (``deploys/operations/download.py``); etcd, etcdctl and etcdutl go to
  ``etcd_bin_dir``. No sum, no install: the deploy stops naming the missing entry.
* Members: every host of the inventory with the ``etcd`` role, by name, at its ``spectra.topology``
  address (the one the PKI puts in its certificates); this member listens on its own address, which must
  be an IP. Ports: the cluster settings ``etcd_client_port`` and ``etcd_peer_port``.
* TLS material: paths on the host (``etcd_*_file``), by default where ``deploys/components/pki.py``
  installs them (``spectra.pki.layout``, kubeadm's names). etcd runs as its own user; the root-only keys
  reach it through systemd ``LoadCredential=`` (copied by systemd at start into a directory only the service
  can read), so the PKI files keep their owner and mode. systemd copies them only at start, so etcd is
  restarted when the sha256 of one of them differs from the stamp written at its last (re)start
  (``deploys/components/service_credentials.py``).
* Restarted only when its unit file, its binary or its TLS files changed. No-op cost: nothing of its own
  (platform, file states with the TLS files' sums and unit states are read with the other components'
  facts); a run in which an earlier operation changed the host (the PKI reissuing a certificate) reads the
  TLS files' sums once more when it gets to them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.components.service_credentials import restart_on_new_credentials
from deploys.operations import managed
from deploys.operations.download import download, download_paths, download_stat_only
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, require
from facts.files import FileStates
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra import cluster_settings, topology
from spectra.pki import layout
from spectra.values import is_whole

DEFAULTS: dict[str, Any] = {
    "etcd_enabled": True,  # on the hosts with the etcd role
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
    "etcd_metrics_port": 2381,  # plain-HTTP /metrics and /health on 127.0.0.1 only
    "etcd_cluster_token": "spectra-etcd",  # --initial-cluster-token: keeps separate clusters apart
    # TLS files; None: where the PKI installs them, under kubernetes_pki_dir (TLS_FILES)
    "etcd_ca_file": None,  # etcd CA: verifies client and peer certificates
    "etcd_cert_file": None,  # this member's serving certificate (its name and address as SANs)
    "etcd_key_file": None,  # ... and its key
    "etcd_peer_cert_file": None,  # this member's peer certificate (server and client use)
    "etcd_peer_key_file": None,  # ... and its key
    "etcd_healthcheck_cert_file": None,  # client certificate for health checks and snapshots
    "etcd_healthcheck_key_file": None,  # ... and its key
    "etcd_health_timeout": 30,  # seconds to wait for `etcdctl endpoint health` after a (re)start
    "etcd_snapshot_enabled": True,  # take snapshots on a timer
    "etcd_snapshot_dir": "/var/backups/etcd",  # where snapshots go (mode 0700, owned by etcd_user)
    "etcd_snapshot_schedule": "*-*-* 03:00:00",  # systemd OnCalendar= of the snapshot timer
    "etcd_snapshot_keep": 7,  # newest snapshots kept; older ones are deleted after each snapshot
}

# The PKI's file (under kubernetes_pki_dir) each TLS setting defaults to.
TLS_FILES = {
    "etcd_ca_file": "etcd/ca.crt",
    "etcd_cert_file": "etcd/server.crt",
    "etcd_key_file": "etcd/server.key",
    "etcd_peer_cert_file": "etcd/peer.crt",
    "etcd_peer_key_file": "etcd/peer.key",
    "etcd_healthcheck_cert_file": "etcd/healthcheck-client.crt",
    "etcd_healthcheck_key_file": "etcd/healthcheck-client.key",
}
TYPES: dict[str, type | tuple[type, ...]] = dict.fromkeys(TLS_FILES, str)
REQUIRED: set[str] = set()

COMMANDS = ("etcd", "etcdctl", "etcdutl")
UNIT = "/etc/systemd/system/etcd.service"
SNAPSHOT_SERVICE = "/etc/systemd/system/etcd-snapshot.service"
SNAPSHOT_TIMER = "/etc/systemd/system/etcd-snapshot.timer"
SNAPSHOT_SCRIPT = "/usr/local/sbin/etcd-snapshot"
# sha256 of the TLS files etcd was last (re)started with
CREDENTIALS_STAMP = "/var/lib/spectra-infra/etcd-credentials.sha256"

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_TOKEN = re.compile(r"^[A-Za-z0-9._-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats etcd's settings must have (pure: ``spectra validate`` runs it too)."""
    problems = []

    def fail(key: str, expected: str) -> None:
        problems.append(f"{key}={settings[key]!r}: {expected}")

    if not _VERSION.match(str(settings["etcd_version"])):
        fail("etcd_version", "a release version such as 3.6.16 (without the v)")
    sums = settings["etcd_sha256"] or {}
    if not isinstance(sums, Mapping) or not all(
        isinstance(arches, Mapping) and all(_SHA256.match(str(digest)) for digest in arches.values())
        for arches in sums.values()
    ):
        problems.append("etcd_sha256: {version: {arch: sha256}} with 64 lowercase hex digits per sum")
    if not _USER.match(str(settings["etcd_user"])):
        fail("etcd_user", "a system user name")
    if not _TOKEN.match(str(settings["etcd_cluster_token"])):
        fail("etcd_cluster_token", "letters, digits, '.', '_' and '-'")
    for key in ("etcd_bin_dir", "etcd_data_dir", "etcd_snapshot_dir", *TLS_FILES):
        if settings[key] is not None and not str(settings[key]).startswith("/"):
            fail(key, "an absolute path")
    for key, least in (("etcd_snapshot_keep", 1), ("etcd_health_timeout", 1)):
        if not is_whole(settings[key]) or settings[key] < least:
            fail(key, f"a whole number of at least {least}")
    metrics = settings["etcd_metrics_port"]
    taken = {key: settings[key] for key in cluster_settings.PORT_KEYS}
    if not is_whole(metrics) or not 0 < metrics < 65536:
        fail("etcd_metrics_port", "a port number (1-65535)")
    elif metrics in taken.values():
        fail("etcd_metrics_port", f"the same port as {next(key for key, port in taken.items() if port == metrics)}")
    schedule = str(settings["etcd_snapshot_schedule"])
    if not schedule.strip() or "\n" in schedule:
        fail("etcd_snapshot_schedule", "one systemd OnCalendar= expression such as daily or *-*-* 03:00:00")
    return problems


def tls_file(settings: Mapping[str, Any], key: str) -> str:
    """The path of TLS setting ``key``: its value, else where the PKI installs that file."""
    return str(settings[key] or layout.pki_file(settings, TLS_FILES[key]))


def tarball_url(base: str, version: str, arch: str) -> str:
    return f"{base.rstrip('/')}/v{version}/etcd-v{version}-linux-{arch}.tar.gz"


def initial_cluster(peers: list[tuple[str, str]], peer_port: int) -> str:
    """``--initial-cluster``: ``name=https://address:peer_port`` for each member, comma-separated."""
    return ",".join(f"{name}=https://{topology.url_host(address)}:{peer_port}" for name, address in peers)


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


def binaries(settings: Mapping[str, Any]) -> dict[str, str]:
    bin_dir = str(settings["etcd_bin_dir"]).rstrip("/")
    return {command: f"{bin_dir}/{command}" for command in COMMANDS}


def credentials(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(LoadCredential id, path) of the files etcd itself reads."""
    return [
        ("ca.crt", tls_file(settings, "etcd_ca_file")),
        ("server.crt", tls_file(settings, "etcd_cert_file")),
        ("server.key", tls_file(settings, "etcd_key_file")),
        ("peer.crt", tls_file(settings, "etcd_peer_cert_file")),
        ("peer.key", tls_file(settings, "etcd_peer_key_file")),
    ]


SNAPSHOT_TIMER_UNIT = unit_name("etcd-snapshot.timer")


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["etcd_enabled"]) and topology.has_role(host, topology.ETCD)


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`etcd` reads: the arch, the files it manages or reads (TLS files hashed), its units."""
    snapshots = bool(settings["etcd_snapshot_enabled"])
    unit_files = [UNIT] + ([SNAPSHOT_SERVICE, SNAPSHOT_TIMER, SNAPSHOT_SCRIPT] if snapshots else [])
    credential_paths = sorted({path for _, path in credentials(settings)})
    paths = [str(settings["etcd_data_dir"]), *unit_files, *credential_paths]
    paths += [str(settings["etcd_snapshot_dir"])] if snapshots else []
    contents = ["/etc/passwd", CREDENTIALS_STAMP]
    stat_only: list[str] = []
    for binary in binaries(settings).values():
        paths += download_paths(binary)
        contents.append(download_paths(binary)[1])
        stat_only += download_stat_only(binary, verify=bool(settings["etcd_verify_binary"]))
    return [
        Platform,
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name("etcd"), SNAPSHOT_TIMER_UNIT]}),
    ]


@deploy("etcd")
def etcd() -> None:
    settings = Settings()
    version = str(settings["etcd_version"])
    user = str(settings["etcd_user"])
    data_dir = str(settings["etcd_data_dir"])
    snapshot_enabled = bool(settings["etcd_snapshot_enabled"])
    snapshot_dir = str(settings["etcd_snapshot_dir"])
    client_port, peer_port = int(settings["etcd_client_port"]), int(settings["etcd_peer_port"])
    try:
        address = topology.ip_address(host, "etcd's listen URLs")
        peers = topology.etcd_members(host.state.inventory)
    except topology.TopologyError as error:
        raise DeployError(f"etcd: {error}") from None
    platform, files, units = prepared_facts(*fact_requests(settings))
    arch = platform.get("arch") or "unknown"
    sums = (settings["etcd_sha256"] or {}).get(version) or {}
    require(
        bool(sums.get(arch)),
        f"no sha256 for etcd {version} on {arch}: fill etcd_sha256[{version!r}][{arch!r}] with the published "
        f"sum (SHA256SUMS of the v{version} release); nothing is installed without it",
    )
    commands = binaries(settings)
    ca = tls_file(settings, "etcd_ca_file")
    hc_cert = tls_file(settings, "etcd_healthcheck_cert_file")
    hc_key = tls_file(settings, "etcd_healthcheck_key_file")
    own_credentials = credentials(settings)

    passwd = (files.get("/etc/passwd") or {}).get("content")
    managed.system_user(name=f"System user {user}", username=user, home=data_dir, passwd=passwd)

    url = tarball_url(str(settings["etcd_download_base_url"]), version, arch)
    installs = {
        command: download(
            name=f"Install {command} {version}",
            url=url,
            dest=path,
            sha256=sums[arch],
            extract=f"etcd-v{version}-linux-{arch}/{command}",
            current=files,
        )
        for command, path in commands.items()
    }
    managed.directory(name="etcd data directory", path=data_dir, mode="0700", user=user, group=user, current=files)

    own_url = topology.url_host(address)
    context = {
        "name": host.name,
        "user": user,
        "binary": commands["etcd"],
        "data_dir": data_dir,
        "client_urls": [f"https://{own_url}:{client_port}", f"https://127.0.0.1:{client_port}"],
        "advertise_client_url": f"https://{own_url}:{client_port}",
        "peer_url": f"https://{own_url}:{peer_port}",
        "metrics_url": f"http://127.0.0.1:{int(settings['etcd_metrics_port'])}",
        "initial_cluster": initial_cluster(peers, peer_port),
        "cluster_token": settings["etcd_cluster_token"],
        "credentials": own_credentials,
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
                "etcdctl_q": shlex.quote(commands["etcdctl"]),
                "endpoint_q": shlex.quote(f"https://127.0.0.1:{client_port}"),
                "snapshot_dir": snapshot_dir,
                "snapshot_dir_q": shlex.quote(snapshot_dir),
                "keep": int(settings["etcd_snapshot_keep"]),
            },
            current=files,
        )
        snapshot_context = {
            "user": user,
            "script": SNAPSHOT_SCRIPT,
            "snapshot_dir": snapshot_dir,
            "schedule": settings["etcd_snapshot_schedule"],
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
        paths=sorted({path for _, path in own_credentials}),
        stamp=CREDENTIALS_STAMP,
        current=files,
    )
    service = managed.service(
        name="etcd running and enabled",
        unit="etcd",
        restarted=unit.will_change or installs["etcd"].will_change,
        daemon_reload=any(op.will_change for op in unit_changes),
        current=units,
    )
    health_check(
        name="etcd endpoint health",
        etcdctl=commands["etcdctl"],
        endpoint=f"https://127.0.0.1:{client_port}",
        ca=ca,
        cert=hc_cert,
        key=hc_key,
        timeout=int(settings["etcd_health_timeout"]),
        _if=lambda: service.did_change() or new_credentials.did_change(),
    )
    if snapshot_enabled:
        managed.service(name="etcd snapshot timer running and enabled", unit=SNAPSHOT_TIMER_UNIT, current=units)


COMPONENT = Component(
    name="etcd",
    defaults=DEFAULTS,
    deploy=etcd,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
