"""VictoriaLogs, the central log store, in the ``logging`` namespace (Pod Security ``restricted``).

A supported alternative to the platform's default stack (host Fluentd -> Elasticsearch -> Kibana): one
VictoriaLogs (``github.com/VictoriaMetrics/VictoriaLogs``, Apache-2.0) with its built-in UI at
``/select/vmui/`` and the LogsQL API at ``/select/logsql/``, fed by

* vlagent on every node (``victorialogs_agent``): container stdout/stderr with Kubernetes metadata, and the
  node journal that ``journal_upload`` pushes to it; vlagent buffers on its node's disk while the store is
  away, so a store restart loses nothing;
* or the host Fluentd (``fluentd_output: victorialogs``), through VictoriaLogs' Elasticsearch bulk endpoint.

Placement: ``victorialogs_node`` (default: the first host with the ``monitoring`` role that runs kubelet, as
Prometheus); the data is the ``local_storage`` volume there. Retention by age (``-retentionPeriod``) and by
disk (``-retention.maxDiskSpaceUsageBytes``, kept below the volume so the store drops old days before the
volume fills). One replica: the store is a StatefulSet for its stable claim, not for scaling.

Image: upstream's ``docker.io/victoriametrics/victoria-logs`` at a pinned tag; the lab builds that reference
from the Go module (``lab/images/victorialogs.py``). Upstream's image runs as root; the pod runs as nobody.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from deploys import addon
from spectra import cluster_settings

NAMESPACE = "logging"
NAME = "victorialogs"
PORT = 9428
CLAIM = f"data-{NAME}-0"  # the StatefulSet's claim of its one replica
TEMPLATES = (f"addons/{NAME}/victorialogs.yaml.j2",)
DATA_DIR = "/victoria-logs-data"

DEFAULTS: dict[str, Any] = {
    "victorialogs_enabled": True,  # the VictoriaLogs store
    "victorialogs_image": "docker.io/victoriametrics/victoria-logs:v1.52.1",  # upstream image, pinned
    "victorialogs_node": None,  # node of its volume and pod; None: first monitoring host that runs kubelet
    "victorialogs_retention_period": "7d",  # drop logs older than this (h, d, w, M, y; at least 1d)
    "victorialogs_retention_max_disk": "8GiB",  # and drop the oldest days above this (below the volume size)
    "victorialogs_storage_size": "10Gi",  # the node-local volume's capacity
    # the Service's clusterIP; None: any. Fixed, hosts can reach the store by address (no cluster DNS there)
    "victorialogs_cluster_ip": None,
    "victorialogs_cpu_request": "100m",
    "victorialogs_memory_request": "256Mi",
    "victorialogs_cpu_limit": "1",
    "victorialogs_memory_limit": "1Gi",
}

# keys whose default is None: what a value must be
TYPES: dict[str, type | tuple[type, ...]] = {"victorialogs_node": str, "victorialogs_cluster_ip": str}
RESOURCE_KEYS = ("victorialogs_cpu_request", "victorialogs_memory_request", "victorialogs_cpu_limit",
                 "victorialogs_memory_limit")  # fmt: skip
_PERIOD = re.compile(r"^([0-9]+)(h|d|w|M|y)$")
_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "M": 24 * 31, "y": 24 * 365}
# VictoriaLogs' size flags: a number with an optional KB, MB, GB, TB (10^n) or KiB, MiB, GiB, TiB (2^n)
_VL_SIZE = re.compile(r"^([0-9]+)(KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$")
_VL_UNITS = {None: 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_Q_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")


def quantity_bytes(text: str) -> float | None:
    """A Kubernetes quantity (``10Gi``) in units, or None when it is not one."""
    match = _QUANTITY.match(text)
    return float(match.group(1)) * _Q_UNITS[match.group(2)] if match else None


def size_bytes(text: str) -> int | None:
    """A VictoriaLogs size (``8GiB``) in bytes, or None when it is not one."""
    match = _VL_SIZE.match(text)
    return int(match.group(1)) * _VL_UNITS[match.group(2)] if match else None


def fixed_service_ip(settings: Mapping[str, Any], key: str, others: Mapping[str, Any]) -> list[str]:
    """Problems with ``settings[key]``, a fixed clusterIP: inside the Service range, not the network's first
    two addresses, not one of ``others`` (key -> address already taken)."""
    value = settings[key]
    if value is None:
        return []
    try:
        address = ipaddress.ip_address(str(value))
        networks = cluster_settings.service_networks(settings["cluster_service_cidr"])
    except ValueError as error:
        return [f"{key}={value!r}: {error}"]
    inside = [network for network in networks if address in network]
    if not inside:
        return [f"{key}={value!r}: must be inside cluster_service_cidr ({settings['cluster_service_cidr']})"]
    if any(address in (network.network_address, network.network_address + 1) for network in inside):
        return [f"{key}={value!r}: the network address and the first address of the range are taken"]
    taken = [other for other, used in others.items() if used is not None and str(used) == str(address)]
    return [f"{key}={value!r}: already {other}" for other in taken]


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []
    if not IMAGE.match(str(settings["victorialogs_image"])):
        problems.append(f"victorialogs_image={settings['victorialogs_image']!r}: an image reference")
    period = _PERIOD.match(str(settings["victorialogs_retention_period"]))
    if not period or int(period.group(1)) * _HOURS[period.group(2)] < 24:
        problems.append(f"victorialogs_retention_period={settings['victorialogs_retention_period']!r}: "
                        "a duration of at least one day such as 7d, 36h, 4w, 3M or 1y (not negative)")  # fmt: skip
    for key in ("victorialogs_storage_size", *RESOURCE_KEYS):
        if quantity_bytes(str(settings[key])) is None:
            problems.append(f"{key}={settings[key]!r}: a Kubernetes quantity such as 10Gi, 200m or 1")
    disk = size_bytes(str(settings["victorialogs_retention_max_disk"]))
    volume = quantity_bytes(str(settings["victorialogs_storage_size"]))
    if not disk:
        problems.append(f"victorialogs_retention_max_disk={settings['victorialogs_retention_max_disk']!r}: "
                        "a size above 0 such as 8GiB or 500MB (KB, MB, GB, TB, KiB, MiB, GiB, TiB)")  # fmt: skip
    elif volume is not None and disk >= volume:
        # at the limit VictoriaLogs drops whole days: above the volume, the volume fills first
        size = settings["victorialogs_storage_size"]
        problems.append(f"victorialogs_retention_max_disk={settings['victorialogs_retention_max_disk']!r}: "
                        f"must be below victorialogs_storage_size ({size})")  # fmt: skip
    problems += fixed_service_ip(settings, "victorialogs_cluster_ip", {"cluster_dns_ip": settings["cluster_dns_ip"]})
    return problems


def store_node(settings: Mapping[str, Any]) -> str:
    """Where the store and its volume go: ``victorialogs_node``, else the first monitoring host running kubelet."""
    return addon.data_node(settings, "victorialogs_node", "VictoriaLogs")


def volumes(settings: Mapping[str, Any]) -> list[addon.LocalVolume]:
    # nobody:nogroup (65534), the user the pod runs as
    return [addon.LocalVolume(store_node(settings), NAMESPACE, CLAIM, str(settings["victorialogs_storage_size"]),
                              user="nobody", group="nogroup")]  # fmt: skip


def service_host(settings: Mapping[str, Any]) -> str:
    """The store's in-cluster DNS name (what vlagent writes to)."""
    return f"{NAME}.{NAMESPACE}.svc.{settings['cluster_domain']}"


def args(settings: Mapping[str, Any]) -> list[str]:
    return [
        f"-storageDataPath={DATA_DIR}",
        f"-retentionPeriod={settings['victorialogs_retention_period']}",
        f"-retention.maxDiskSpaceUsageBytes={settings['victorialogs_retention_max_disk']}",
        f"-httpListenAddr=:{PORT}",
        "-loggerFormat=json",  # its own logs land in the store too: JSON becomes fields
    ]


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    store_node(settings)  # refuses a cluster without a place for the data, before anything is applied
    return {
        "namespace": NAMESPACE,
        "name": NAME,
        "port": PORT,
        "image": settings["victorialogs_image"],
        "args": args(settings),
        "data_dir": DATA_DIR,
        "claim": CLAIM.removesuffix(f"-{NAME}-0"),
        "storage_class": settings["local_storage_class"],
        "storage_size": settings["victorialogs_storage_size"],
        "cluster_ip": settings["victorialogs_cluster_ip"],
        "resources": {key.removeprefix("victorialogs_"): settings[key] for key in RESOURCE_KEYS},
    }


ADDON = addon.Addon(
    name=NAME,
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    namespace=NAMESPACE,
    pod_security="restricted",
    checks=(check,),
    volumes=volumes,
)
COMPONENT = addon.addon_component(ADDON)
