"""Prometheus node exporter: upstream release (sha256 checked before the binary lands) or the
Debian package, its own system user, a sandboxed systemd unit, a textfile collector directory and
an optional TLS + basic-auth web config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.download import download, download_paths, download_stat_only
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, require, setting
from facts.files import FileStates
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra.cluster_settings import split_host_port

DEFAULTS: dict[str, Any] = {
    "node_exporter_enabled": True,  # run this component at all
    "node_exporter_install_method": "upstream",  # "upstream" (release tarball) or "package" (Debian)
    "node_exporter_version": "1.8.2",  # upstream release
    # base of the release URLs: {base}/v{version}/node_exporter-{version}.linux-{arch}.tar.gz
    "node_exporter_download_base_url": "https://github.com/prometheus/node_exporter/releases/download",
    "node_exporter_sha256": {  # published sha256 of the release tarballs (sha256sums.txt), per version and arch
        "1.8.2": {
            "amd64": "6809dd0b3ec45fd6e992c19071d6b5253aed3ead7bf0686885a51d85c6643c66",
            "arm64": "627382b9723c642411c33f48861134ebe893e70a63bcc8b3fc0619cd0bfac4be",
        },
    },
    "node_exporter_package": "prometheus-node-exporter",  # Debian package for "package"
    "node_exporter_binary": "/usr/local/bin/node_exporter",  # where the upstream binary goes
    # hash the installed binary on every run (~0.1-0.3 s per host) instead of trusting its install stamp
    # plus an unchanged size/mtime/ctime/inode (see deploys/operations/download.py)
    "node_exporter_verify_binary": False,
    "node_exporter_user": "node_exporter",  # system user (and group) the exporter runs as
    "node_exporter_listen_address": "0.0.0.0:9100",  # host:port to listen on
    "node_exporter_textfile_dir": "/var/lib/node_exporter/textfile_collector",  # *.prom files dropped here
    "node_exporter_collectors_enabled": [],  # extra collectors to turn on (e.g. "systemd")
    "node_exporter_collectors_disabled": [],  # default collectors to turn off
    "node_exporter_config_dir": "/etc/node_exporter",  # web.yml and TLS files
    "node_exporter_tls_cert": None,  # PEM certificate (text); with the key, serve HTTPS
    "node_exporter_tls_key": None,  # PEM private key (text)
    "node_exporter_basic_auth_users": {},  # user -> bcrypt hash (not the password)
}

TYPES: dict[str, type | tuple[type, ...]] = {"node_exporter_tls_cert": str, "node_exporter_tls_key": str}
REQUIRED: set[str] = set()
CHOICES: dict[str, tuple[Any, ...]] = {"node_exporter_install_method": ("upstream", "package")}


def listen_port(settings: Mapping[str, Any]) -> int | None:
    """The port the exporter serves on (from ``node_exporter_listen_address``), None when it is off: the
    firewall opens it and compliance expects its owner there."""
    if not settings["node_exporter_enabled"]:
        return None
    return split_host_port(settings["node_exporter_listen_address"])[1]


def check(settings: Mapping[str, Any]) -> list[str]:
    problems = []
    try:
        split_host_port(settings["node_exporter_listen_address"])
    except ValueError as error:
        problems.append(f"node_exporter_listen_address: {error}; expected host:port such as 0.0.0.0:9100")
    if bool(settings["node_exporter_tls_cert"]) != bool(settings["node_exporter_tls_key"]):
        problems.append("node_exporter_tls_cert and node_exporter_tls_key go together")
    return problems


def tarball_url(base: str, version: str, arch: str) -> str:
    return f"{base.rstrip('/')}/v{version}/node_exporter-{version}.linux-{arch}.tar.gz"


UNIT_FILE = "/etc/systemd/system/node_exporter.service"
DEFAULTS_FILE = "/etc/default/prometheus-node-exporter"


def _requests(data: Mapping[str, Any]) -> list[FactRequest]:
    config_dir = data["node_exporter_config_dir"]
    cert = data["node_exporter_tls_cert"]
    binary = data["node_exporter_binary"]
    paths = [data["node_exporter_textfile_dir"], config_dir]
    if cert or data["node_exporter_basic_auth_users"]:
        paths += [f"{config_dir}/web.yml"]
    if cert:
        paths += [f"{config_dir}/tls.crt", f"{config_dir}/tls.key"]
    contents: list[str] = []
    stat_only: list[str] = []
    if data["node_exporter_install_method"] == "upstream":
        paths += [*download_paths(binary), UNIT_FILE]
        contents = ["/etc/passwd", download_paths(binary)[1]]
        # the 15 MB binary: its stamp and stat decide, not a hash (unless node_exporter_verify_binary)
        stat_only = download_stat_only(binary, verify=bool(data["node_exporter_verify_binary"]))
        service = "node_exporter"
    else:
        paths += [DEFAULTS_FILE]
        service = "prometheus-node-exporter"
    requests: list[FactRequest] = [
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name(service)]}),
    ]
    if data["node_exporter_install_method"] == "package":
        requests.append(DebPackages)
    else:
        requests.append(Platform)  # the architecture picks the release tarball
    return requests


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["node_exporter_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`node_exporter` reads at prepare time."""
    return _requests(settings)


@deploy("Node exporter")
def node_exporter() -> None:
    method = setting("node_exporter_install_method")
    user = setting("node_exporter_user")
    config_dir = setting("node_exporter_config_dir")
    textfile_dir = setting("node_exporter_textfile_dir")
    cert, key = setting("node_exporter_tls_cert"), setting("node_exporter_tls_key")
    users = dict(setting("node_exporter_basic_auth_users") or {})
    web_config = f"{config_dir}/web.yml" if (cert or users) else None

    binary = setting("node_exporter_binary")
    unit_file = UNIT_FILE
    defaults_file = DEFAULTS_FILE
    service = "node_exporter" if method == "upstream" else "prometheus-node-exporter"
    files, units, extra = prepared_facts(*_requests(Settings()))

    changes = []
    if method == "upstream":
        version = str(setting("node_exporter_version"))
        arch = extra.get("arch") or "unknown"
        sums = (setting("node_exporter_sha256") or {}).get(version) or {}
        require(
            bool(sums.get(arch)),
            f"no sha256 for node_exporter {version} on {arch}: fill node_exporter_sha256[{version!r}][{arch!r}] "
            "with the published sum (sha256sums.txt of the release)",
        )
        passwd = (files.get("/etc/passwd") or {}).get("content")
        managed.system_user(name=f"System user {user}", username=user, home="/nonexistent", passwd=passwd)
        changes.append(
            download(
                name=f"Install node_exporter {version}",
                url=tarball_url(setting("node_exporter_download_base_url"), version, arch),
                dest=binary,
                sha256=sums[arch],
                extract=f"node_exporter-{version}.linux-{arch}/node_exporter",
                current=files,
            )
        )
        group = user
    else:
        managed.apt_packages(
            name="Install node exporter package", packages=[setting("node_exporter_package")], current=extra
        )
        group = "prometheus"

    managed.directory(
        name="Textfile collector directory", path=textfile_dir, mode="0755", user=user, group=group, current=files
    )
    if web_config:
        managed.directory(
            name="Node exporter config directory", path=config_dir, mode="0750", user="root", group=group, current=files
        )
        if cert:
            changes.append(
                managed.content(
                    name="TLS certificate", dest=f"{config_dir}/tls.crt", data=cert, mode="0644", current=files
                )
            )
            changes.append(
                managed.content(
                    name="TLS key", dest=f"{config_dir}/tls.key", data=key, mode="0640", group=group, current=files
                )
            )
        changes.append(
            managed.template(
                name="Node exporter web config",
                src="etc/node_exporter/web.yml.j2",
                dest=web_config,
                mode="0640",
                group=group,
                context={
                    "tls": bool(cert),
                    "cert_file": f"{config_dir}/tls.crt",
                    "key_file": f"{config_dir}/tls.key",
                    "users": sorted(users.items()),
                },
                current=files,
            )
        )

    context = {
        "user": user,
        "group": group,
        "binary": binary,
        "listen_address": setting("node_exporter_listen_address"),
        "web_config": web_config,
        "textfile_dir": textfile_dir,
        "collectors_enabled": list(setting("node_exporter_collectors_enabled") or []),
        "collectors_disabled": list(setting("node_exporter_collectors_disabled") or []),
    }
    if method == "upstream":
        unit = managed.template(
            name="Node exporter systemd unit", src="etc/systemd/system/node_exporter.service.j2",
            dest=unit_file, context=context, current=files,
        )  # fmt: skip
        changes.append(unit)
        reload = unit.will_change
    else:
        changes.append(
            managed.template(
                name="Node exporter options",
                src="etc/default/prometheus-node-exporter.j2",
                dest=defaults_file,
                context=context,
                current=files,
            )  # fmt: skip
        )
        reload = False

    managed.service(
        name="Node exporter running and enabled",
        unit=service,
        restarted=any(op.will_change for op in changes),
        daemon_reload=reload,
        current=units,
    )


COMPONENT = Component(
    name="node_exporter",
    defaults=DEFAULTS,
    deploy=node_exporter,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check,),
)
