"""Waivers: a reviewed YAML list that waives one check for a group (or one host) until a date.

    - check: SPX-SSH-008
      group: az_lab_a          # or `host: node1`
      reason: "vendor appliance needs 6 tries; ticket SEC-123"
      expires: 2026-12-31      # valid through that day
      approved_by: security    # optional

A malformed entry, an unknown check id or an unknown group or host is an error before anything runs.
An expired waiver waives nothing and fails the run (reported with the checks).
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compliance.checks import BY_ID

KEYS = {"check", "group", "host", "reason", "expires", "approved_by"}


class WaiverError(Exception):
    """The waivers file cannot be used: every problem, one per line."""


@dataclass(frozen=True)
class Waiver:
    check: str
    reason: str
    expires: datetime.date
    group: str | None = None
    host: str | None = None
    approved_by: str | None = None
    index: int = 0  # position in the file, for messages

    @property
    def target(self) -> str:
        return f"group {self.group}" if self.group else f"host {self.host}"

    def expired(self, today: datetime.date) -> bool:
        return today > self.expires

    def applies_to(self, host: str, groups: Iterable[str]) -> bool:
        return host == self.host if self.host else self.group in set(groups)

    def describe(self) -> str:
        return f"waiver #{self.index + 1} ({self.check} for {self.target}, expires {self.expires.isoformat()})"


def _date(value: Any, where: str, problems: list[str]) -> datetime.date | None:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip())
        except ValueError:
            pass
    problems.append(f"{where}: expires must be a date YYYY-MM-DD, got {value!r}")
    return None


def parse_waivers(text: str, source: str = "waivers") -> list[Waiver]:
    """Parse and check the shape of a waivers file (ids and groups are checked by :func:`check_waivers`)."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WaiverError(f"{source}: not valid YAML: {exc}") from exc
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise WaiverError(f"{source}: must be a list of waivers, got {type(loaded).__name__}")
    waivers, problems = [], []
    for index, entry in enumerate(loaded):
        where = f"{source}: waiver #{index + 1}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping, got {type(entry).__name__}")
            continue
        unknown = sorted(set(map(str, entry)) - KEYS)
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(KEYS))})")
        check = entry.get("check")
        if not isinstance(check, str) or not check.strip():
            problems.append(f"{where}: check (a check id) is required")
        group, host = entry.get("group"), entry.get("host")
        if (group is None) == (host is None):
            problems.append(f"{where}: give exactly one of group or host")
        for key, value in (("group", group), ("host", host)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{where}: {key} must be a non-empty string")
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            problems.append(f"{where}: reason is required (why the check is waived, with a ticket)")
        expires = _date(entry.get("expires"), where, problems) if "expires" in entry else None
        if "expires" not in entry:
            problems.append(f"{where}: expires (YYYY-MM-DD) is required: waivers do not last forever")
        approved = entry.get("approved_by")
        if approved is not None and not isinstance(approved, str):
            problems.append(f"{where}: approved_by must be a string")
        if (
            isinstance(check, str) and isinstance(reason, str) and expires is not None
            and (isinstance(group, str) or isinstance(host, str))
        ):  # fmt: skip
            waivers.append(
                Waiver(
                    check.strip(),
                    reason.strip(),
                    expires,
                    group if isinstance(group, str) else None,
                    host if isinstance(host, str) else None,
                    approved,
                    index,
                )  # fmt: skip
            )
    if problems:
        raise WaiverError("\n".join(problems))
    return waivers


def load_waivers(path: str | Path) -> list[Waiver]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WaiverError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_waivers(text, str(path))


def check_waivers(
    waivers: Iterable[Waiver], groups: Collection[str], hosts: Collection[str], check_ids: Collection[str] = ()
) -> None:
    """Unknown check ids, groups or hosts are errors (a typo would silently waive nothing)."""
    known = set(check_ids) or set(BY_ID)
    problems = []
    for waiver in waivers:
        if waiver.check not in known:
            problems.append(f"{waiver.describe()}: unknown check id {waiver.check!r}")
        if waiver.group is not None and waiver.group not in groups:
            problems.append(f"{waiver.describe()}: unknown group {waiver.group!r} (not in the inventory)")
        if waiver.host is not None and waiver.host not in hosts:
            problems.append(f"{waiver.describe()}: unknown host {waiver.host!r} (not in the inventory)")
    if problems:
        raise WaiverError("\n".join(problems))


def expired_waivers(waivers: Iterable[Waiver], today: datetime.date) -> list[Waiver]:
    return [waiver for waiver in waivers if waiver.expired(today)]


def find_waiver(
    waivers: Iterable[Waiver], check_id: str, host: str, groups: Iterable[str], today: datetime.date
) -> tuple[Waiver | None, Waiver | None]:
    """(an active waiver, an expired one) for this check on this host."""
    groups = list(groups)
    active = expired = None
    for waiver in waivers:
        if waiver.check == check_id and waiver.applies_to(host, groups):
            if waiver.expired(today):
                expired = expired or waiver
            else:
                active = active or waiver
    return active, expired


def waivers_for_hosts(waivers: Iterable[Waiver], host_groups: Mapping[str, Iterable[str]]) -> dict[str, list[Waiver]]:
    """host -> the waivers that name it or one of its groups."""
    waivers = list(waivers)
    return {host: [w for w in waivers if w.applies_to(host, groups)] for host, groups in host_groups.items()}
