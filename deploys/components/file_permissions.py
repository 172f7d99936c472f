"""Sane owners and modes on security-relevant files (CIS / dev-sec os_hardening list).

ONE batched fact reads every listed path (``facts.files.FileStates`` without checksums), so the no-op run
costs one remote command however long the list is. Paths that do not exist are left alone: this component
tightens what is there, it never creates files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.operations.managed import fresh
from deploys.prepare import FactRequest, component_data, prepared_facts
from facts.files import FileStates, normalise_mode

DEFAULTS: dict[str, Any] = {
    "file_permissions_enabled": True,  # manage file modes/owners at all
    # path -> [mode, user, group]; applied when the path exists
    "file_permissions": {
        "/etc/passwd": ["644", "root", "root"],
        "/etc/passwd-": ["600", "root", "root"],
        "/etc/group": ["644", "root", "root"],
        "/etc/group-": ["600", "root", "root"],
        "/etc/shadow": ["640", "root", "shadow"],
        "/etc/shadow-": ["640", "root", "shadow"],
        "/etc/gshadow": ["640", "root", "shadow"],
        "/etc/gshadow-": ["640", "root", "shadow"],
        "/etc/ssh/sshd_config": ["600", "root", "root"],
        "/etc/crontab": ["600", "root", "root"],
        "/etc/cron.hourly": ["700", "root", "root"],
        "/etc/cron.daily": ["700", "root", "root"],
        "/etc/cron.weekly": ["700", "root", "root"],
        "/etc/cron.monthly": ["700", "root", "root"],
        "/etc/cron.d": ["700", "root", "root"],
        "/etc/sudoers": ["440", "root", "root"],
        "/etc/sudoers.d": ["750", "root", "root"],
        "/etc/issue": ["644", "root", "root"],
        "/etc/issue.net": ["644", "root", "root"],
        "/etc/motd": ["644", "root", "root"],
        "/boot/grub/grub.cfg": ["400", "root", "root"],
    },
    "file_permissions_extra": {},  # more path -> [mode, user, group] entries (override the above)
}

_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def permission_entries(data: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Validated ``{path: (mode, user, group)}`` with modes as stat prints them (``"640"``)."""
    merged = {**(data["file_permissions"] or {}), **(data["file_permissions_extra"] or {})}
    entries: dict[str, tuple[str, str, str]] = {}
    for path, spec in sorted(merged.items()):
        if not str(path).startswith("/"):
            raise DeployError(f"file_permissions: {path!r} is not an absolute path")
        try:
            mode, user, group = spec
            normalised = normalise_mode(str(mode))
        except (TypeError, ValueError) as error:
            raise DeployError(f"file_permissions[{path!r}] must be [mode, user, group], not {spec!r}") from error
        if not _NAME.match(str(user)) or not _NAME.match(str(group)):
            raise DeployError(f"file_permissions[{path!r}]: bad user/group {user!r}/{group!r}")
        entries[str(path)] = (normalised or "0", str(user), str(group))
    return entries


@operation()
def permissions(entries: dict[str, tuple[str, str, str]], current: dict[str, Any] | None = None):
    """
    Set mode and owner on every existing path of ``entries`` that differs; one fact for all of them.

    + entries: ``{path: (mode, user, group)}``
    + current: that ``FileStates`` (no sums) read at prepare time (read again when an earlier operation
      changed the host)
    """
    states = fresh(current, FileStates, paths=sorted(entries), sha256=False)
    changed = False
    for path, (mode, user, group) in sorted(entries.items()):
        state = states.get(path)
        if state is None:
            continue
        if state.get("user") != user or state.get("group") != group:
            changed = True
            yield StringCommand("chown", QuoteString(f"{user}:{group}"), QuoteString(path))
        if state.get("mode") != mode:
            changed = True
            yield StringCommand("chmod", QuoteString(mode), QuoteString(path))
    if not changed:
        host.noop(f"{len(entries)} paths already have their modes and owners (or do not exist)")


def fact_requests(data: dict[str, Any] | None = None) -> list[FactRequest]:
    """What :func:`file_permissions` reads at prepare time (node.py reads it with other components' facts)."""
    data = data or component_data(DEFAULTS)
    if not data["file_permissions_enabled"]:
        return []
    return [(FileStates, {"paths": sorted(permission_entries(data)), "sha256": False})]


@deploy("File permissions", data_defaults=DEFAULTS)
def file_permissions() -> None:
    """Tighten modes and owners of security-relevant files that exist."""
    data = {key: host.data.get(key) for key in DEFAULTS}
    if not data["file_permissions_enabled"]:
        host.noop("file permission hardening disabled (file_permissions_enabled=False)")
        return
    entries = permission_entries(data)
    permissions(
        name="Set modes and owners of security-relevant files",
        entries=entries,
        current=prepared_facts(*fact_requests(data))[0],
    )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["file_permissions_enabled"])


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="file_permissions",
    defaults=DEFAULTS,
    deploy=file_permissions,
    should_run=should_run,
    fact_requests=_fact_requests,
)
