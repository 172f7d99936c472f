"""When the cluster's certificates expire, as Prometheus metrics through the node exporter's textfile collector.

A POSIX sh script (``templates/usr/local/sbin/spectra-certificate-metrics.j2``, openssl and Debian's essential
tools only), run as a sandboxed oneshot service by a timer (2 minutes after boot, then every
``certificate_metrics_interval``), writes ``<node_exporter_textfile_dir>/spectra_certificates.prom``: a hidden
temporary file in that directory renamed over the old one, so the collector never reads half a file.

* ``spectra_certificate_expiry_timestamp_seconds{component,path}``: notAfter of every ``*.crt`` under
  ``kubernetes_pki_dir`` (subdirectories too), of the ``client-certificate-data`` of each kubeconfig
  (``*.conf``) in ``kubernetes_config_dir``, and of ``*.crt`` and ``kubelet-client-current.pem`` in
  ``kubelet_cert_dir``. ``component``: ``apiserver`` (apiserver.crt and apiserver-kubelet-client.crt: the
  certificates the apiserver presents), ``etcd`` (etcd/server.crt), ``etcd-peer``, ``etcd-client``
  (etcd/healthcheck-client.crt and apiserver-etcd-client.crt), ``etcd-ca`` (etcd/ca.crt), ``ca`` (ca.crt),
  ``front-proxy`` (front-proxy-ca.crt and front-proxy-client.crt), ``kubelet`` (the PKI's kubelet/ serving
  certificate and kubelet's own files), a kubeconfig's name for its client certificate (``admin``,
  ``kubelet``, ``controller-manager``, ``scheduler``, ``super-admin``), else the file's name without ``.crt``.
  The path tells certificates of one component apart.
* ``spectra_certificate_parse_errors``: files of those that held no readable certificate (each named in the
  journal); they never stop the others being reported.
* ``spectra_certificate_metrics_last_run_timestamp_seconds``: when the file was written (a stuck timer shows).

An alert "expiring within 30 days" is then
``spectra_certificate_expiry_timestamp_seconds - time() < 30 * 86400``.

Only certificates reach openssl: of a file that holds a key too (a kubeconfig, kubelet-client-current.pem)
the script passes on the certificate alone, and ``*.key`` files are never opened. The service runs as root
(the PKI directories are root's) with a read-only view of the system, no network, and write access to the
textfile directory only. Nothing restarts on a no-op run; a changed script or unit restarts the timer, which
(its boot delay long past) runs the new script at once. Needs the textfile directory: runs after
``node_exporter``, and only where that runs.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from typing import Any

from pyinfra.api import QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, render_template
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.config_state import ConfigState

DEFAULTS: dict[str, Any] = {
    "certificate_metrics_enabled": True,  # export certificate expiry metrics (where the node exporter runs)
    "certificate_metrics_interval": "1h",  # systemd time span between two runs (OnUnitActiveSec=)
    "certificate_metrics_script": "/usr/local/sbin/spectra-certificate-metrics",  # where the script goes
}

SERVICE = "/etc/systemd/system/spectra-certificate-metrics.service"
TIMER = "/etc/systemd/system/spectra-certificate-metrics.timer"
TIMER_UNIT = "spectra-certificate-metrics.timer"
PACKAGES = ["openssl"]  # not in a minimal Debian (ca-certificates pulls it in, but that is another's choice)
OUTPUT = "spectra_certificates.prom"  # the file written into node_exporter_textfile_dir

# systemd.time(7) units; a span is one or more "<number><unit>", or a bare number of seconds
_SPAN_UNIT = (
    "usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w"
    "|months|month|M|years|year|y"
)
_SPAN_PART = re.compile(rf"(\d+(?:\.\d+)?) *({_SPAN_UNIT}) *")
_SPAN = re.compile(rf"(?:\d+(?:\.\d+)? *(?:{_SPAN_UNIT}) *)+|\d+")
_PATH = re.compile(r"/[A-Za-z0-9_./+-]*")
# paths the unit and the script name: they must fit a unit file line unquoted
PATH_KEYS = ("certificate_metrics_script", "node_exporter_textfile_dir", "kubelet_cert_dir")


def is_time_span(value: Any) -> bool:
    """A systemd time span longer than zero (``15min``, ``1h``, ``1h 30min``, ``30s``, ``3600``)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    text = str(value)
    if not _SPAN.fullmatch(text):
        return False
    numbers = [number for number, _ in _SPAN_PART.findall(text)] or [text]
    return any(float(number) > 0 for number in numbers)


def _is_normal_path(path: str) -> bool:
    return bool(_PATH.fullmatch(path)) and path == posixpath.normpath(path)


def check(settings: Mapping[str, Any]) -> list[str]:
    """The interval and the paths that go into the unit files (pure: ``spectra validate`` runs it too)."""
    problems = []
    interval = settings["certificate_metrics_interval"]
    if not is_time_span(interval):
        problems.append(
            f"certificate_metrics_interval={interval!r}: a systemd time span longer than zero, such as 15min, 1h or 30s"
        )
    for key in PATH_KEYS:
        if not _is_normal_path(str(settings[key])):
            problems.append(f"{key}={settings[key]!r}: an absolute, normal path of letters, digits and _./+-")
    return problems


def should_run(settings: Mapping[str, Any]) -> bool:
    """Where the node exporter runs: it makes the textfile directory and reads the file."""
    return bool(settings["certificate_metrics_enabled"]) and bool(settings["node_exporter_enabled"])


def paths(settings: Mapping[str, Any]) -> list[str]:
    return [str(settings["certificate_metrics_script"]), SERVICE, TIMER]


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`certificate_metrics` reads: the installed packages, its three files and its timer."""
    return [DebPackages, (ConfigState, {"paths": paths(settings), "units": [TIMER_UNIT]})]


def check_script(staged: str) -> StringCommand:
    return StringCommand("sh", "-n", QuoteString(staged))


def render_files(settings: Mapping[str, Any]) -> list[ConfigFile]:
    """The script, its service and its timer (values checked by :func:`check`)."""
    script = str(settings["certificate_metrics_script"])
    textfile_dir = str(settings["node_exporter_textfile_dir"])
    directories = {  # shell-quoted here: the script is plain sh
        "pki_dir_q": shlex.quote(str(settings["kubernetes_pki_dir"])),
        "kubeconfig_dir_q": shlex.quote(str(settings["kubernetes_config_dir"])),
        "kubelet_dir_q": shlex.quote(str(settings["kubelet_cert_dir"])),
        "textfile_dir_q": shlex.quote(textfile_dir),
    }
    return [
        ConfigFile(
            path=script,
            content=render_template("usr/local/sbin/spectra-certificate-metrics.j2", **directories),
            mode="0755",
            validate=check_script,
        ),
        ConfigFile(
            path=SERVICE,
            content=render_template(
                "etc/systemd/system/spectra-certificate-metrics.service.j2", script=script, textfile_dir=textfile_dir
            ),
        ),
        ConfigFile(
            path=TIMER,
            content=render_template(
                "etc/systemd/system/spectra-certificate-metrics.timer.j2",
                interval=str(settings["certificate_metrics_interval"]),
            ),
        ),
    ]


@deploy("Certificate metrics")
def certificate_metrics() -> None:
    """Install the script, its service and its timer; start the timer (again only when one of them changed)."""
    settings = Settings()
    installed, current = prepared_facts(*fact_requests(settings))
    managed.apt_packages(name="Install openssl", packages=PACKAGES, update=False, current=installed)
    config_files(
        name="Certificate expiry metrics: script, service and timer",
        files=render_files(settings),
        enabled_units=[TIMER_UNIT],
        running_units=[TIMER_UNIT],
        daemon_reload=True,
        # the boot delay long past, a restarted timer runs the (new) script at once
        on_change=[StringCommand("systemctl", "restart", TIMER_UNIT)],
        current=current,
    )


COMPONENT = Component(
    name="certificate_metrics",
    defaults=DEFAULTS,
    deploy=certificate_metrics,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
