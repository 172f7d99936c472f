"""Check an inventory and its group_data before pyinfra connects to anything.

Errors (the run stops):

* the inventory file is missing, fails to load, or yields zero hosts; a ``--limit``/``--exclude``
  pattern matches nothing or leaves zero hosts;
* a data key nobody defines (typo), with the closest known key as a suggestion;
* a value of the wrong type (bool and int are told apart; int is accepted for float) or outside
  the allowed choices;
* a ``REQUIRED`` component setting without a value on a host that runs the component;
* a secret referenced with ``spectra.secrets.from_env``/``from_file`` that cannot be read (unset, empty);
* a value a component's or the cluster settings' checks refuse (the same pure checks every deploy runs
  before it changes anything), and a cluster-wide setting with different values on different hosts;
* a group_data file named like a role but for no group (``group_data/worker.py``);
* conflicting roles (see :func:`check_roles`);
* a production host (group ``env_prod``, see ``firewall_production_envs``) open to anywhere (SSH, the API
  server, NodePorts, or no filtering at all) without a reason recorded in ``firewall_exposure_allowed``
  (see :func:`check_exposures`).

Warnings (printed, the run goes on): custom roles, hosts with no role or no zone, an even number of
etcd members, no control-plane host, production exposures allowed with a reason (the reason is printed).

Every message names where the key was set: a group_data file, the inventory file (and host or group),
or ``--data``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

from inventories.grouping import (
    ENV_PREFIX,
    KNOWN_ROLES,
    REGION_PREFIX,
    ZONE_PREFIX,
    normalise_role,
    zone_group,
)
from spectra import secrets
from spectra_cli.schema import (
    DEFAULT_COMPONENTS_PACKAGE,
    ETCD_TOPOLOGIES,
    Schema,
    describe_types,
    load_schema,
    type_matches,
)

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    level: Level
    where: str
    key: str | None
    message: str

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.level}: {self.where}:{key} {self.message}"


@dataclass
class ValidationResult:
    inventory_path: str
    issues: list[Issue] = field(default_factory=list)
    inventory: Any = None  # pyinfra.api.Inventory once loaded
    selected: list[str] = field(default_factory=list)  # host names after --limit/--exclude

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, where: str, key: str | None, message: str) -> None:
        self.issues.append(Issue("error", where, key, message))

    def warn(self, where: str, key: str | None, message: str) -> None:
        self.issues.append(Issue("warning", where, key, message))

    def zones(self) -> dict[str, list[str]]:
        """Zone group -> selected host names in it, for every zone group with selected hosts."""
        if self.inventory is None:
            return {}
        selected = set(self.selected)
        zones: dict[str, list[str]] = {}
        for group, hosts in self.inventory.groups.items():
            if group.startswith(ZONE_PREFIX):
                names = [host.name for host in hosts if host.name in selected]
                if names:
                    zones[group] = sorted(names)
        return dict(sorted(zones.items()))


def _display(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def suggest(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {match[0]!r}?)" if match else ""


def group_data_dirs(inventory_path: str, cwd: str, extra: Sequence[str] = ()) -> list[Path]:
    """The group_data directories pyinfra reads for this inventory, in pyinfra's order."""
    dirs = [Path(cwd) / "group_data"]
    inventory_dir = str(Path(inventory_path).parent.resolve())
    if inventory_dir != cwd:
        dirs.append(Path(inventory_dir) / "group_data")
    dirs.extend(Path(item) for item in extra)
    return dirs


def check_value(result: ValidationResult, schema: Schema, where: str, key: str, value: Any) -> None:
    spec = schema.keys.get(key)
    if spec is None:
        result.error(where, key, f"unknown key{suggest(key, schema.keys)}")
        return
    try:
        value = secrets.resolve(value, key)  # the type and choices are the secret's, as a deploy reads it
    except secrets.SecretError as error:
        result.error(where, key, str(error))
        return
    if not type_matches(value, spec.types):
        result.error(
            where,
            key,
            f"expected {describe_types(spec.types)}, got {type(value).__name__} {value!r} (defined by {spec.source})",
        )
        return
    if spec.choices is not None and value is not None and value not in spec.choices:
        choices = ", ".join(repr(choice) for choice in spec.choices)
        result.error(where, key, f"{value!r} is not one of {choices}")


def check_data(result: ValidationResult, schema: Schema, where: str, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        check_value(result, schema, where, key, value)


def _looks_like_group(name: str, groups: Iterable[str]) -> bool:
    return (
        name in groups
        or name in KNOWN_ROLES
        or name == "all"
        or name.startswith((ZONE_PREFIX, REGION_PREFIX, ENV_PREFIX))
    )


@dataclass(frozen=True)
class GroupDataFile:
    """The data pyinfra takes from one group_data file."""

    path: str  # as shown in messages
    group: str
    data: Mapping[str, Any]


def read_group_data_files(dirs: Sequence[Path], inventory: Any, result: ValidationResult) -> list[GroupDataFile]:
    """Load every group_data file with pyinfra's own loader (same import filtering as a real run)."""
    from pyinfra.api import State
    from pyinfra.context import ctx_inventory, ctx_state

    from spectra.pyinfra_compat import read_group_data as _get_group_data

    files = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.py")):
            try:
                with ctx_state.use(State()), ctx_inventory.use(inventory):
                    data = _get_group_data(str(path)).get(path.stem, {})
            except Exception as exc:  # user code: report whatever it raised
                cause = getattr(exc, "exception", None) or exc
                result.error(_display(path), None, f"cannot load: {getattr(cause, 'message', None) or cause}")
                continue
            files.append(GroupDataFile(_display(path), path.stem, data))
    return files


def check_group_data_files(
    result: ValidationResult, schema: Schema, files: Sequence[GroupDataFile]
) -> dict[str, set[str]]:
    """Check every group_data file; return group -> keys set by files (to skip them later)."""
    inventory = result.inventory
    from_files: dict[str, set[str]] = {}
    for item in files:
        if not _looks_like_group(item.group, inventory.groups):
            hint = suggest(item.group, [*inventory.groups, *KNOWN_ROLES])
            if hint:
                result.error(item.path, None, f"no group {item.group!r} in this inventory{hint}")
        check_data(result, schema, item.path, item.data)
        from_files.setdefault(item.group, set()).update(item.data)
    return from_files


def check_inventory_data(result: ValidationResult, schema: Schema, from_files: Mapping[str, set[str]]) -> None:
    inventory = result.inventory
    where = _display(result.inventory_path)
    for host in inventory:
        check_data(result, schema, f"{where} (host {host.name})", inventory.get_host_data(host.name))
    for group in inventory.groups:
        data = {
            key: value
            for key, value in inventory.get_group_data(group).items()
            if key not in from_files.get(group, set())
        }
        check_data(result, schema, f"{where} (group {group})", data)
    all_data = {key: value for key, value in inventory.get_data().items() if key not in from_files.get("all", ())}
    check_data(result, schema, f"{where} (all)", all_data)


def check_roles(result: ValidationResult) -> None:
    """Role rules.

    * ``roles`` is a list of role names; a role that is not one of ``control_plane``, ``etcd``,
      ``workers``, ``monitoring`` is an error when it looks like a typo of one, else a warning;
    * a host is in a role group exactly when the role is in its ``roles``, and in at most one zone
      group, the one matching its ``zone``;
    * ``etcd_topology: stacked`` (the default, kubeadm's stacked etcd): ``etcd`` and ``control_plane``
      go together, every control-plane node runs an etcd member and etcd runs nowhere else;
    * ``etcd_topology: external``: etcd hosts are dedicated, no ``control_plane`` or ``workers`` on them;
    * every host uses the same ``etcd_topology``.
    """
    inventory = result.inventory
    topologies: dict[str, list[str]] = {}
    etcd_hosts = []
    control_plane_hosts = []
    for host in inventory:
        where = f"host {host.name}"
        data = host.data
        roles = data.get("roles")
        if roles is None:
            roles = []
        if not isinstance(roles, (list, tuple)) or not all(isinstance(role, str) for role in roles):
            continue  # the type check already reported it
        role_set = set(roles)
        if not role_set:
            result.warn(where, "roles", "no role: role-based deploys will skip this host")
        for role in roles:
            if role in KNOWN_ROLES:
                continue
            normal = normalise_role(role)
            if normal in KNOWN_ROLES:
                result.error(where, "roles", f"role {role!r} should be written {normal!r}")
            elif hint := suggest(role, KNOWN_ROLES):
                result.error(where, "roles", f"unknown role {role!r}{hint}")
            else:
                result.warn(where, "roles", f"custom role {role!r} (known: {', '.join(KNOWN_ROLES)})")

        groups = set(host.groups)
        for role in sorted(role_set - groups):
            result.error(where, "roles", f"has role {role!r} but is not in group {role!r}")
        for role in sorted((groups & set(KNOWN_ROLES)) - role_set):
            result.error(where, "roles", f"is in group {role!r} but {role!r} is not in its roles {roles}")

        zone_groups = sorted(group for group in groups if group.startswith(ZONE_PREFIX))
        zone = data.get("zone")
        if len(zone_groups) > 1:
            result.error(where, "zone", f"is in several zone groups: {', '.join(zone_groups)}")
        elif zone and isinstance(zone, str) and zone_groups and zone_groups != [zone_group(zone)]:
            result.error(where, "zone", f"zone {zone!r} but in group {zone_groups[0]}")

        topology = data.get("etcd_topology", "stacked")
        if topology not in ETCD_TOPOLOGIES:
            continue  # reported by the choices check
        topologies.setdefault(topology, []).append(host.name)
        if "etcd" in role_set:
            etcd_hosts.append(host.name)
        if "control_plane" in role_set:
            control_plane_hosts.append(host.name)
        if topology == "stacked":
            if "etcd" in role_set and "control_plane" not in role_set:
                result.error(
                    where,
                    "roles",
                    "etcd without control_plane: stacked etcd runs on control-plane nodes "
                    "(set etcd_topology = 'external' for dedicated etcd hosts)",
                )
            if "control_plane" in role_set and "etcd" not in role_set:
                result.error(
                    where,
                    "roles",
                    "control_plane without etcd: with stacked etcd every control-plane node runs an etcd member",
                )
        else:
            clash = sorted(role_set & {"control_plane", "workers"})
            if "etcd" in role_set and clash:
                result.error(
                    where,
                    "roles",
                    f"etcd_topology is 'external': etcd hosts are dedicated, not also {' and '.join(clash)}",
                )

    if len(topologies) > 1:
        detail = "; ".join(f"{name}: {', '.join(sorted(hosts))}" for name, hosts in sorted(topologies.items()))
        result.error("inventory", "etcd_topology", f"hosts disagree ({detail})")
    if etcd_hosts and len(etcd_hosts) % 2 == 0:
        result.warn("inventory", "roles", f"{len(etcd_hosts)} etcd members: an odd number tolerates as many failures")
    if len(inventory) and not control_plane_hosts:
        result.warn("inventory", "roles", "no control_plane host in this inventory")


def check_required(result: ValidationResult, schema: Schema) -> None:
    """REQUIRED component settings without a value: one error per setting, listing the hosts."""
    for requirement in schema.required:
        missing = []
        for host in result.inventory:
            roles = host.data.get("roles") or []
            role_set = set(roles) if isinstance(roles, (list, tuple)) else set()
            if requirement.roles is not None and not (requirement.roles & role_set):
                continue
            if requirement.switch and host.data.get(requirement.switch) is False:
                continue
            if host.data.get(requirement.key) is None:
                missing.append(host.name)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            switch = f", or set {requirement.switch} = False" if requirement.switch else ""
            result.error(
                requirement.source,
                requirement.key,
                f"required but has no value on {len(missing)} host(s): {shown}; set it in group_data "
                f"(all.py, a role, zone or env file){switch}",
            )


class HostSettings(Mapping[str, Any]):
    """A host's settings as the deploys see them: its data, else the schema's default for the key."""

    def __init__(self, host: Any, schema: Schema) -> None:
        self.host = host
        self.schema = schema

    def __getitem__(self, key: str) -> Any:
        spec = self.schema.keys.get(key)
        value = self.host.data.get(key, spec.default if spec else None)
        try:
            return secrets.resolve(value, key)
        except secrets.SecretError:
            return value  # reported where the key is set (check_value)

    def __iter__(self) -> Iterator[str]:
        return iter(self.schema.keys)

    def __len__(self) -> int:
        return len(self.schema.keys)


def _hosts_text(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"host {shown}" if len(names) == 1 else f"hosts {shown}"


_LEADING_KEY = re.compile(r"^([a-z][a-z0-9_]*)[=\[:( ]")


def value_source(
    key: str, hosts: Sequence[str], inventory: Any, files: Sequence[GroupDataFile], override: Mapping[str, Any]
) -> str:
    """Where ``key``'s value on ``hosts`` comes from: ``--data``, the group_data files of their groups that set
    it, else the owner's default."""
    if key in override:
        return "set by --data"
    groups = {str(group) for name in hosts for group in inventory.get_host(name).groups} | {"all"}
    setting = [item.path for item in files if key in item.data and item.group in groups]
    return f"set in {', '.join(setting)}" if setting else "the default"


def check_settings(
    result: ValidationResult,
    schema: Schema,
    files: Sequence[GroupDataFile] = (),
    override: Mapping[str, Any] | None = None,
) -> None:
    """The components' and the cluster settings' checks on every host (one error per problem, listing the
    hosts and where the key's value was set), then the cluster-wide settings: one value for the whole
    inventory."""
    from spectra.cluster_settings import CLUSTER_WIDE

    found: dict[tuple[str, str], list[str]] = {}
    for host in result.inventory:
        values = HostSettings(host, schema)
        for entry in schema.checks:
            if entry.switch and values[entry.switch] is False:
                continue
            for check in entry.checks:
                try:
                    problems = [str(problem) for problem in check(values)]
                except Exception as exc:  # a check meeting a value of the wrong type (reported above)
                    problems = [f"cannot be checked ({type(exc).__name__}: {exc})"]
                for problem in problems:
                    found.setdefault((entry.name, problem), []).append(host.name)
    sources = {entry.name: entry.source for entry in schema.checks}
    for (name, problem), hosts in found.items():
        match = _LEADING_KEY.match(problem)
        origin = ""
        if match:
            origin = f"; {value_source(match.group(1), hosts, result.inventory, files, override or {})}"
        result.error(_hosts_text(hosts), None, f"{name}: {problem} (checked by {sources[name]}{origin})")

    for key in CLUSTER_WIDE:
        seen: dict[str, list[str]] = {}
        for host in result.inventory:
            seen.setdefault(repr(HostSettings(host, schema)[key]), []).append(host.name)
        if len(seen) > 1:
            detail = "; ".join(f"{_hosts_text(hosts)}: {value}" for value, hosts in seen.items())
            result.error("inventory", key, f"a cluster-wide setting must be the same on every host ({detail})")


def check_exposures(
    result: ValidationResult,
    schema: Schema,
    files: Sequence[GroupDataFile] = (),
    override: Mapping[str, Any] | None = None,
) -> None:
    """The components' production rule on every host: an exposure without a recorded reason is an error, one
    with a reason a warning printing it; each names the hosts, the key, where its value was set and, for an
    error, how to allow it."""
    found: dict[tuple[str, str, Any], list[str]] = {}
    for host in result.inventory:
        values = HostSettings(host, schema)
        groups = [str(group) for group in host.groups]
        for entry in schema.checks:
            if entry.exposures is None or (entry.switch and values[entry.switch] is False):
                continue
            try:
                exposed = list(entry.exposures(values, groups))
            except Exception:  # a value of the wrong type: reported by the type check and check_settings
                continue
            for item in exposed:
                found.setdefault((entry.name, entry.source, item), []).append(host.name)
    for (_, source, item), hosts in found.items():
        origin = value_source(item.key, hosts, result.inventory, files, override or {})
        if item.reason is None:
            result.error(_hosts_text(hosts), item.key, f"{item.text(origin)} (checked by {source})")
        else:
            allowance = value_source(item.allowance, hosts, result.inventory, files, override or {})
            result.warn(_hosts_text(hosts), item.key, f"{item.text(origin)} ({item.allowance} {allowance})")


def select_hosts(result: ValidationResult, limit: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """pyinfra's --limit/--exclude matching (group name, else host name glob); patterns matching nothing
    are errors instead of pyinfra's warning."""
    inventory = result.inventory

    def matches(pattern: str) -> list[str]:
        if pattern in inventory.groups:
            return [host.name for host in inventory.groups[pattern]]
        return [host.name for host in inventory if fnmatch(host.name, pattern)]

    names = [host.name for host in inventory]
    if limit:
        chosen: set[str] = set()
        for pattern in limit:
            found = matches(pattern)
            if not found:
                result.error(
                    "--limit",
                    None,
                    f"{pattern!r} matches no host or group{suggest(pattern, inventory.groups)}",
                )
            chosen.update(found)
        names = [name for name in names if name in chosen]
    for pattern in exclude:
        found = matches(pattern)
        if not found:
            result.error("--exclude", None, f"{pattern!r} matches no host or group{suggest(pattern, inventory.groups)}")
        names = [name for name in names if name not in found]
    if not names and len(inventory):
        result.error("--limit/--exclude", None, "no hosts left: refusing to run on zero hosts")
    return names


def load_inventory(
    inventory_path: str,
    cwd: str,
    override_data: Mapping[str, Any] | None = None,
    group_data: Sequence[str] = (),
) -> Any:
    """Build the inventory exactly as the pyinfra CLI does (same loader, same group_data dirs)."""
    from pyinfra.api import State
    from pyinfra.context import ctx_state

    from spectra.pyinfra_compat import make_inventory

    with ctx_state.use(State()):
        return make_inventory(
            inventory_path,
            cwd=cwd,
            override_data=dict(override_data or {}),
            group_data_directories=list(group_data) or None,
        )


def validate(
    inventory_path: str,
    *,
    cwd: str | None = None,
    override_data: Mapping[str, Any] | None = None,
    group_data: Sequence[str] = (),
    limit: Sequence[str] = (),
    exclude: Sequence[str] = (),
    components_package: str | None = DEFAULT_COMPONENTS_PACKAGE,
) -> ValidationResult:
    """Load the inventory file and its group_data the way the pyinfra CLI does, then check them.

    This imports ``pyinfra_cli``, which gevent-monkey-patches the process: call it from a CLI process
    (``spectra validate``), not from a long-lived process with threads.
    """
    cwd = cwd or os.getcwd()
    result = ValidationResult(inventory_path)
    where = _display(inventory_path)
    path = Path(inventory_path)
    if not path.is_file():
        result.error(where, None, "inventory file does not exist (pyinfra would run on zero hosts)")
        return result
    if path.suffix != ".py":
        result.error(where, None, "inventory must be a Python inventory file (.py) so group_data applies")
        return result

    schema = load_schema(components_package)
    try:
        inventory = load_inventory(inventory_path, cwd, override_data, group_data)
    except Exception as exc:  # user code and cloud APIs: report whatever they raised
        cause = getattr(exc, "exception", None) or exc
        message = getattr(cause, "message", None) or str(cause) or type(cause).__name__
        result.error(where, None, f"cannot load inventory: {message}")
        return result
    files = read_group_data_files(group_data_dirs(inventory_path, cwd, group_data), inventory, result)
    return check_loaded(result, inventory, schema, files, override_data=override_data, limit=limit, exclude=exclude)


def check_loaded(
    result: ValidationResult,
    inventory: Any,
    schema: Schema,
    files: Sequence[GroupDataFile] = (),
    *,
    override_data: Mapping[str, Any] | None = None,
    limit: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> ValidationResult:
    """All checks on an already built ``pyinfra.api.Inventory`` and its group_data file contents."""
    result.inventory = inventory
    for source, key, message in schema.problems:
        result.error(source, key, message)
    if len(inventory) == 0:
        result.error(_display(result.inventory_path), None, "inventory has no hosts: refusing to run on zero hosts")
        return result
    from_files = check_group_data_files(result, schema, files)
    check_inventory_data(result, schema, from_files)
    check_data(result, schema, "--data", override_data or {})
    check_roles(result)
    check_required(result, schema)
    check_settings(result, schema, files, override_data or {})
    check_exposures(result, schema, files, override_data or {})
    result.selected = select_hosts(result, limit, exclude)
    return result
