"""auditd watches on Kubernetes, container runtime and host security files.

Rules go to ``/etc/audit/rules.d/60-spectra-kubernetes.rules`` and are loaded with ``augenrules --load``
only when that file changed. Directories the rules watch into are created first (a watch needs its
parent directory; the file itself may appear later, e.g. when kubeadm writes it).

Whether this host can load audit rules at all is a fact the run cannot change (``AuditSupport``:
container, CAP_AUDIT_CONTROL, ``audit=0``). In a container-like lab node the kernel audit subsystem is
the host's (it is not namespaced): loading rules there would change the shared kernel, and auditd usually
cannot start. Then the rules file is still written (so it can be inspected), auditd is neither installed
nor started, and the run says so in a warning; nothing pretends the rules are active.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, render_template
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.config_state import ConfigState
from facts.security import AuditSupport

DEFAULTS: dict[str, Any] = {
    "audit_enabled": True,  # manage audit rules at all
    "audit_rules_path": "/etc/audit/rules.d/60-spectra-kubernetes.rules",  # rules file written
    # Watches: path, permissions (r w x a) and search key. Directories are watched recursively, so
    # /var/lib/kubelet itself is not (pod volumes are written there all the time): its config files are.
    "audit_watches": [
        {"path": "/etc/kubernetes", "permissions": "wa", "key": "kubernetes"},
        {"path": "/var/lib/kubelet/config.yaml", "permissions": "wa", "key": "kubelet"},
        {"path": "/var/lib/kubelet/kubeadm-flags.env", "permissions": "wa", "key": "kubelet"},
        {"path": "/var/lib/kubelet/pki", "permissions": "wa", "key": "kubelet"},
        {"path": "/etc/default/kubelet", "permissions": "wa", "key": "kubelet"},
        {"path": "/usr/bin/kubelet", "permissions": "wa", "key": "kubernetes_binaries"},
        {"path": "/usr/bin/kubeadm", "permissions": "wa", "key": "kubernetes_binaries"},
        {"path": "/usr/bin/kubectl", "permissions": "wa", "key": "kubernetes_binaries"},
        {"path": "/etc/containerd", "permissions": "wa", "key": "containerd"},
        {"path": "/usr/bin/containerd", "permissions": "wa", "key": "containerd"},
        {"path": "/usr/bin/containerd-shim-runc-v2", "permissions": "wa", "key": "containerd"},
        {"path": "/usr/local/bin/containerd", "permissions": "wa", "key": "containerd"},
        {"path": "/usr/sbin/runc", "permissions": "wa", "key": "runc"},
        {"path": "/usr/bin/runc", "permissions": "wa", "key": "runc"},
        {"path": "/usr/local/sbin/runc", "permissions": "wa", "key": "runc"},
        {"path": "/etc/cni/net.d", "permissions": "wa", "key": "cni"},
        {"path": "/etc/systemd/system", "permissions": "wa", "key": "systemd_units"},
        {"path": "/etc/ssh/sshd_config", "permissions": "wa", "key": "sshd"},
        {"path": "/etc/ssh/sshd_config.d", "permissions": "wa", "key": "sshd"},
        {"path": "/etc/passwd", "permissions": "wa", "key": "identity"},
        {"path": "/etc/shadow", "permissions": "wa", "key": "identity"},
        {"path": "/etc/group", "permissions": "wa", "key": "identity"},
        {"path": "/etc/gshadow", "permissions": "wa", "key": "identity"},
        {"path": "/etc/sudoers", "permissions": "wa", "key": "sudoers"},
        {"path": "/etc/sudoers.d", "permissions": "wa", "key": "sudoers"},
        {"path": "/etc/nftables.conf", "permissions": "wa", "key": "firewall"},
        {"path": "/etc/nftables.d", "permissions": "wa", "key": "firewall"},
        {"path": "/etc/sysctl.conf", "permissions": "wa", "key": "sysctl"},
        {"path": "/etc/sysctl.d", "permissions": "wa", "key": "sysctl"},
        {"path": "/etc/audit", "permissions": "wa", "key": "audit_config"},
    ],
    "audit_extra_watches": [],  # more watches, same shape, appended
    "audit_immutable": False,  # end with -e 2: rules locked until reboot (later changes need a reboot)
    # Directories created so the watches below them can be placed before the software arrives
    "audit_create_directories": ["/etc/kubernetes", "/var/lib/kubelet", "/etc/containerd", "/etc/cni/net.d"],
}

WATCH_KEYS = ("audit_watches", "audit_extra_watches")
RULES_DIR = "/etc/audit/rules.d/"
_PERMISSIONS = re.compile(r"[rwxa]{1,4}")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,31}")
_PATH = re.compile(r"/[A-Za-z0-9_./+-]*")


def _is_normal_path(path: str) -> bool:
    return bool(_PATH.fullmatch(path)) and path == posixpath.normpath(path)


def check(settings: Mapping[str, Any]) -> list[str]:
    """Rules are one line each and auditctl's syntax is strict (pure: ``spectra validate`` runs it too)."""
    problems = []
    rules_path = str(settings["audit_rules_path"])
    if not (rules_path.startswith(RULES_DIR) and rules_path.endswith(".rules")):
        problems.append(f"audit_rules_path={rules_path!r}: must be {RULES_DIR}<name>.rules (augenrules reads those)")
    seen: set[str] = set()
    for key in WATCH_KEYS:
        for watch in settings[key] or []:
            if not isinstance(watch, Mapping) or not {"path", "permissions", "key"} <= set(watch):
                problems.append(f"{key}: {watch!r} must be a mapping with path, permissions and key")
                continue
            path, permissions, name = str(watch["path"]), str(watch["permissions"]), str(watch["key"])
            if not _is_normal_path(path):
                problems.append(f"{key}: path {path!r} must be an absolute, normal path")
            if not _PERMISSIONS.fullmatch(permissions):
                problems.append(f"{key}: {path}: permissions {permissions!r} must be letters of 'rwxa'")
            if not _KEY.fullmatch(name):
                problems.append(f"{key}: {path}: key {name!r} must be a short word")
            if path in seen:
                problems.append(f"{key}: {path} listed twice (auditctl refuses duplicate rules)")
            seen.add(path)
    for directory in settings["audit_create_directories"] or []:
        if not _is_normal_path(str(directory)):
            problems.append(f"audit_create_directories: {directory!r} must be an absolute, normal path")
    return problems


def audit_watches(settings: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every watch, the extra ones last (checked by :func:`check`)."""
    watches = [*(settings["audit_watches"] or []), *(settings["audit_extra_watches"] or [])]
    return [
        {"path": str(watch["path"]), "permissions": str(watch["permissions"]), "key": str(watch["key"])}
        for watch in watches
    ]


UNITS = ["auditd.service"]


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["audit_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`audit_rules` reads at prepare time (node.py reads it with other components' facts)."""
    return [AuditSupport, DebPackages, (ConfigState, {"paths": [settings["audit_rules_path"]], "units": UNITS})]


@deploy("Audit rules")
def audit_rules() -> None:
    """Write the Kubernetes audit rules; install auditd and load them where the kernel allows."""
    settings = Settings()
    path = settings["audit_rules_path"]
    content = render_template(
        "etc/audit/rules.d/60-spectra-kubernetes.rules.j2",
        watches=audit_watches(settings),
        immutable=bool(settings["audit_immutable"]),
    )
    rules = ConfigFile(path=path, content=content, mode="640")

    # The host's audit capability is not something this run can change: branch on it here.
    support, installed, current = prepared_facts(*fact_requests(settings))
    if not support.get("can_load"):
        logger.warning(
            f"{host.name}: audit rules written to {path} but NOT loaded and auditd not installed: "
            f"{support.get('reason')}"
        )
        config_files(
            name=f"Write {path} (not loadable on this host)",
            files=[rules],
            current=current,  # read with auditd's unit too, which this call does not manage
        )
        return

    units = UNITS
    managed.apt_packages(name="Install auditd", packages=["auditd"], update=False, current=installed)
    directories = [QuoteString(str(directory)) for directory in settings["audit_create_directories"] or []]
    prepare = [StringCommand("mkdir", "-p", *directories)] if directories else []
    config_files(
        name=f"Install {path}, load it with augenrules if it changed",
        files=[rules],
        enabled_units=units,
        running_units=units,
        prepare=prepare,
        on_change=[StringCommand("augenrules", "--load")],
        current=current,
    )


COMPONENT = Component(
    name="audit_rules",
    defaults=DEFAULTS,
    deploy=audit_rules,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
