"""vlagent, VictoriaLogs' collector, on every node: the ``logging-agents`` namespace (Pod Security ``privileged``).

What it collects and with which fields (container lines: vlagent's own names; the toolkit adds nothing):

* every container's stdout/stderr, tailed from ``/var/log/pods`` (through kubelet's ``/var/log/containers``
  links), with ``kubernetes.pod_namespace``, ``kubernetes.pod_name``, ``kubernetes.container_name``,
  ``kubernetes.pod_node_name`` and, from the node's own labels (``-kubernetesCollector.includeNodeLabels``:
  vlagent reads its Node object at start), ``kubernetes.node_labels.kubernetes.io/hostname`` and
  ``kubernetes.node_labels.topology.kubernetes.io/zone`` (kubelet registers the inventory ``zone`` as that
  label). A node label cannot reach a pod through the downward API; reading the Node is the honest way.
* the node journal: vlagent v1.52 has no journal reader, but it accepts the journald export protocol
  (``/insert/journald``). ``journal_upload`` runs Debian's ``systemd-journal-upload`` on each host and pushes
  to this node's vlagent through the ``vlagent`` Service: a fixed clusterIP (hosts have no cluster DNS)
  with ``internalTrafficPolicy: Local``, so each host reaches the vlagent on its own node and nothing else.

Delivery: vlagent queues what the store has not acknowledged and retries forever (``-remoteWrite.retryMaxTime``
is only the longest wait between tries: kept short, delivery resumes within seconds of the store's return).
Its queue moves to ``-remoteWrite.tmpDataPath`` once a send has been stuck for 5 s and at a graceful stop;
its read offsets are checkpoints in the same directory. That directory is a hostPath
(``victorialogs_agent_data_dir``): buffer and offsets survive a restart of the pod, a rollout, an eviction and
a node reboot (an emptyDir would lose both with the pod: lines dropped, or read again). A crash of vlagent
(SIGKILL, OOM) loses what was still in memory: a few seconds of lines whose offsets were already saved. A block
the store answered 2xx is never sent again; a line is duplicated only when the store wrote a block but its
answer was lost (a connection cut after the write).

Pod Security: ``baseline`` forbids every hostPath volume, so the namespace must be ``privileged``; the pod
itself asks for nothing more than its hostPaths (log directories read-only): no privileged container, no
host namespaces, every capability dropped, read-only root. It runs as uid 0 because kubelet's log files are
``root:root 0640`` in ``root 0750`` directories. The store keeps its own ``restricted`` namespace.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from deploys import addon
from deploys.components import victorialogs
from spectra import cluster_settings

NAMESPACE = "logging-agents"
NAME = "vlagent"
PORT = 9429
TEMPLATES = ("addons/victorialogs-agent/vlagent.yaml.j2",)
SERVICE_IP_OFFSET = 12  # default clusterIP: the Service range's 12th address (static band; DNS is the 10th)
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}

DEFAULTS: dict[str, Any] = {
    "victorialogs_agent_enabled": True,  # vlagent on every node (and the journal upload to it)
    "victorialogs_agent_image": "docker.io/victoriametrics/vlagent:v1.52.1",  # upstream image, pinned
    # where vlagent writes; None: the victorialogs store in the cluster (its native protocol)
    "victorialogs_agent_remote_write_url": None,
    "victorialogs_agent_data_dir": "/var/lib/vlagent",  # on each node: unsent logs and read offsets
    "victorialogs_agent_max_buffer": "1GB",  # per node; when full the oldest unsent logs go (500MB steps)
    "victorialogs_agent_retry_max_delay": "5s",  # longest wait between tries while the store is away
    "victorialogs_agent_flush_interval": "1s",  # how long lines wait to be sent together
    "victorialogs_agent_service_ip": None,  # clusterIP hosts upload the journal to; None: the range's 12th
    # taints it runs on despite them (control planes by default); [{"operator": "Exists"}]: every node
    "victorialogs_agent_tolerations": [CONTROL_PLANE_TAINT],
    "victorialogs_agent_cpu_request": "50m",
    "victorialogs_agent_memory_request": "64Mi",
    "victorialogs_agent_cpu_limit": "500m",
    "victorialogs_agent_memory_limit": "512Mi",
}

# keys whose default is None: what a value must be
TYPES: dict[str, type | tuple[type, ...]] = {
    "victorialogs_agent_remote_write_url": str,
    "victorialogs_agent_service_ip": str,
}
RESOURCE_KEYS = ("victorialogs_agent_cpu_request", "victorialogs_agent_memory_request",
                 "victorialogs_agent_cpu_limit", "victorialogs_agent_memory_limit")  # fmt: skip
_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h)$")
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/[A-Za-z0-9._~/\-]*$")
_PATH = re.compile(r"^/[A-Za-z0-9._/\-]+$")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def service_ip(settings: Mapping[str, Any]) -> str:
    """The ``vlagent`` Service's clusterIP: ``victorialogs_agent_service_ip``, else the Service range's 12th."""
    if settings["victorialogs_agent_service_ip"]:
        return str(settings["victorialogs_agent_service_ip"])
    network = cluster_settings.service_networks(settings["cluster_service_cidr"])[0]
    return str(network.network_address + SERVICE_IP_OFFSET)


def journal_url(settings: Mapping[str, Any]) -> str:
    """Where ``systemd-journal-upload`` on a host posts (it appends ``/upload`` itself)."""
    return f"http://{ipaddress.ip_address(service_ip(settings))}:{PORT}/insert/journald"


def remote_write_url(settings: Mapping[str, Any]) -> str:
    if settings["victorialogs_agent_remote_write_url"]:
        return str(settings["victorialogs_agent_remote_write_url"])
    return f"http://{victorialogs.service_host(settings)}:{victorialogs.PORT}/insert/native"


def check(settings: Mapping[str, Any]) -> list[str]:
    """Problems with the settings, each naming its key (pure: ``spectra validate`` runs it too)."""
    problems: list[str] = []
    url = settings["victorialogs_agent_remote_write_url"]
    if url is None and not settings["victorialogs_enabled"]:
        problems.append("victorialogs_agent_remote_write_url: required when victorialogs_enabled is false "
                        "(the store vlagent writes to)")  # fmt: skip
    elif url is not None and not _URL.match(str(url)):
        problems.append(f"victorialogs_agent_remote_write_url={url!r}: an http(s) URL such as "
                        "http://logs.example:9428/insert/native")  # fmt: skip
    if not victorialogs.IMAGE.match(str(settings["victorialogs_agent_image"])):
        problems.append(f"victorialogs_agent_image={settings['victorialogs_agent_image']!r}: an image reference")
    if not _PATH.match(str(settings["victorialogs_agent_data_dir"])):
        problems.append(f"victorialogs_agent_data_dir={settings['victorialogs_agent_data_dir']!r}: an absolute path")
    if not victorialogs.size_bytes(str(settings["victorialogs_agent_max_buffer"])):
        problems.append(f"victorialogs_agent_max_buffer={settings['victorialogs_agent_max_buffer']!r}: a size above "
                        "0 such as 1GB or 500MB (KB, MB, GB, TB, KiB, MiB, GiB, TiB)")  # fmt: skip
    for key in ("victorialogs_agent_retry_max_delay", "victorialogs_agent_flush_interval"):
        duration = _DURATION.match(str(settings[key]))
        if not duration or int(duration.group(1)) == 0:
            problems.append(f"{key}={settings[key]!r}: a duration above 0 such as 500ms, 5s or 1m")
    for key in RESOURCE_KEYS:
        if victorialogs.quantity_bytes(str(settings[key])) is None:
            problems.append(f"{key}={settings[key]!r}: a Kubernetes quantity such as 64Mi, 50m or 1")
    tolerations = settings["victorialogs_agent_tolerations"]
    if not isinstance(tolerations, list) or not all(
        isinstance(one, dict) and one and set(one) <= TOLERATION_KEYS for one in tolerations
    ):
        problems.append(f"victorialogs_agent_tolerations={tolerations!r}: a list of tolerations "
                        f"(keys {sorted(TOLERATION_KEYS)})")  # fmt: skip
    try:
        address = service_ip(settings)
    except ValueError:
        address = None  # cluster_service_cidr's own check says why
    if address is not None:
        taken = {
            "cluster_dns_ip": settings["cluster_dns_ip"],
            "victorialogs_cluster_ip": settings["victorialogs_cluster_ip"],
        }
        problems += victorialogs.fixed_service_ip({**settings, "victorialogs_agent_service_ip": address},
                                                  "victorialogs_agent_service_ip", taken)  # fmt: skip
    return problems


def args(settings: Mapping[str, Any]) -> list[str]:
    data = str(settings["victorialogs_agent_data_dir"]).rstrip("/")
    return [
        "-kubernetesCollector",
        "-kubernetesCollector.includeNodeLabels",  # the zone (and hostname) label on every container line
        f"-tmpDataPath={data}",  # checkpoints and the send buffer, on the hostPath
        f"-remoteWrite.url={remote_write_url(settings)}",
        f"-remoteWrite.maxDiskUsagePerURL={settings['victorialogs_agent_max_buffer']}",
        f"-remoteWrite.retryMaxTime={settings['victorialogs_agent_retry_max_delay']}",
        f"-remoteWrite.flushInterval={settings['victorialogs_agent_flush_interval']}",
        f"-httpListenAddr=:{PORT}",  # journald uploads from the host, /metrics, /health
        "-loggerFormat=json",
    ]


def context(settings: Mapping[str, Any]) -> dict[str, Any]:
    problems = check(settings)
    if problems:
        raise addon.AddonError("; ".join(problems))
    return {
        "namespace": NAMESPACE,
        "name": NAME,
        "port": PORT,
        "image": settings["victorialogs_agent_image"],
        "args": args(settings),
        "data_dir": str(settings["victorialogs_agent_data_dir"]).rstrip("/"),
        "service_ip": service_ip(settings),
        "tolerations": list(settings["victorialogs_agent_tolerations"]),
        "resources": {key.removeprefix("victorialogs_agent_"): settings[key] for key in RESOURCE_KEYS},
    }


ADDON = addon.Addon(
    name="victorialogs-agent",
    defaults=DEFAULTS,
    templates=TEMPLATES,
    context=context,
    namespace=NAMESPACE,
    pod_security="privileged",  # hostPath volumes: see the module's docstring
    checks=(check,),
)
COMPONENT = addon.addon_component(ADDON)
