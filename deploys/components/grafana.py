"""Grafana in the ``monitoring`` namespace: the Prometheus addon as its datasource, the repository's dashboards
provisioned (read-only), an admin whose password is a setting.

* Image: upstream's ``docker.io/grafana/grafana`` at a pinned tag and digest. The lab cannot have it (Grafana's
  Go module is AGPL-licensed and not served to the lab, which builds its images from Go modules):
  ``group_data/lab.py`` turns the addon off, and a lab test has the real apiserver check this manifest with
  ``--dry-run=server`` instead.
* Dashboards: every ``templates/addons/grafana/dashboards/*.json`` (not templated: placed as parsed) and the
  ``*.json`` of ``grafana_extra_dashboards_dir``, one ConfigMap each, checked before anything is rendered
  (``spectra.dashboards``: JSON, uid, Prometheus datasource, queries with known variables): a bad file stops
  ``spectra validate`` and the deploy, naming it. Grafana rereads the directory, so a changed dashboard needs
  no restart.
* State: none kept. The database is an emptyDir (``/var/lib/grafana``): dashboards and the datasource come
  from provisioning, and the admin password from the ``grafana-admin`` Secret is applied at each start (Grafana
  sets it when it creates its database). A changed password or configuration restarts the pod (the pod
  template's checksum annotation; the password enters it through scrypt, so the annotation does not make it
  cheap to guess).
* Restricted Pod Security: uid/gid 472 (upstream's ``grafana`` user), read-only root filesystem, no
  capabilities, no ServiceAccount token (Grafana does not talk to the apiserver).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from deploys import addon
from deploys.components import prometheus
from deploys.templating import TEMPLATES_DIR
from spectra import dashboards, values

NAMESPACE = prometheus.NAMESPACE
DASHBOARDS_DIR = TEMPLATES_DIR / "addons" / "grafana" / "dashboards"
DASHBOARDS_MOUNT = "/etc/grafana/dashboards"
SECRET_MOUNT = "/etc/grafana/secrets"
HOME_DASHBOARD = "node-overview.json"
# a ConfigMap holds at most 1 MiB; leave room for its metadata
MAX_DASHBOARD_BYTES = 900 * 1024

DEFAULTS: dict[str, Any] = {
    "grafana_enabled": True,  # the Grafana addon (needs the Prometheus addon: its datasource)
    # upstream image, pinned by tag and digest (the multi-arch index of 12.2.1)
    "grafana_image": (
        "docker.io/grafana/grafana:12.2.1@sha256:35c41e0fd0295f5d0ee5db7e780cf33506abfaf47686196f825364889dee878b"
    ),
    "grafana_admin_user": "admin",
    # None: derived from the cluster CA's key (HMAC), the same on every run and secret to whoever lacks that key;
    # read it from the grafana-admin Secret. No well-known default password ships.
    "grafana_admin_password": None,
    "grafana_extra_dashboards_dir": None,  # a directory whose *.json dashboards are provisioned too
    "grafana_cpu_request": "100m",
    "grafana_memory_request": "256Mi",
    "grafana_cpu_limit": "1",
    "grafana_memory_limit": "1Gi",
}
TYPES: dict[str, type | tuple[type, ...]] = {"grafana_admin_password": str, "grafana_extra_dashboards_dir": str}
RESOURCE_KEYS = ("grafana_cpu_request", "grafana_memory_request", "grafana_cpu_limit", "grafana_memory_limit")

_USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
# the file's stem names its ConfigMap (grafana-dashboard-<stem>): a DNS label
_STEM = re.compile(r"^[a-z0-9]([a-z0-9-]{0,43}[a-z0-9])?$")


def _prometheus_setting(settings: Mapping[str, Any], key: str) -> Any:
    # the Prometheus addon's key: a partial dict (render_addon's, tests') may not hold it
    return settings[key] if key in settings else prometheus.DEFAULTS[key]


def dashboard_files(settings: Mapping[str, Any]) -> tuple[list[Path], list[str]]:
    """The dashboard files to provision (the repository's, then the extra directory's) and the problems found
    listing them."""
    files = sorted(DASHBOARDS_DIR.glob("*.json"))
    problems: list[str] = []
    extra = settings["grafana_extra_dashboards_dir"]
    if extra is not None:
        directory = Path(str(extra)).expanduser()
        if not isinstance(extra, str) or not directory.is_dir():
            problems.append(f"grafana_extra_dashboards_dir={extra!r}: not a directory")
        else:
            files += sorted(directory.glob("*.json"))
    return files, problems


def dashboard_problems(files: list[Path]) -> list[str]:
    """Each file checked (``spectra.dashboards``), then what the set needs: ConfigMap names and unique uids."""
    problems: list[str] = []
    stems: dict[str, Path] = {}
    uids: dict[str, Path] = {}
    for path in files:
        if not _STEM.match(path.stem):
            problems.append(f"{path}: the file name (before .json) must be a DNS label, it names a ConfigMap")
        elif path.stem in stems:
            problems.append(f"{path}: same name as {stems[path.stem]}")
        stems.setdefault(path.stem, path)
        try:
            size = path.stat().st_size
        except OSError as error:
            problems.append(f"{path}: cannot be read: {error}")
            continue
        if size > MAX_DASHBOARD_BYTES:
            problems.append(f"{path}: {size} bytes, more than a ConfigMap holds ({MAX_DASHBOARD_BYTES})")
            continue
        found = dashboards.check_file(path)
        problems.extend(found)
        if not found:
            uid = str(dashboards.load(path)["uid"])
            if uid in uids:
                problems.append(f"{path}: uid {uid!r} is also {uids[uid]}'s (Grafana provisions one of them)")
            uids.setdefault(uid, path)
    return problems


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings and the dashboard files, each naming its key or file (pure: reads the files;
    ``spectra validate`` runs it too)."""
    problems: list[str] = []
    image = settings["grafana_image"]
    if not isinstance(image, str) or not values.IMAGE_REFERENCE.match(image):
        problems.append(f"grafana_image={image!r}: an image reference")
    password = settings["grafana_admin_password"]
    if password == "admin":
        problems.append("grafana_admin_password: not Grafana's well-known default")
    elif password is not None and (not isinstance(password, str) or len(password.strip()) < 12):
        problems.append("grafana_admin_password: at least 12 characters (or None: derived from the cluster CA key)")
    user = settings["grafana_admin_user"]
    if not isinstance(user, str) or not _USER.match(user):
        problems.append(f"grafana_admin_user={user!r}: 1 to 64 characters of A-Z a-z 0-9 . _ @ -")
    for key in RESOURCE_KEYS:
        if not values.QUANTITY.match(str(settings[key])):
            problems.append(f"{key}={settings[key]!r}: a Kubernetes quantity such as 256Mi, 100m or 1")
    if not _prometheus_setting(settings, "prometheus_enabled"):
        problems.append("grafana_enabled: its datasource is the Prometheus addon; set prometheus_enabled too")
    files, listed = dashboard_files(settings)
    return problems + listed + dashboard_problems(files)


def datasource_url() -> str:
    return f"http://prometheus.{prometheus.NAMESPACE}.svc:9090"


def grafana_ini(settings: Mapping[str, Any]) -> str:
    """Grafana's configuration: no sign-up, no anonymous access, nothing fetched from the internet (usage
    reports, update checks, news, the plugins Grafana 12 installs at start), logs to the console."""
    sections: dict[str, dict[str, str]] = {
        "server": {"http_port": "3000"},
        "security": {
            "admin_user": str(settings["grafana_admin_user"]),
            "admin_password": f"$__file{{{SECRET_MOUNT}/admin-password}}",
            "disable_gravatar": "true",
        },
        "users": {"allow_sign_up": "false"},
        "auth.anonymous": {"enabled": "false"},
        "analytics": {
            "reporting_enabled": "false",
            "check_for_updates": "false",
            "check_for_plugin_updates": "false",
            "feedback_links_enabled": "false",
        },
        "news": {"news_feed_enabled": "false"},
        "plugins": {"preinstall_disabled": "true"},
        "snapshots": {"external_enabled": "false"},
        "dashboards": {"default_home_dashboard_path": f"{DASHBOARDS_MOUNT}/{HOME_DASHBOARD}"},
        "log": {"mode": "console"},
    }
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items()) + "\n"
        for name, values in sections.items()
    )


def datasources(settings: Mapping[str, Any]) -> str:
    interval = _prometheus_setting(settings, "prometheus_scrape_interval")
    source = {
        "name": "Prometheus",
        "uid": dashboards.DATASOURCE_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": datasource_url(),
        "isDefault": True,
        "editable": False,
        # Grafana's $__rate_interval is four of these at least
        "jsonData": {"timeInterval": str(interval), "httpMethod": "POST"},
    }
    return yaml.safe_dump({"apiVersion": 1, "datasources": [source]}, sort_keys=False)


def dashboard_providers() -> str:
    provider = {
        "name": "spectra",
        "orgId": 1,
        "folder": "Spectra",
        "folderUid": "spectra",
        "type": "file",
        "disableDeletion": True,
        "allowUiUpdates": False,  # the repository is where dashboards change
        "updateIntervalSeconds": 60,
        "options": {"path": DASHBOARDS_MOUNT},
    }
    return yaml.safe_dump({"apiVersion": 1, "providers": [provider]}, sort_keys=False)


def admin_password(settings: Mapping[str, Any]) -> str:
    """``grafana_admin_password``, else one derived from the cluster CA's private key: stable across runs (no
    change on a re-push), different per cluster, known only to whoever holds the PKI."""
    if settings["grafana_admin_password"]:
        return str(settings["grafana_admin_password"])
    from pyinfra import host

    from deploys.components import pki

    bundle = pki.cluster_pki(*pki.cluster_spec(list(host.state.inventory)))
    digest = hmac.new(bundle.key("ca"), b"spectra grafana admin password", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    files, _ = dashboard_files(settings)
    password = admin_password(settings)
    ini, sources, providers = grafana_ini(settings), datasources(settings), dashboard_providers()
    hidden = hashlib.scrypt(password.encode(), salt=b"spectra-grafana-admin", n=2**14, r=8, p=1).hex()
    checksum = hashlib.sha256(json.dumps([ini, sources, providers, hidden]).encode()).hexdigest()
    return {
        "namespace": NAMESPACE,
        "image": settings["grafana_image"],
        "grafana_ini": ini,
        "datasources": sources,
        "providers": providers,
        "admin_password": password,
        # compact: half the bytes of the indented files, in the ConfigMaps and in the set's YAML to parse
        "dashboards": {path.stem: json.dumps(dashboards.load(path), separators=(",", ":")) for path in files},
        "dashboards_mount": DASHBOARDS_MOUNT,
        "secret_mount": SECRET_MOUNT,
        "checksum": checksum,
        "resources": {key.removeprefix("grafana_"): settings[key] for key in RESOURCE_KEYS},
    }


ADDON = addon.Addon(
    name="grafana",
    defaults=DEFAULTS,
    templates=addon.template_files("grafana"),
    context=context,
    namespace=NAMESPACE,
    checks=(check,),
)
COMPONENT = addon.addon_component(ADDON)
