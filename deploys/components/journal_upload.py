"""The node journal (kubelet, containerd, sshd, everything journald holds) to VictoriaLogs, from every node.

vlagent v1.52 reads container log files but not the journal; it accepts the journald export protocol
instead. So each Kubernetes node runs Debian's ``systemd-journal-upload`` (package ``systemd-journal-remote``,
the same systemd release as the host), which follows the local journal and posts it to the ``vlagent``
Service's fixed clusterIP (``victorialogs_agent``): ``internalTrafficPolicy: Local`` sends each host to the
vlagent on its own node, which buffers on disk and forwards to the store. The host reaches a clusterIP
through kube-proxy's output rules: traffic that leaves the host, which the firewall does not filter.

Delivery: journal-upload saves the journal cursor after each upload the receiver answered 2xx
(``--save-state``, in Debian's unit): a restart resumes after the last accepted entry; the drop-in makes
systemd restart it forever (the receiver is away during a vlagent rollout). Its first start uploads what the
journal already holds (VictoriaLogs refuses entries older than its retention).

Fields: journald's own (``_HOSTNAME``, ``_SYSTEMD_UNIT``, ``MESSAGE`` as ``_msg``, ...) plus the node's
``kubernetes.io/hostname`` and ``topology.kubernetes.io/zone`` labels under the names vlagent gives container
lines (``kubernetes.node_labels.*``), as VictoriaLogs ``extra_fields``: one query by node or zone finds both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlparse

from pyinfra import host
from pyinfra.api import StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, render_template
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.config_state import ConfigState
from spectra import topology

PACKAGE = "systemd-journal-remote"
UNIT = "systemd-journal-upload.service"
CONFIG = "/etc/systemd/journal-upload.conf.d/spectra.conf"
DROPIN = "/etc/systemd/system/systemd-journal-upload.service.d/spectra.conf"
HOSTNAME_FIELD = "kubernetes.node_labels.kubernetes.io/hostname"
ZONE_FIELD = "kubernetes.node_labels.topology.kubernetes.io/zone"

DEFAULTS: dict[str, Any] = {
    "journal_upload_enabled": True,  # upload the journal of every Kubernetes node (with victorialogs_agent)
    # where to; None: this node's vlagent (victorialogs_agent). Else a journald endpoint such as
    # http://logs.example:9428/insert/journald (VictoriaLogs or vlagent; the port is required)
    "journal_upload_url": None,
}

TYPES: dict[str, type | tuple[type, ...]] = {"journal_upload_url": str}  # its default is None
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]]+:[0-9]{1,5}/[A-Za-z0-9._~/\-]*$")
_FIELD_VALUE = re.compile(r"^[A-Za-z0-9._\-]+$")  # what a node name or zone may be to travel in the URL


def check(settings: Mapping[str, Any]) -> list[str]:
    """Pure: ``spectra validate`` runs it too."""
    problems = []
    url = settings["journal_upload_url"]
    if url is not None and not _URL.match(str(url)):
        problems.append(f"journal_upload_url={url!r}: an http(s) URL with a port and no query, such as "
                        "http://logs.example:9428/insert/journald")  # fmt: skip
    zone = settings["zone"]
    if zone is not None and not _FIELD_VALUE.match(str(zone)):
        problems.append(f"zone={zone!r}: letters, digits, '.', '_' or '-' (it is sent as a log field)")
    return problems


def base_url(settings: Mapping[str, Any]) -> str:
    from deploys.components import victorialogs_agent

    return str(settings["journal_upload_url"] or victorialogs_agent.journal_url(settings))


def upload_url(settings: Mapping[str, Any], node: str) -> str:
    """The URL= of journal-upload.conf: ``<base>/upload?extra_fields=...&_=`` (it appends ``/upload``)."""
    fields = [(HOSTNAME_FIELD, node)]
    if settings["zone"]:
        fields.append((ZONE_FIELD, str(settings["zone"])))
    extra = ",".join(quote(f"{name}={value}", safe="") for name, value in fields)
    return f"{base_url(settings).rstrip('/')}/upload?extra_fields={extra}&_="


def should_run(settings: Mapping[str, Any]) -> bool:
    if not settings["journal_upload_enabled"]:
        return False
    if settings["journal_upload_url"]:
        return True
    # the default receiver is the vlagent on this node: only Kubernetes nodes have one
    return bool(
        settings["cluster_addons_enabled"] and settings["victorialogs_agent_enabled"] and topology.runs_kubelet(host)
    )


def render_files(settings: Mapping[str, Any], node: str) -> list[ConfigFile]:
    return [
        ConfigFile(
            path=CONFIG,
            content=render_template(
                "etc/systemd/journal-upload.conf.d/spectra.conf.j2", url=upload_url(settings, node)
            ),
        ),  # fmt: skip
        ConfigFile(
            path=DROPIN, content=render_template("etc/systemd/system/systemd-journal-upload.service.d/spectra.conf.j2")
        ),  # fmt: skip
    ]


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    return [DebPackages, (ConfigState, {"paths": [CONFIG, DROPIN], "units": [UNIT]})]


@deploy("Journal upload")
def journal_upload() -> None:
    settings = Settings()
    packages, current = prepared_facts(*fact_requests(settings))
    # the package enables no unit: it starts below, once its configuration is in place
    managed.apt_packages(name=f"Install {PACKAGE}", packages=[PACKAGE], current=packages)
    config_files(
        name=f"Upload the journal to {urlparse(base_url(settings)).netloc}",
        files=render_files(settings, str(host.name)),
        daemon_reload=True,
        enabled_units=[UNIT],
        running_units=[UNIT],
        on_change=[StringCommand("systemctl", "restart", UNIT)],
        current=current,
    )


COMPONENT = Component(
    name="journal_upload",
    defaults=DEFAULTS,
    deploy=journal_upload,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
