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
from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host, logger
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, render_template
from deploys.prepare import FactRequest, component_data, prepared_facts
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

_PERMISSIONS = re.compile(r"^[rwxa]{1,4}$")
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,31}$")
_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")


def audit_watches(data: dict[str, Any]) -> list[dict[str, str]]:
    """The validated watch list (rules are one line each and auditctl syntax is strict)."""
    watches = [*(data["audit_watches"] or []), *(data["audit_extra_watches"] or [])]
    result: list[dict[str, str]] = []
    seen: set[str] = set()
    for watch in watches:
        path, permissions, key = str(watch["path"]), str(watch["permissions"]), str(watch["key"])
        if not _PATH.match(path) or path != posixpath.normpath(path):
            raise DeployError(f"audit watch path {path!r} must be an absolute, normal path")
        if not _PERMISSIONS.match(permissions):
            raise DeployError(f"audit watch {path}: permissions {permissions!r} must be letters of 'rwxa'")
        if not _KEY.match(key):
            raise DeployError(f"audit watch {path}: key {key!r} must be a short word")
        if path in seen:
            raise DeployError(f"audit watch {path} listed twice (auditctl refuses duplicate rules)")
        seen.add(path)
        result.append({"path": path, "permissions": permissions, "key": key})
    return result


UNITS = ["auditd.service"]


def fact_requests() -> list[FactRequest]:
    """What :func:`audit_rules` reads at prepare time (node.py reads it with other components' facts)."""
    data = component_data(DEFAULTS)
    if not data["audit_enabled"]:
        return []
    return [AuditSupport, DebPackages, (ConfigState, {"paths": [data["audit_rules_path"]], "units": UNITS})]


@deploy("Audit rules", data_defaults=DEFAULTS)
def audit_rules() -> None:
    """Write the Kubernetes audit rules; install auditd and load them where the kernel allows."""
    data = {key: host.data.get(key) for key in DEFAULTS}
    if not data["audit_enabled"]:
        host.noop("audit rules disabled (audit_enabled=False)")
        return
    path = data["audit_rules_path"]
    if not (path.startswith("/etc/audit/rules.d/") and path.endswith(".rules")):
        raise DeployError("audit_rules_path must be /etc/audit/rules.d/<name>.rules (augenrules reads those)")
    content = render_template(
        "etc/audit/rules.d/60-spectra-kubernetes.rules.j2",
        watches=audit_watches(data),
        immutable=bool(data["audit_immutable"]),
    )
    rules = ConfigFile(path=path, content=content, mode="640")

    # The host's audit capability is not something this run can change: branch on it here.
    support, installed, current = prepared_facts(*fact_requests())
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
    directories = [QuoteString(str(directory)) for directory in data["audit_create_directories"] or []]
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


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["audit_enabled"])


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="audit_rules",
    defaults=DEFAULTS,
    deploy=audit_rules,
    should_run=should_run,
    fact_requests=_fact_requests,
)
