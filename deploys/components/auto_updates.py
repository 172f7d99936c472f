"""Automatic security updates with unattended-upgrades: Debian security origin only.

Debian's own ``50unattended-upgrades`` also allows the stable point-release origin; our file, read after
it, clears that list and allows the security archive alone. Kubernetes and container runtime packages
are held back (the deploy upgrades them to pinned versions). Rebooting after an update that asks for it
is a setting, off by default: a node reboot should be drained first. Both files are checked with
``apt-config`` before they replace the live ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.config_files import ConfigFile, config_files, render_template
from deploys.prepare import FactRequest, component_data, prepared_facts
from facts.config_state import ConfigState

DEFAULTS: dict[str, Any] = {
    "auto_updates_enabled": True,  # manage unattended-upgrades at all
    # Allowed origins (apt "o=,n=,l=" patterns; ${distro_codename} is expanded by unattended-upgrades)
    "auto_updates_origins": [
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
        "origin=Debian,codename=${distro_codename},label=Debian-Security",
    ],
    # Never upgraded automatically (regular expressions over package names)
    "auto_updates_blacklist": [
        "kubelet",
        "kubeadm",
        "kubectl",
        "cri-tools",
        "containerd",
        "containerd.io",
        "runc",
        "fluent-package",
    ],
    "auto_updates_reboot": False,  # reboot by itself when an update needs it
    "auto_updates_reboot_with_users": False,  # ... even with users logged in
    "auto_updates_reboot_time": "03:30",  # when that reboot happens (HH:MM, local time)
}

_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_SAFE = re.compile(r'^(?:[^"\n;{}$]|\$\{distro_[a-z]+\})+$')


def apt_config_check(staged: str) -> StringCommand:
    return StringCommand("apt-config", "-c", QuoteString(staged), "dump", ">/dev/null")


FILES = ["/etc/apt/apt.conf.d/20auto-upgrades", "/etc/apt/apt.conf.d/52spectra-unattended-upgrades"]
TIMERS = ["apt-daily.timer", "apt-daily-upgrade.timer"]


def fact_requests() -> list[FactRequest]:
    """What :func:`auto_updates` reads at prepare time (node.py reads it with other components' facts)."""
    if not component_data(DEFAULTS)["auto_updates_enabled"]:
        return []
    return [DebPackages, (ConfigState, {"paths": FILES, "units": TIMERS})]


def render_files(data: dict[str, Any]) -> list[ConfigFile]:
    if not _TIME.match(str(data["auto_updates_reboot_time"])):
        raise DeployError("auto_updates_reboot_time must be HH:MM")
    for key in ("auto_updates_origins", "auto_updates_blacklist"):
        for item in data[key] or []:
            if not _SAFE.match(str(item)):
                raise DeployError(
                    f"{key}: {item!r} may not contain quotes, semicolons or braces "
                    "(variables like ${distro_codename} are fine)"
                )
    if not data["auto_updates_origins"]:
        raise DeployError("auto_updates_origins is empty: set auto_updates_enabled=False instead")
    settings = render_template(
        "etc/apt/apt.conf.d/52spectra-unattended-upgrades.j2",
        origins=list(data["auto_updates_origins"]),
        blacklist=list(data["auto_updates_blacklist"] or []),
        reboot="true" if data["auto_updates_reboot"] else "false",
        reboot_with_users="true" if data["auto_updates_reboot_with_users"] else "false",
        reboot_time=data["auto_updates_reboot_time"],
    )
    return [
        ConfigFile(
            path=FILES[0],
            content=render_template("etc/apt/apt.conf.d/20auto-upgrades.j2"),
            validate=apt_config_check,
        ),
        ConfigFile(
            path=FILES[1],
            content=settings,
            validate=apt_config_check,
        ),
    ]


@deploy("Automatic security updates", data_defaults=DEFAULTS)
def auto_updates() -> None:
    """Install and configure unattended-upgrades for the security archive only."""
    data = {key: host.data.get(key) for key in DEFAULTS}
    if not data["auto_updates_enabled"]:
        host.noop("automatic updates disabled (auto_updates_enabled=False)")
        return
    files = render_files(data)
    timers = TIMERS
    installed, current = prepared_facts(*fact_requests())  # what config_files(files, timers) would read
    managed.apt_packages(
        name="Install unattended-upgrades", packages=["unattended-upgrades"], update=False, current=installed
    )
    config_files(
        name="Configure unattended-upgrades (security origin only)",
        files=files,
        enabled_units=timers,
        running_units=timers,
        current=current,
    )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["auto_updates_enabled"])


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="auto_updates",
    defaults=DEFAULTS,
    deploy=auto_updates,
    should_run=should_run,
    fact_requests=_fact_requests,
)
