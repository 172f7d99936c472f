"""Automatic security updates with unattended-upgrades: Debian security origin only.

Debian's own ``50unattended-upgrades`` also allows the stable point-release origin; our file, read after
it, clears that list and allows the security archive alone. Kubernetes and container runtime packages
are held back (the deploy upgrades them to pinned versions). Rebooting after an update that asks for it
is a setting, off by default: a node reboot should be drained first. Both files are checked with
``apt-config`` before they replace the live ones.
"""

from __future__ import annotations

import re
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

_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
# what fits in a double-quoted apt.conf string: no quote, semicolon, brace or line break; ${distro_*} only
_SAFE = re.compile(r'(?:[^"\n;{}$]|\$\{distro_[a-z]+\})+')
LIST_KEYS = ("auto_updates_origins", "auto_updates_blacklist")


def check(settings: Mapping[str, Any]) -> list[str]:
    """What apt.conf can hold (pure: ``spectra validate`` runs it too)."""
    problems = []
    reboot_time = settings["auto_updates_reboot_time"]
    if not _TIME.fullmatch(str(reboot_time)):
        problems.append(f"auto_updates_reboot_time={reboot_time!r}: HH:MM, such as 03:30")
    for key in LIST_KEYS:
        for item in settings[key] or []:
            if not _SAFE.fullmatch(str(item)):
                problems.append(
                    f"{key}: {item!r} may not contain quotes, semicolons or braces "
                    "(variables like ${distro_codename} are fine)"
                )
    if not settings["auto_updates_origins"]:
        problems.append(
            f"auto_updates_origins={settings['auto_updates_origins']!r}: at least one origin pattern "
            "(set auto_updates_enabled=False to turn automatic updates off)"
        )
    return problems


def apt_config_check(staged: str) -> StringCommand:
    return StringCommand("apt-config", "-c", QuoteString(staged), "dump", ">/dev/null")


FILES = ["/etc/apt/apt.conf.d/20auto-upgrades", "/etc/apt/apt.conf.d/52spectra-unattended-upgrades"]
TIMERS = ["apt-daily.timer", "apt-daily-upgrade.timer"]


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["auto_updates_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`auto_updates` reads at prepare time (node.py reads it with other components' facts)."""
    return [DebPackages, (ConfigState, {"paths": FILES, "units": TIMERS})]


def render_files(settings: Mapping[str, Any]) -> list[ConfigFile]:
    """Both apt.conf.d files (values checked by :func:`check`)."""
    options = render_template(
        "etc/apt/apt.conf.d/52spectra-unattended-upgrades.j2",
        origins=list(settings["auto_updates_origins"]),
        blacklist=list(settings["auto_updates_blacklist"] or []),
        reboot="true" if settings["auto_updates_reboot"] else "false",
        reboot_with_users="true" if settings["auto_updates_reboot_with_users"] else "false",
        reboot_time=settings["auto_updates_reboot_time"],
    )
    return [
        ConfigFile(
            path=FILES[0],
            content=render_template("etc/apt/apt.conf.d/20auto-upgrades.j2"),
            validate=apt_config_check,
        ),
        ConfigFile(
            path=FILES[1],
            content=options,
            validate=apt_config_check,
        ),
    ]


@deploy("Automatic security updates")
def auto_updates() -> None:
    """Install and configure unattended-upgrades for the security archive only."""
    settings = Settings()
    files = render_files(settings)
    timers = TIMERS
    installed, current = prepared_facts(*fact_requests(settings))  # what config_files(files, timers) would read
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


COMPONENT = Component(
    name="auto_updates",
    defaults=DEFAULTS,
    deploy=auto_updates,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
