"""Shared host grouping for every Spectra inventory (EC2, Terraform, bare metal, lab).

Every inventory source turns its hosts into :class:`HostRecord` objects and hands them to
:func:`build_groups`, so the same group names exist everywhere:

* role groups: ``control_plane``, ``workers``, ``etcd``, ``monitoring`` and any other role,
  normalised to an identifier (``"Ingress-Nodes"`` -> ``ingress_nodes``);
* zone groups: ``az_<zone>`` (``us-east-1a`` -> ``az_us_east_1a``, ``lab-a`` -> ``az_lab_a``);
* region groups: ``region_<region>``;
* environment groups: ``env_<env>``;
* any extra groups a source adds (instance type, tag keyed groups, racks).

The order of the returned groups is the order pyinfra merges group data in (a later group wins), see
``group_data/README.md``: inventory file group, env, region, zone, extra groups, roles.

An inventory file uses it like this (module-level names starting with ``_`` are not groups)::

    from inventories import ssh_tuning
    from inventories.grouping import HostRecord, build_groups, file_group

    ssh_tuning.enable()  # TCP_NODELAY on pyinfra's SSH sockets: ~2 ms per remote command instead of ~44 ms
    _records = [HostRecord("cp-1", {"ssh_hostname": "10.0.0.5"}, roles=("control_plane", "etcd"),
                           zone="dc1-r1", region="dc1")]
    globals().update(build_groups(_records, inventory_group=file_group(__file__)))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.exceptions import InventoryError

from spectra import topology

# The roles the deploys know about, in the order their group data is merged (later wins): topology's.
KNOWN_ROLES: tuple[str, ...] = topology.KNOWN_ROLES

# Spellings seen in the wild (cloud tags, other tools) mapped to our role names.
ROLE_ALIASES: dict[str, str] = {
    "controlplane": "control_plane",
    "control": "control_plane",
    "master": "control_plane",
    "masters": "control_plane",
    "worker": "workers",
    "node": "workers",
    "nodes": "workers",
}

ZONE_PREFIX = "az_"
REGION_PREFIX = "region_"
ENV_PREFIX = "env_"
# Group name prefixes with a fixed meaning: extra groups may not use them.
RESERVED_PREFIXES: tuple[str, ...] = (ZONE_PREFIX, REGION_PREFIX, ENV_PREFIX)

_NOT_IDENT = re.compile(r"[^a-z0-9_]+")


def normalise_identifier(value: str) -> str:
    """Lower-case ``value`` and turn it into a Python identifier usable as a pyinfra group name.

    pyinfra ignores inventory variables starting with ``_``, so leading underscores are removed and a
    leading digit gets a ``g`` in front.
    """
    text = _NOT_IDENT.sub("_", str(value).strip().lower()).strip("_")
    text = re.sub(r"_+", "_", text)
    if not text:
        raise InventoryError(f"cannot make a group name out of {value!r}")
    if text[0].isdigit():
        text = f"g{text}"
    return text


def normalise_role(role: str) -> str:
    """``"Control-Plane"`` -> ``control_plane``; ``"worker"`` -> ``workers`` (see :data:`ROLE_ALIASES`)."""
    ident = normalise_identifier(role)
    return ROLE_ALIASES.get(ident.replace("_", ""), ROLE_ALIASES.get(ident, ident))


def parse_roles(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Roles from a list or a comma/space separated string, normalised, de-duplicated, ordered."""
    if value is None:
        return ()
    items = re.split(r"[,\s]+", value) if isinstance(value, str) else [str(v) for v in value]
    roles = {normalise_role(item) for item in items if item and item.strip()}
    return order_roles(roles)


def order_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Known roles in :data:`KNOWN_ROLES` order, then any other roles sorted."""
    unique = set(roles)
    known = [role for role in KNOWN_ROLES if role in unique]
    return tuple(known + sorted(unique - set(KNOWN_ROLES)))


def role_group(role: str) -> str:
    return normalise_role(role)


def zone_group(zone: str) -> str:
    """``us-east-1a`` -> ``az_us_east_1a``; an ``az_...`` group name is returned unchanged."""
    ident = normalise_identifier(zone)
    return ident if ident.startswith(ZONE_PREFIX) else ZONE_PREFIX + ident


def region_group(region: str) -> str:
    ident = normalise_identifier(region)
    return ident if ident.startswith(REGION_PREFIX) else REGION_PREFIX + ident


def env_group(env: str) -> str:
    ident = normalise_identifier(env)
    return ident if ident.startswith(ENV_PREFIX) else ENV_PREFIX + ident


def file_group(inventory_file: str) -> str:
    """The group pyinfra gives every host of an inventory file: its file name without ``.py``."""
    return Path(inventory_file).name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class HostRecord:
    """One host as an inventory source sees it, before grouping.

    ``data`` holds the connection settings (``ssh_hostname``, ``ssh_user`` ...) and anything else the
    source knows; ``roles``, ``zone``, ``region`` and ``env`` are added to it by :meth:`host_data`.
    """

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    roles: Sequence[str] = ()
    zone: str | None = None
    region: str | None = None
    env: str | None = None
    extra_groups: Sequence[str] = ()

    def normalised_roles(self) -> tuple[str, ...]:
        return parse_roles(self.roles)

    def host_data(self) -> dict[str, Any]:
        data = dict(self.data)
        data["roles"] = list(self.normalised_roles())
        for key in ("zone", "region", "env"):
            value = getattr(self, key)
            if value:
                data[key] = value
        return data

    def groups(self) -> list[str]:
        """This host's groups, least specific first (the order group data is merged in)."""
        names: list[str] = []
        if self.env:
            names.append(env_group(self.env))
        if self.region:
            names.append(region_group(self.region))
        if self.zone:
            names.append(zone_group(self.zone))
        for extra in self.extra_groups:
            names.append(normalise_identifier(extra))
        names.extend(role_group(role) for role in self.normalised_roles())
        return list(dict.fromkeys(names))


def _check_extra_group(record: HostRecord, group: str) -> None:
    if group in KNOWN_ROLES or group.startswith(RESERVED_PREFIXES) or group == "all":
        raise InventoryError(
            f"host {record.name}: extra group {group!r} clashes with a role, zone, region or env group name"
        )


def build_groups(
    records: Iterable[HostRecord],
    *,
    inventory_group: str | None = None,
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Turn host records into pyinfra inventory groups: ``{group: [(host name, host data), ...]}``.

    ``inventory_group`` (use :func:`file_group` with ``__file__``) is emitted first so it has the lowest
    group precedence; pyinfra would otherwise append it last, above the role groups.

    Raises :class:`InventoryError` on duplicate host names or on an empty host list: zero hosts must
    never look like a successful run.
    """
    records = list(records)
    if not records:
        raise InventoryError("inventory has no hosts")

    seen: dict[str, HostRecord] = {}
    for record in records:
        if not record.name or record.name.startswith("_"):
            raise InventoryError(f"invalid host name {record.name!r}")
        if record.name in seen:
            raise InventoryError(f"host name {record.name!r} appears more than once")
        seen[record.name] = record
        for extra in record.extra_groups:
            _check_extra_group(record, normalise_identifier(extra))

    roles_seen = {role for record in records for role in record.normalised_roles()}
    # Sort groups by kind so precedence does not depend on which host came first.
    kind_order = {ENV_PREFIX: 1, REGION_PREFIX: 2, ZONE_PREFIX: 3}

    def sort_key(group: str) -> tuple[int, int, str]:
        if group in KNOWN_ROLES:
            return (5, KNOWN_ROLES.index(group), "")
        for prefix, rank in kind_order.items():
            if group.startswith(prefix):
                return (rank, 0, group)
        if group in roles_seen:
            return (5, len(KNOWN_ROLES), group)
        return (4, 0, group)

    members: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for record in records:
        entry = (record.name, record.host_data())
        for group in record.groups():
            members.setdefault(group, []).append(entry)

    every_host = [(record.name, record.host_data()) for record in records]
    # ``all`` keeps hosts that have no other group; pyinfra takes it out of the group list.
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {"all": every_host}
    if inventory_group:
        groups[inventory_group] = every_host
    for group in sorted(members, key=sort_key):
        if group == inventory_group:
            raise InventoryError(f"group {group!r} has the same name as the inventory file")
        groups[group] = members[group]
    return groups


def zones_of(groups: Mapping[str, object]) -> list[str]:
    """The zone group names among ``groups``, sorted."""
    return sorted(name for name in groups if name.startswith(ZONE_PREFIX))
