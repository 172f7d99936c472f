"""Fluentd (fluent-package v5 LTS) shipping container logs and the kubelet/containerd journal to Elasticsearch.

Installation, from the official apt repository (every URL is data, so a mirror is one setting away):

1. Only when something must change (repository files, package version or plugin gems): a fast reachability
   check of the repository's ``Release`` file (``curl --fail --connect-timeout 5``) that fails with a
   message naming the URL. A no-op run never contacts the repository.
2. The signing key to ``/etc/apt/keyrings/`` (ASCII armoured ``.asc``, which apt reads directly), checked
   against ``fluentd_apt_key_sha256`` when set; the source list names it with ``signed-by=``.
3. ``fluent-package`` at the pinned version, then the plugins v5 does not bundle, with pinned versions,
   through ``fluent-gem`` (fluent-plugin-kubernetes_metadata_filter, fluent-plugin-concat). Bundled with
   v5.0.x and used as is: fluent-plugin-elasticsearch (5.4.x) and fluent-plugin-systemd (1.1.x).

Configuration (``/etc/fluent/fluentd.conf``, where fluent-package v5 reads it) is rendered from data and
checked with ``fluentd --dry-run -c`` before it replaces the live file; fluentd restarts only when its
configuration changed (its file buffer keeps what was not yet shipped). The Elasticsearch password lives in
a root-only environment file read by systemd; it is never in the config file nor in any command line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as _Mapping
from typing import Any
from urllib.parse import urlparse

from pyinfra import host
from pyinfra.api import DeployError, OperationError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.operations.config_files import (
    ConfigFile,
    config_files,
    content_changes,
    install_file_commands,
    render_template,
)
from facts.fluentd import FluentPackageState

KEYRING = "/etc/apt/keyrings/fluent-package.asc"
SOURCES_LIST = "/etc/apt/sources.list.d/fluent-package.list"
CONFIG = "/etc/fluent/fluentd.conf"
ENVIRONMENT_FILE = "/etc/fluent/elasticsearch.env"
DROPIN = "/etc/systemd/system/fluentd.service.d/spectra.conf"
FLUENTD_GROUP = "_fluentd"  # fluent-package v5's service user and group

DEFAULTS: dict[str, Any] = {
    "fluentd_enabled": True,  # install and configure Fluentd at all
    # Repository base; "{codename}" is replaced by the Debian codename (bookworm, trixie)
    "fluentd_apt_repository_url": "https://packages.treasuredata.com/lts/5/debian/{codename}/",
    "fluentd_apt_suite": "{codename}",  # repository suite
    "fluentd_apt_component": "contrib",  # repository component
    "fluentd_apt_key_url": "https://packages.treasuredata.com/GPG-KEY-fluent-package",  # signing key
    "fluentd_apt_key_sha256": None,  # sha256 the downloaded key must have (pin it in production)
    "fluentd_codename": None,  # Debian codename in the URLs; None: the host's (/etc/os-release)
    "fluentd_package_version": "5.0.9-1",  # pinned fluent-package version (apt version string)
    # Plugins not bundled with fluent-package v5, name -> pinned version
    "fluentd_gems": {
        "fluent-plugin-kubernetes_metadata_filter": "3.4.0",
        "fluent-plugin-concat": "2.5.0",
    },
    "fluentd_log_level": "info",  # Fluentd's own log level
    "fluentd_container_log_path": "/var/log/containers/*.log",  # CRI log files kubelet links there
    "fluentd_journal_path": "/var/log/journal",  # persistent journal (use /run/log/journal if volatile)
    "fluentd_journal_units": ["kubelet.service", "containerd.service"],  # units read from the journal
    "fluentd_read_from_head": False,  # on first start, read existing logs from the beginning
    "fluentd_state_dir": "/var/log/fluent",  # position files (owned by the package's user)
    "fluentd_concat_flush_interval": 5,  # seconds to wait for the rest of a partial line
    "fluentd_kubernetes_url": None,  # API server URL for pod metadata, e.g. https://10.0.0.10:6443
    "fluentd_kubernetes_ca_file": "/etc/kubernetes/pki/ca.crt",  # CA of the API server (node path)
    "fluentd_kubernetes_bearer_token_file": None,  # token of a read-only pods/namespaces account
    "fluentd_kubernetes_verify_ssl": True,  # verify the API server certificate
    "fluentd_elasticsearch_hosts": None,  # ["es-1.example:9200", ...]
    "fluentd_elasticsearch_scheme": "https",  # "https" (or "http" for a local test cluster)
    "fluentd_elasticsearch_ssl_verify": True,  # verify the Elasticsearch certificate
    "fluentd_elasticsearch_ca_file": None,  # CA bundle on the node for Elasticsearch
    "fluentd_elasticsearch_user": None,  # basic-auth user
    "fluentd_elasticsearch_password": None,  # basic-auth password (root-only env file; never logged)
    "fluentd_elasticsearch_index_prefix": "kubernetes",  # logstash-style index prefix
    "fluentd_elasticsearch_request_timeout": "15s",  # per bulk request
    "fluentd_buffer_path": "/var/log/fluent/buffer/elasticsearch",  # file buffer directory
    "fluentd_buffer_flush_interval": "5s",  # how often chunks are shipped
    "fluentd_buffer_flush_threads": 2,  # parallel flushes
    "fluentd_buffer_chunk_limit_size": "8MB",  # one bulk request at most (ES default limit is 100MB)
    "fluentd_buffer_total_limit_size": "2GB",  # disk the buffer may use
    "fluentd_buffer_overflow_action": "drop_oldest_chunk",  # when full: drop_oldest_chunk, block, throw_exception
    "fluentd_buffer_retry_timeout": "1h",  # give a chunk up after this long
    "fluentd_buffer_retry_max_times": 30,  # ... or after this many retries
    "fluentd_buffer_retry_max_interval": "60s",  # backoff ceiling
}

REQUIRED: set[str] = {"fluentd_elasticsearch_hosts", "fluentd_kubernetes_url"}
TYPES: dict[str, type | tuple[type, ...]] = {
    "fluentd_elasticsearch_hosts": list,
    "fluentd_kubernetes_url": str,
    "fluentd_apt_key_sha256": str,
    "fluentd_codename": str,
    "fluentd_kubernetes_bearer_token_file": str,
    "fluentd_elasticsearch_ca_file": str,
    "fluentd_elasticsearch_user": str,
    "fluentd_elasticsearch_password": str,
}

_TOKEN = re.compile(r"^[A-Za-z0-9_.:/@%+=~-]+$")  # a value that needs no quoting in fluentd.conf
_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](:[0-9]{1,5})?$")
_SIZE = re.compile(r"^[0-9]+[kmgt]?b?$", re.IGNORECASE)
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?[smhd]?$")
_GEM = re.compile(r"^[a-z0-9_.-]+$")
_GEM_VERSION = re.compile(r"^[0-9][0-9A-Za-z.]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
OVERFLOW_ACTIONS = ("drop_oldest_chunk", "block", "throw_exception")

# Fails fast, naming the URL, when the repository cannot be reached (DNS, firewall, proxy, 404).
_REACHABLE_SCRIPT = (
    'if ! curl --fail --silent --show-error --location --connect-timeout 5 --max-time 20 -o /dev/null "$1"; '
    'then echo "fluent-package apt repository unreachable: $1 (set fluentd_apt_repository_url to a reachable '
    'mirror)" >&2; exit 1; fi'
)
# $1 url, $2 destination, $3 wanted sha256 or "": download next to the keyring, check, move into place.
_KEY_SCRIPT = (
    'staged="$(dirname "$2")/.$(basename "$2").spectra-new"; '
    'mkdir -p "$(dirname "$2")" && '
    'curl --fail --silent --show-error --location --connect-timeout 5 --max-time 60 -o "$staged" "$1" '
    '|| { rm -f "$staged"; echo "cannot download the fluent-package signing key from $1" >&2; exit 1; }; '
    'if [ -n "$3" ] && [ "$(sha256sum "$staged" | cut -d" " -f1)" != "$3" ]; then '
    'rm -f "$staged"; echo "signing key from $1 does not have sha256 $3: not installed" >&2; exit 1; fi; '
    'chmod 644 "$staged" && mv -f "$staged" "$2"'
)


def fluentd_settings(data: dict[str, Any]) -> dict[str, Any]:
    """Validate the data and turn it into template values (raises DeployError naming the setting)."""
    missing = sorted(key for key in REQUIRED if not data.get(key))
    if missing:
        raise DeployError(f"fluentd: {', '.join(missing)} must be set (group data) when fluentd_enabled")

    hosts = [str(item) for item in data["fluentd_elasticsearch_hosts"]]
    for item in hosts:
        if not _HOST_PORT.match(item):
            raise DeployError(f"fluentd_elasticsearch_hosts: {item!r} must be host or host:port")
    if data["fluentd_elasticsearch_scheme"] not in ("https", "http"):
        raise DeployError("fluentd_elasticsearch_scheme must be https or http")
    url = urlparse(str(data["fluentd_kubernetes_url"]))
    if url.scheme != "https" or not url.netloc or not _TOKEN.match(str(data["fluentd_kubernetes_url"])):
        raise DeployError(f"fluentd_kubernetes_url must be an https:// URL, not {data['fluentd_kubernetes_url']!r}")
    for key in (
        "fluentd_container_log_path",
        "fluentd_journal_path",
        "fluentd_state_dir",
        "fluentd_buffer_path",
        "fluentd_kubernetes_ca_file",
        "fluentd_kubernetes_bearer_token_file",
        "fluentd_elasticsearch_ca_file",
        "fluentd_elasticsearch_user",
        "fluentd_elasticsearch_index_prefix",
    ):
        value = data.get(key)
        if value is not None and not _TOKEN.match(str(value).replace("*", "")):
            raise DeployError(f"{key}: {value!r} may not contain spaces, quotes or other special characters")
    for key in ("fluentd_buffer_chunk_limit_size", "fluentd_buffer_total_limit_size"):
        if not _SIZE.match(str(data[key])):
            raise DeployError(f"{key}: {data[key]!r} is not a size like 8MB")
    for key in (
        "fluentd_buffer_flush_interval",
        "fluentd_buffer_retry_timeout",
        "fluentd_buffer_retry_max_interval",
        "fluentd_elasticsearch_request_timeout",
    ):
        if not _DURATION.match(str(data[key])):
            raise DeployError(f"{key}: {data[key]!r} is not a duration like 30s or 1h")
    if data["fluentd_buffer_overflow_action"] not in OVERFLOW_ACTIONS:
        raise DeployError(f"fluentd_buffer_overflow_action must be one of {OVERFLOW_ACTIONS}")
    retry_times = data["fluentd_buffer_retry_max_times"]
    if not isinstance(retry_times, int) or isinstance(retry_times, bool) or retry_times < 1:
        raise DeployError("fluentd_buffer_retry_max_times must be a positive integer (retries are bounded)")
    if bool(data.get("fluentd_elasticsearch_user")) != bool(data.get("fluentd_elasticsearch_password")):
        raise DeployError("fluentd_elasticsearch_user and fluentd_elasticsearch_password go together")
    password = data.get("fluentd_elasticsearch_password")
    if password is not None and ("\n" in str(password) or "\r" in str(password)):
        raise DeployError("fluentd_elasticsearch_password may not contain line breaks")

    units = [str(unit) for unit in data["fluentd_journal_units"] or []]
    if not units or not all(re.match(r"^[A-Za-z0-9@_.-]+$", unit) for unit in units):
        raise DeployError("fluentd_journal_units must be a non-empty list of unit names")
    # fluent-plugin-systemd: a list of match hashes, OR-ed; JSON is what its parser reads.
    journal_matches = "[" + ", ".join(f'{{"_SYSTEMD_UNIT": "{unit}"}}' for unit in units) + "]"

    return {
        "log_level": data["fluentd_log_level"],
        "container_log_path": data["fluentd_container_log_path"],
        "journal_path": data["fluentd_journal_path"],
        "journal_matches": journal_matches,
        "read_from_head": "true" if data["fluentd_read_from_head"] else "false",
        "state_dir": data["fluentd_state_dir"],
        "concat_flush_interval": int(data["fluentd_concat_flush_interval"]),
        "kubernetes_url": data["fluentd_kubernetes_url"],
        "kubernetes_ca_file": data["fluentd_kubernetes_ca_file"],
        "kubernetes_bearer_token_file": data["fluentd_kubernetes_bearer_token_file"],
        "kubernetes_verify_ssl": "true" if data["fluentd_kubernetes_verify_ssl"] else "false",
        "es_hosts": hosts,
        "es_scheme": data["fluentd_elasticsearch_scheme"],
        "es_ssl_verify": "true" if data["fluentd_elasticsearch_ssl_verify"] else "false",
        "es_ca_file": data["fluentd_elasticsearch_ca_file"],
        "es_user": data["fluentd_elasticsearch_user"],
        "es_index_prefix": data["fluentd_elasticsearch_index_prefix"],
        "es_request_timeout": data["fluentd_elasticsearch_request_timeout"],
        "buffer_path": data["fluentd_buffer_path"],
        "buffer_flush_interval": data["fluentd_buffer_flush_interval"],
        "buffer_flush_threads": int(data["fluentd_buffer_flush_threads"]),
        "buffer_chunk_limit_size": data["fluentd_buffer_chunk_limit_size"],
        "buffer_total_limit_size": data["fluentd_buffer_total_limit_size"],
        "buffer_overflow_action": data["fluentd_buffer_overflow_action"],
        "buffer_retry_timeout": data["fluentd_buffer_retry_timeout"],
        "buffer_retry_max_times": retry_times,
        "buffer_retry_max_interval": data["fluentd_buffer_retry_max_interval"],
    }


def escape_env_value(value: str) -> str:
    """A value for a double-quoted systemd EnvironmentFile assignment."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def repository(data: dict[str, Any], codename: str) -> dict[str, str]:
    url = str(data["fluentd_apt_repository_url"]).replace("{codename}", codename)
    suite = str(data["fluentd_apt_suite"]).replace("{codename}", codename)
    key_url = str(data["fluentd_apt_key_url"])
    for name, value in (("fluentd_apt_repository_url", url), ("fluentd_apt_key_url", key_url)):
        parsed = urlparse(value)
        if parsed.scheme not in ("https", "http") or not parsed.netloc or not _TOKEN.match(value):
            raise DeployError(f"{name}: {value!r} is not an http(s) URL")
    if not url.endswith("/"):
        url += "/"
    if not re.match(r"^[a-z0-9_.-]+$", suite) or not re.match(r"^[a-z0-9_.-]+$", data["fluentd_apt_component"]):
        raise DeployError("fluentd_apt_suite/fluentd_apt_component must be plain words")
    key_sha = data.get("fluentd_apt_key_sha256")
    if key_sha is not None and not _SHA256.match(str(key_sha)):
        raise DeployError("fluentd_apt_key_sha256 must be 64 lower-case hex digits")
    return {
        "url": url,
        "suite": suite,
        "component": str(data["fluentd_apt_component"]),
        "release_url": f"{url}dists/{suite}/Release",
        "key_url": key_url,
        "key_sha256": str(key_sha or ""),
    }


def repository_reachable(release_url: str) -> StringCommand:
    return StringCommand("sh", "-c", QuoteString(_REACHABLE_SCRIPT), "spectra-repo-check", QuoteString(release_url))


@operation()
def fluent_package(repo_data: dict[str, Any], version: str, gems: dict[str, str]):
    """
    Repository (key + list), pinned fluent-package and pinned plugin gems, from one fact.

    + repo_data: the fluentd_apt_* settings (and fluentd_codename); see ``repository``
    + version: the fluent-package version to have installed
    + gems: plugin gem name -> version to have installed in fluent-package's Ruby
    """
    state = host.get_fact(FluentPackageState, paths=[KEYRING, SOURCES_LIST], gems=gems)
    codename = repo_data.get("fluentd_codename") or state.get("codename")
    if not codename:
        raise OperationError(f"{host.name}: no VERSION_CODENAME in /etc/os-release; set fluentd_codename")
    repo = repository(repo_data, str(codename))
    files = state.get("files", {})
    key_state = files.get(KEYRING)
    sources = ConfigFile(
        path=SOURCES_LIST,
        content=render_template(
            "etc/apt/sources.list.d/fluent-package.list.j2",
            keyring=KEYRING,
            url=repo["url"],
            suite=repo["suite"],
            component=repo["component"],
        ),
    )
    key_needed = key_state is None or bool(repo["key_sha256"] and key_state.get("sha256") != repo["key_sha256"])
    list_needed = content_changes(sources, files.get(SOURCES_LIST))
    package_needed = state.get("package_version") != version
    missing_gems = [name for name, wanted in gems.items() if not state.get("gems", {}).get(name)]

    if not (key_needed or list_needed or package_needed or missing_gems):
        host.noop(f"fluent-package {version} and plugins {sorted(gems)} installed from {repo['url']}")
        return

    if key_needed or list_needed or package_needed:
        yield repository_reachable(repo["release_url"])
    if key_needed:
        yield StringCommand(
            "sh",
            "-c",
            QuoteString(_KEY_SCRIPT),
            "spectra-key",
            QuoteString(repo["key_url"]),
            QuoteString(KEYRING),
            QuoteString(repo["key_sha256"]),
        )
    yield from install_file_commands(sources, files.get(SOURCES_LIST))
    if key_needed or list_needed or package_needed:
        yield StringCommand("apt-get", "update", "-qq")
    if package_needed:
        yield StringCommand(
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--allow-downgrades",
            "-o",
            "Dpkg::Options::=--force-confold",
            QuoteString(f"fluent-package={version}"),
        )
    for name in missing_gems:
        yield StringCommand(
            "fluent-gem", "install", "--no-document", QuoteString(name), "--version", QuoteString(gems[name])
        )
    if missing_gems:
        # New plugin code is only loaded by a fresh process
        yield StringCommand("systemctl", "try-restart", "fluentd.service")


def fluentd_dry_run(staged: str) -> StringCommand:
    return StringCommand("fluentd", "--dry-run", "-q", "-c", QuoteString(staged))


@deploy("Fluentd", data_defaults=DEFAULTS)
def fluentd() -> None:
    """Install fluent-package from its apt repository and ship node and container logs to Elasticsearch."""
    data = {key: host.data.get(key) for key in DEFAULTS}
    if not data["fluentd_enabled"]:
        host.noop("fluentd disabled (fluentd_enabled=False)")
        return
    settings = fluentd_settings(data)
    repository(data, str(data["fluentd_codename"] or "bookworm"))  # validate the settings up front
    gems = {str(name): str(version) for name, version in (data["fluentd_gems"] or {}).items()}
    for name, version in gems.items():
        if not _GEM.match(name) or not _GEM_VERSION.match(version):
            raise DeployError(f"fluentd_gems: {name!r} {version!r} is not a gem name and exact version")

    fluent_package(
        name=f"Install fluent-package {data['fluentd_package_version']} and plugins from the Fluentd apt repository",
        repo_data={key: data[key] for key in DEFAULTS if key.startswith(("fluentd_apt_", "fluentd_codename"))},
        version=str(data["fluentd_package_version"]),
        gems=gems,
    )

    files = [
        ConfigFile(
            path=ENVIRONMENT_FILE,
            content=render_template(
                "etc/fluent/elasticsearch.env.j2",
                password=escape_env_value(str(data["fluentd_elasticsearch_password"] or "")),
            ),
            mode="600",
        ),
        ConfigFile(
            path=DROPIN,
            content=render_template(
                "etc/systemd/system/fluentd.service.d/spectra.conf.j2", environment_file=ENVIRONMENT_FILE
            ),
        ),
        ConfigFile(
            path=CONFIG,
            content=render_template("etc/fluent/fluentd.conf.j2", **settings),
            mode="640",
            group=FLUENTD_GROUP,
            validate=fluentd_dry_run,
        ),
    ]
    config_files(
        name=f"Configure Fluentd ({CONFIG}, checked with fluentd --dry-run), restart it if changed",
        files=files,
        daemon_reload=True,
        enabled_units=["fluentd.service"],
        running_units=["fluentd.service"],
        prepare=[
            StringCommand(
                "install",
                "-d",
                "-o",
                QuoteString(FLUENTD_GROUP),
                "-g",
                QuoteString(FLUENTD_GROUP),
                "-m",
                "750",
                QuoteString(str(data["fluentd_state_dir"])),
                QuoteString(str(data["fluentd_buffer_path"])),
            )
        ],
        on_change=[StringCommand("systemctl", "restart", "fluentd.service")],
    )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["fluentd_enabled"])


COMPONENT = Component(
    name="fluentd",
    defaults=DEFAULTS,
    deploy=fluentd,
    should_run=should_run,
)
