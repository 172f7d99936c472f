"""Fluentd (fluent-package v5 LTS) shipping container logs and the kubelet/containerd journal to Elasticsearch.

Or to VictoriaLogs (``fluentd_output: victorialogs``): the same Elasticsearch output, pointed at VictoriaLogs'
bulk endpoint (``fluentd_victorialogs_path``, default ``/insert/elasticsearch/``) with the hints VictoriaLogs
takes per request as headers: which field is the message (``log`` of container lines, ``message`` of journal
entries), which the time (``@timestamp``, from ``logstash_format``), which make the stream, and this node's
name and zone as extra fields (named as vlagent names the node's labels, so a query by node or zone finds
lines from every collector). ``fluentd_elasticsearch_hosts`` then names the store (``host:port``).

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

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from pyinfra import host
from pyinfra.api import OperationError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import (
    ConfigFile,
    config_files,
    content_changes,
    install_file_commands,
    render_template,
)
from deploys.settings import Settings
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
    # units read from the journal (Debian's sshd is ssh.service)
    "fluentd_journal_units": ["kubelet.service", "containerd.service", "ssh.service"],
    "fluentd_read_from_head": False,  # on first start, read existing logs from the beginning
    "fluentd_state_dir": "/var/log/fluent",  # position files (owned by the package's user)
    "fluentd_concat_flush_interval": 5,  # seconds to wait for the rest of a partial line
    "fluentd_kubernetes_url": None,  # API server URL for pod metadata, e.g. https://10.0.0.10:6443
    "fluentd_kubernetes_ca_file": "/etc/kubernetes/pki/ca.crt",  # CA of the API server (node path)
    "fluentd_kubernetes_bearer_token_file": None,  # token of a read-only pods/namespaces account
    "fluentd_kubernetes_verify_ssl": True,  # verify the API server certificate
    "fluentd_output": "elasticsearch",  # what fluentd_elasticsearch_hosts are: elasticsearch or victorialogs
    "fluentd_elasticsearch_hosts": None,  # ["es-1.example:9200", ...] (VictoriaLogs: ["10.96.0.13:9428"])
    "fluentd_elasticsearch_scheme": "https",  # "https" (or "http" for a local test cluster)
    "fluentd_elasticsearch_ssl_verify": True,  # verify the Elasticsearch certificate
    "fluentd_elasticsearch_ca_file": None,  # CA bundle on the node for Elasticsearch
    "fluentd_elasticsearch_user": None,  # basic-auth user
    "fluentd_elasticsearch_password": None,  # basic-auth password (root-only env file; never logged)
    "fluentd_elasticsearch_index_prefix": "kubernetes",  # logstash-style index prefix
    "fluentd_elasticsearch_request_timeout": "15s",  # per bulk request
    # fluentd_output victorialogs: VictoriaLogs' Elasticsearch bulk endpoint and the field hints it needs
    "fluentd_victorialogs_path": "/insert/elasticsearch/",
    "fluentd_victorialogs_msg_fields": ["log", "message"],  # first present is the message (container, journal)
    "fluentd_victorialogs_time_field": "@timestamp",  # set by logstash_format
    # the log stream: a container, or a unit on a host (flattened names, as VictoriaLogs stores them)
    "fluentd_victorialogs_stream_fields": [
        "kubernetes.namespace_name",
        "kubernetes.pod_name",
        "kubernetes.container_name",
        "hostname",
        "systemd_unit",
    ],
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

OVERFLOW_ACTIONS = ("drop_oldest_chunk", "block", "throw_exception")
CHOICES: dict[str, tuple[Any, ...]] = {
    "fluentd_log_level": ("fatal", "error", "warn", "info", "debug", "trace"),
    "fluentd_elasticsearch_scheme": ("https", "http"),
    "fluentd_output": ("elasticsearch", "victorialogs"),
    "fluentd_buffer_overflow_action": OVERFLOW_ACTIONS,
}

_TOKEN = re.compile(r"[A-Za-z0-9_.:/@%+=~-]+")  # a value that needs no quoting in fluentd.conf
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9a-fA-F:]+\](:[0-9]{1,5})?")
_SIZE = re.compile(r"[0-9]+[kmgt]?b?", re.IGNORECASE)
_DURATION = re.compile(r"[0-9]+(\.[0-9]+)?[smhd]?")
_WORD = re.compile(r"[a-z0-9_.-]+")
_GEM_VERSION = re.compile(r"[0-9][0-9A-Za-z.]*")
_UNIT = re.compile(r"[A-Za-z0-9@_.-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELD = re.compile(r"[A-Za-z0-9@_.\-/]+")  # a VictoriaLogs field name or value that needs no quoting in a header
VICTORIALOGS_LIST_KEYS = ("fluentd_victorialogs_msg_fields", "fluentd_victorialogs_stream_fields")
# the node's labels as vlagent names them on container lines (deploys/components/victorialogs_agent.py)
NODE_FIELD = "kubernetes.node_labels.kubernetes.io/hostname"
ZONE_FIELD = "kubernetes.node_labels.topology.kubernetes.io/zone"
# Values written into fluentd.conf as they are: no spaces, quotes or other special characters
TOKEN_KEYS = (
    "fluentd_container_log_path",
    "fluentd_journal_path",
    "fluentd_state_dir",
    "fluentd_buffer_path",
    "fluentd_kubernetes_ca_file",
    "fluentd_kubernetes_bearer_token_file",
    "fluentd_elasticsearch_ca_file",
    "fluentd_elasticsearch_user",
    "fluentd_elasticsearch_index_prefix",
    "fluentd_victorialogs_path",
)
SIZE_KEYS = ("fluentd_buffer_chunk_limit_size", "fluentd_buffer_total_limit_size")
DURATION_KEYS = (
    "fluentd_buffer_flush_interval",
    "fluentd_buffer_retry_timeout",
    "fluentd_buffer_retry_max_interval",
    "fluentd_elasticsearch_request_timeout",
)
# key -> the smallest value: retries are bounded, at least one flush thread; concat's 0 waits forever
COUNT_KEYS = {
    "fluentd_buffer_retry_max_times": 1,
    "fluentd_buffer_flush_threads": 1,
    "fluentd_concat_flush_interval": 0,
}
PLACEHOLDER_CODENAME = "bookworm"  # stands for the host's codename when the check cannot ask the host

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


def check(settings: Mapping[str, Any]) -> list[str]:
    """The formats fluentd.conf and the apt source need (pure: ``spectra validate``
    runs it too; the host's own codename is only known to the deploy)."""
    problems = []
    hosts = settings["fluentd_elasticsearch_hosts"]
    if hosts and not isinstance(hosts, list | tuple):
        problems.append(f"fluentd_elasticsearch_hosts={hosts!r}: a list of host or host:port")
    elif hosts:
        for item in hosts:
            if not _HOST_PORT.fullmatch(str(item)):
                problems.append(f"fluentd_elasticsearch_hosts: {item!r} must be host or host:port")
    kubernetes_url = settings["fluentd_kubernetes_url"]
    if kubernetes_url:
        url = urlparse(str(kubernetes_url))
        if url.scheme != "https" or not url.netloc or not _TOKEN.fullmatch(str(kubernetes_url)):
            problems.append(f"fluentd_kubernetes_url={kubernetes_url!r}: an https:// URL")
    for key in TOKEN_KEYS:
        value = settings[key]
        if value is not None and not _TOKEN.fullmatch(str(value).replace("*", "")):
            problems.append(f"{key}={value!r}: may not contain spaces, quotes or other special characters")
    for key in SIZE_KEYS:
        if not _SIZE.fullmatch(str(settings[key])):
            problems.append(f"{key}={settings[key]!r}: a size such as 8MB")
    for key in DURATION_KEYS:
        if not _DURATION.fullmatch(str(settings[key])):
            problems.append(f"{key}={settings[key]!r}: a duration such as 30s or 1h")
    for key, least in COUNT_KEYS.items():
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            problems.append(f"{key}={value!r}: an integer, {least} or more")
    if bool(settings["fluentd_elasticsearch_user"]) != bool(settings["fluentd_elasticsearch_password"]):
        problems.append("fluentd_elasticsearch_user and fluentd_elasticsearch_password go together")
    password = settings["fluentd_elasticsearch_password"]
    if password is not None and ("\n" in str(password) or "\r" in str(password)):
        problems.append("fluentd_elasticsearch_password: may not contain line breaks")  # a secret: not shown
    units = settings["fluentd_journal_units"]
    if not isinstance(units, list | tuple) or not units or not all(_UNIT.fullmatch(str(unit)) for unit in units):
        problems.append(f"fluentd_journal_units={units!r}: a non-empty list of unit names")
    gems = settings["fluentd_gems"] or {}
    if not isinstance(gems, Mapping):
        problems.append(f"fluentd_gems={gems!r}: a mapping of gem name -> exact version")
    else:
        for name, version in gems.items():
            if not _WORD.fullmatch(str(name)) or not _GEM_VERSION.fullmatch(str(version)):
                problems.append(f"fluentd_gems: {name!r} {version!r} is not a gem name and exact version")
    codename = settings["fluentd_codename"]
    if codename is not None and not _WORD.fullmatch(str(codename)):
        problems.append(f"fluentd_codename={codename!r}: a Debian codename such as bookworm")
    if settings["fluentd_output"] == "victorialogs":
        problems += victorialogs_problems(settings)
    return problems + repository_problems(settings, str(codename or PLACEHOLDER_CODENAME))


def victorialogs_problems(settings: Mapping[str, Any]) -> list[str]:
    """What the VictoriaLogs output needs: header-safe field names, and no second collector of the same lines."""
    problems = []
    if not str(settings["fluentd_victorialogs_path"]).startswith("/"):
        problems.append(f"fluentd_victorialogs_path={settings['fluentd_victorialogs_path']!r}: a path such as "
                        "/insert/elasticsearch/")  # fmt: skip
    for key in VICTORIALOGS_LIST_KEYS:
        fields = settings[key]
        if not isinstance(fields, list | tuple) or not fields or not all(_FIELD.fullmatch(str(f)) for f in fields):
            problems.append(f"{key}={fields!r}: a non-empty list of field names (letters, digits, '@_.-/')")
    if not _FIELD.fullmatch(str(settings["fluentd_victorialogs_time_field"])):
        problems.append(f"fluentd_victorialogs_time_field={settings['fluentd_victorialogs_time_field']!r}: "
                        "a field name such as @timestamp")  # fmt: skip
    zone = settings["zone"]
    if zone is not None and not _FIELD.fullmatch(str(zone)):
        problems.append(f"zone={zone!r}: letters, digits and '@_.-/' only (sent as a log field)")
    uploads_journal = settings["journal_upload_enabled"] and (
        settings["journal_upload_url"] or settings["victorialogs_agent_enabled"]
    )
    if settings["victorialogs_agent_enabled"] or uploads_journal:
        # vlagent (container lines) and journal_upload (the journal) already bring the same lines to the store
        problems.append("fluentd_output='victorialogs' with vlagent or the journal upload on: every line would be "
                        "stored twice; set victorialogs_agent_enabled and journal_upload_enabled to false (Fluentd "
                        "collects) or switch Fluentd off")  # fmt: skip
    return problems


def victorialogs_headers(settings: Mapping[str, Any], node: str) -> str:
    """``custom_headers`` of the output: VictoriaLogs' per-request hints, as the one-line JSON Fluentd reads."""
    extra = [f"{NODE_FIELD}={node}"] + ([f"{ZONE_FIELD}={settings['zone']}"] if settings["zone"] else [])
    headers = {
        "VL-Msg-Field": ",".join(str(f) for f in settings["fluentd_victorialogs_msg_fields"]),
        "VL-Time-Field": str(settings["fluentd_victorialogs_time_field"]),
        "VL-Stream-Fields": ",".join(str(f) for f in settings["fluentd_victorialogs_stream_fields"]),
        "VL-Extra-Fields": ",".join(extra),
    }
    return json.dumps(headers)


def fluentd_settings(settings: Mapping[str, Any], node: str = "") -> dict[str, Any]:
    """The template values of fluentd.conf for host ``node`` (settings checked by :func:`check`)."""
    units = [str(unit) for unit in settings["fluentd_journal_units"]]
    # fluent-plugin-systemd: a list of match hashes, OR-ed; JSON is what its parser reads.
    journal_matches = "[" + ", ".join(f'{{"_SYSTEMD_UNIT": "{unit}"}}' for unit in units) + "]"

    return {
        "log_level": settings["fluentd_log_level"],
        "container_log_path": settings["fluentd_container_log_path"],
        "journal_path": settings["fluentd_journal_path"],
        "journal_matches": journal_matches,
        "read_from_head": "true" if settings["fluentd_read_from_head"] else "false",
        "state_dir": settings["fluentd_state_dir"],
        "concat_flush_interval": int(settings["fluentd_concat_flush_interval"]),
        "kubernetes_url": settings["fluentd_kubernetes_url"],
        "kubernetes_ca_file": settings["fluentd_kubernetes_ca_file"],
        "kubernetes_bearer_token_file": settings["fluentd_kubernetes_bearer_token_file"],
        "kubernetes_verify_ssl": "true" if settings["fluentd_kubernetes_verify_ssl"] else "false",
        "es_hosts": [str(item) for item in settings["fluentd_elasticsearch_hosts"]],
        "es_scheme": settings["fluentd_elasticsearch_scheme"],
        "es_ssl_verify": "true" if settings["fluentd_elasticsearch_ssl_verify"] else "false",
        "es_ca_file": settings["fluentd_elasticsearch_ca_file"],
        "es_user": settings["fluentd_elasticsearch_user"],
        "es_index_prefix": settings["fluentd_elasticsearch_index_prefix"],
        "es_request_timeout": settings["fluentd_elasticsearch_request_timeout"],
        "victorialogs": (
            {"path": settings["fluentd_victorialogs_path"], "headers": victorialogs_headers(settings, node)}
            if settings["fluentd_output"] == "victorialogs"
            else None
        ),
        "buffer_path": settings["fluentd_buffer_path"],
        "buffer_flush_interval": settings["fluentd_buffer_flush_interval"],
        "buffer_flush_threads": int(settings["fluentd_buffer_flush_threads"]),
        "buffer_chunk_limit_size": settings["fluentd_buffer_chunk_limit_size"],
        "buffer_total_limit_size": settings["fluentd_buffer_total_limit_size"],
        "buffer_overflow_action": settings["fluentd_buffer_overflow_action"],
        "buffer_retry_timeout": settings["fluentd_buffer_retry_timeout"],
        "buffer_retry_max_times": settings["fluentd_buffer_retry_max_times"],
        "buffer_retry_max_interval": settings["fluentd_buffer_retry_max_interval"],
    }


def escape_env_value(value: str) -> str:
    """A value for a double-quoted systemd EnvironmentFile assignment."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def repository(settings: Mapping[str, Any], codename: str) -> dict[str, str]:
    """The apt source and its key for ``codename`` (checked by :func:`repository_problems`)."""
    url = str(settings["fluentd_apt_repository_url"]).replace("{codename}", codename)
    if not url.endswith("/"):
        url += "/"
    suite = str(settings["fluentd_apt_suite"]).replace("{codename}", codename)
    return {
        "url": url,
        "suite": suite,
        "component": str(settings["fluentd_apt_component"]),
        "release_url": f"{url}dists/{suite}/Release",
        "key_url": str(settings["fluentd_apt_key_url"]),
        "key_sha256": str(settings["fluentd_apt_key_sha256"] or ""),
    }


def repository_problems(settings: Mapping[str, Any], codename: str) -> list[str]:
    """What is wrong with the repository settings once ``codename`` is filled in (where it is used)."""
    problems = []
    repo = repository(settings, codename)
    for key, value in (("fluentd_apt_repository_url", repo["url"]), ("fluentd_apt_key_url", repo["key_url"])):
        parsed = urlparse(value)
        if parsed.scheme not in ("https", "http") or not parsed.netloc or not _TOKEN.fullmatch(value):
            problems.append(f"{key}={settings[key]!r}: an http(s) URL")
    for key, value in (("fluentd_apt_suite", repo["suite"]), ("fluentd_apt_component", repo["component"])):
        if not _WORD.fullmatch(value):
            problems.append(f"{key}={settings[key]!r}: a plain word (lower-case letters, digits, '_.-')")
    key_sha = settings["fluentd_apt_key_sha256"]
    if key_sha is not None and not _SHA256.fullmatch(str(key_sha)):
        problems.append(f"fluentd_apt_key_sha256={key_sha!r}: 64 lower-case hex digits")
    return problems


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
    # check() filled in a placeholder: the host's own codename is only known now
    problems = repository_problems(repo_data, str(codename))
    if problems:
        raise OperationError(f"{host.name}: with codename {codename!r}: {'; '.join(problems)}")
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
        yield managed.apt_lock_notice()
        yield managed.apt_command("-qq", "update")
    if package_needed:
        yield managed.apt_command("install", "--allow-downgrades", f"fluent-package={version}")
    for name in missing_gems:
        yield StringCommand(
            "fluent-gem", "install", "--no-document", QuoteString(name), "--version", QuoteString(gems[name])
        )
    if missing_gems:
        # New plugin code is only loaded by a fresh process
        yield StringCommand("systemctl", "try-restart", "fluentd.service")


def fluentd_dry_run(staged: str) -> StringCommand:
    return StringCommand("fluentd", "--dry-run", "-q", "-c", QuoteString(staged))


@deploy("Fluentd")
def fluentd() -> None:
    """Install fluent-package from its apt repository and ship node and container logs to Elasticsearch."""
    settings = Settings()
    package_version = str(settings["fluentd_package_version"])
    gems = {str(name): str(version) for name, version in (settings["fluentd_gems"] or {}).items()}
    fluent_package(
        name=f"Install fluent-package {package_version} and plugins from the Fluentd apt repository",
        repo_data={key: settings[key] for key in DEFAULTS if key.startswith(("fluentd_apt_", "fluentd_codename"))},
        version=package_version,
        gems=gems,
    )

    files = [
        ConfigFile(
            path=ENVIRONMENT_FILE,
            content=render_template(
                "etc/fluent/elasticsearch.env.j2",
                password=escape_env_value(str(settings["fluentd_elasticsearch_password"] or "")),
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
            content=render_template("etc/fluent/fluentd.conf.j2", **fluentd_settings(settings, str(host.name))),
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
                QuoteString(str(settings["fluentd_state_dir"])),
                QuoteString(str(settings["fluentd_buffer_path"])),
            )
        ],
        on_change=[StringCommand("systemctl", "restart", "fluentd.service")],
    )


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["fluentd_enabled"])


COMPONENT = Component(
    name="fluentd",
    defaults=DEFAULTS,
    deploy=fluentd,
    should_run=should_run,
    choices=CHOICES,
    checks=(check,),
    required=frozenset(REQUIRED),
)
