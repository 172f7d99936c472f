"""Sane owners and modes on security-relevant files (CIS / dev-sec os_hardening list).

ONE batched fact reads every listed path (``facts.files.FileStates`` without checksums), so the no-op run
costs one remote command however long the list is. Paths that do not exist are left alone: this component
tightens what is there, it never creates files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.operations.managed import fresh
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
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

TABLE_KEYS = ("file_permissions", "file_permissions_extra")
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _merged(settings: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """``path -> (setting it comes from, spec)``, the extra entries overriding the others."""
    merged: dict[str, tuple[str, Any]] = {}
    for key in TABLE_KEYS:
        table = settings[key] or {}
        if isinstance(table, Mapping):
            merged.update({path: (key, spec) for path, spec in table.items()})
    return merged


def _mode(spec: Any) -> str | None:
    """The mode of a ``[mode, user, group]`` entry as stat prints it, None when the entry is malformed."""
    try:
        mode, _, _ = spec
        return normalise_mode(str(mode))
    except (TypeError, ValueError):
        return None


def check(settings: Mapping[str, Any]) -> list[str]:
    """Every entry is an absolute path -> [mode, user, group] (pure: ``spectra validate`` runs it too)."""
    problems = [
        f"{key}={settings[key]!r}: a mapping of path -> [mode, user, group]"
        for key in TABLE_KEYS
        if not isinstance(settings[key] or {}, Mapping)
    ]
    for path, (key, spec) in sorted(_merged(settings).items(), key=lambda item: str(item[0])):
        if not str(path).startswith("/"):
            problems.append(f"{key}: {path!r} is not an absolute path")
        elif not isinstance(spec, list | tuple) or _mode(spec) is None:
            problems.append(f"{key}[{path!r}]={spec!r}: [mode, user, group] with an octal mode such as 640")
        elif not _NAME.fullmatch(str(spec[1])) or not _NAME.fullmatch(str(spec[2])):
            problems.append(f"{key}[{path!r}]={spec!r}: user and group must be plain account names")
    return problems


def permission_entries(settings: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    """``{path: (mode, user, group)}`` with modes as stat prints them (``"640"``), entries checked by
    :func:`check`."""
    return {
        str(path): (_mode(spec) or "0", str(spec[1]), str(spec[2]))
        for path, (_, spec) in sorted(_merged(settings).items())
    }


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


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["file_permissions_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`file_permissions` reads at prepare time (node.py reads it with other components' facts)."""
    return [(FileStates, {"paths": sorted(permission_entries(settings)), "sha256": False})]


@deploy("File permissions")
def file_permissions() -> None:
    """Tighten modes and owners of security-relevant files that exist."""
    settings = Settings()
    permissions(
        name="Set modes and owners of security-relevant files",
        entries=permission_entries(settings),
        current=prepared_facts(*fact_requests(settings))[0],
    )


COMPONENT = Component(
    name="file_permissions",
    defaults=DEFAULTS,
    deploy=file_permissions,
    should_run=should_run,
    fact_requests=fact_requests,
    checks=(check,),
)
