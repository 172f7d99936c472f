"""Every data key a Spectra host may carry, with its expected type.

Four sources, in this order:

1. inventory keys defined here (``roles``, ``zone``, ``region``, ``env``... see :data:`INVENTORY_KEYS`);
2. pyinfra connector data (``ssh_*``, ``docker_*``...), read from the installed connectors;
3. pyinfra global arguments usable as host data (``_sudo``, ``_retries``, ``_env``...);
4. the cluster settings (``spectra/cluster_settings.py``: ``DEFAULTS``, ``TYPES``, ``CHECKS``);
5. component settings: each module in ``deploys/components/`` exports ``DEFAULTS`` (key -> default) and
   may export ``REQUIRED`` (keys that need a value), ``TYPES`` (key -> type or tuple of types, for keys
   whose default is ``None``), ``CHOICES`` (key -> allowed values) and ``ROLES`` (the roles the component
   runs on; ``REQUIRED`` is only enforced on hosts with one of them). The first ``*_enabled`` key of
   ``DEFAULTS`` with a bool default is the component's switch: ``REQUIRED`` is not enforced on hosts where it
   is ``False``. A module's ``COMPONENT`` record (``deploys/component.py``) adds its ``checks``: the same pure
   functions the deploy runs before it changes anything, and its ``exposures`` (the production rule).
"""

from __future__ import annotations

import collections.abc
import importlib
import importlib.util
import pkgutil
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_COMPONENTS_PACKAGE = "deploys.components"

TypeSpec = tuple[type, ...] | None  # None: any type


@dataclass
class KeySpec:
    name: str
    types: TypeSpec
    source: str
    default: Any = None
    choices: tuple[Any, ...] | None = None


@dataclass
class Requirement:
    key: str
    source: str
    roles: frozenset[str] | None = None  # None: every host
    switch: str | None = None  # the component's *_enabled key: not required where it is False


@dataclass(frozen=True)
class SettingsChecks:
    """A module's pure settings checks (``checks``: functions of a host's settings -> problems)."""

    source: str
    name: str
    checks: tuple[Callable[[Mapping[str, Any]], Iterable[str]], ...]
    switch: str | None = None  # not checked on hosts where this key is False
    # the component's production rule: (settings, the host's groups) -> exposures (deploys.component.Exposure)
    exposures: Callable[[Mapping[str, Any], Collection[str]], Iterable[Any]] | None = None


@dataclass
class Schema:
    keys: dict[str, KeySpec] = field(default_factory=dict)
    required: list[Requirement] = field(default_factory=list)
    checks: list[SettingsChecks] = field(default_factory=list)
    # Problems found while building the schema: (where, key, message)
    problems: list[tuple[str, str | None, str]] = field(default_factory=list)
    components: list[str] = field(default_factory=list)

    def add(self, spec: KeySpec) -> None:
        existing = self.keys.get(spec.name)
        if existing and existing.types and spec.types and set(existing.types) != set(spec.types):
            self.problems.append(
                (
                    spec.source,
                    spec.name,
                    f"also defined by {existing.source} with type {describe_types(existing.types)}",
                )
            )
        if existing is None or existing.types is None:
            self.keys[spec.name] = spec


# Keys set by Spectra inventories (inventories/grouping.py and the sources).
ETCD_TOPOLOGIES = ("stacked", "external")
INVENTORY_KEYS: dict[str, tuple[TypeSpec, tuple[Any, ...] | None]] = {
    "roles": ((list, tuple), None),
    "zone": ((str,), None),
    "region": ((str,), None),
    "env": ((str,), None),
    "cloud": ((str,), None),
    # this host's address inside the cluster, over private_ip and ssh_hostname (spectra/topology.py)
    "node_address": ((str,), None),
    "instance_id": ((str,), None),
    "instance_type": ((str,), None),
    "private_ip": ((str,), None),
    "public_ip": ((str,), None),
    "tags": ((dict,), None),
    "datacenter": ((str,), None),
    "rack": ((str,), None),
    "lab_mirror_url": ((str,), None),
    "lab_suite": ((str,), None),
    # stacked: etcd runs on every control-plane node; external: on dedicated etcd hosts.
    "etcd_topology": ((str,), ETCD_TOPOLOGIES),
}

# Values pyinfra itself accepts (pyinfra/connectors/sshuserclient/client.py, ssh.py).
CHOICES: dict[str, tuple[Any, ...]] = {
    "ssh_strict_host_key_checking": ("yes", "no", "off", "accept-new", "ask"),
    "ssh_file_transfer_protocol": ("sftp", "scp"),
}

# Global arguments that make no sense as host data.
NOT_HOST_DATA = {"name"}


def types_from_hint(hint: Any) -> TypeSpec:
    """Runtime types for a typing hint; ``None`` when the hint cannot be checked with isinstance."""
    if hint is Any:
        return None
    if hint is None or hint is type(None):
        return (type(None),)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        found: list[type] = []
        for arg in typing.get_args(hint):
            arg_types = types_from_hint(arg)
            if arg_types is None:
                return None
            found.extend(arg_types)
        return tuple(dict.fromkeys(found))
    target = origin or hint
    if target in (collections.abc.Callable,):
        return None
    if target in (collections.abc.Mapping, collections.abc.MutableMapping, dict):
        return (dict,)
    if target in (collections.abc.Iterable, collections.abc.Sequence, list, tuple, set):
        return (list, tuple)
    if isinstance(target, type):
        return (target,)
    return None


def types_from_default(default: Any) -> TypeSpec:
    if default is None:
        return None
    if isinstance(default, (list, tuple)):
        return (list, tuple)
    if isinstance(default, float):
        return (float,)  # ints are accepted for floats by type_matches
    return (type(default),)


def type_matches(value: Any, expected: TypeSpec) -> bool:
    """isinstance with the usual data-file traps handled: bool is not an int, int is a float."""
    if expected is None:
        return True
    if value is None:
        return type(None) in expected
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int) and float in expected:
        return True
    return isinstance(value, tuple(t for t in expected if t is not bool))


def describe_types(expected: TypeSpec) -> str:
    if expected is None:
        return "any"
    names = [t.__name__ if t is not type(None) else "None" for t in expected]
    return " or ".join(names)


def _add_inventory_keys(schema: Schema) -> None:
    for name, (expected, choices) in INVENTORY_KEYS.items():
        schema.add(KeySpec(name, expected, "inventory", choices=choices))


def _add_pyinfra_keys(schema: Schema) -> None:
    from spectra.pyinfra_compat import all_global_arguments, get_all_connectors

    for connector_name, connector in sorted(get_all_connectors().items()):
        hints = typing.get_type_hints(connector.data_cls)
        for key, meta in connector.data_meta.items():
            schema.add(
                KeySpec(
                    key,
                    types_from_hint(hints.get(key, Any)),
                    f"pyinfra {connector_name} connector",
                    default=meta.default,
                    choices=CHOICES.get(key),
                )
            )
    for key, hint in all_global_arguments():
        if key in NOT_HOST_DATA:
            continue
        schema.add(KeySpec(key, types_from_hint(hint), "pyinfra global argument"))


def _component_module_names(package_name: str) -> tuple[list[str], list[tuple[str, str | None, str]]]:
    try:
        package = importlib.import_module(package_name)
    except ModuleNotFoundError as exc:
        if exc.name and package_name.startswith(exc.name):
            return [], []  # no components yet
        return [], [(package_name, None, f"cannot import: {exc}")]
    paths = getattr(package, "__path__", None)
    if not paths:
        return [], []
    names = sorted(
        f"{package_name}.{info.name}" for info in pkgutil.iter_modules(paths) if not info.name.startswith("_")
    )
    return names, []


def _module_file(module_name: str) -> str:
    spec = importlib.util.find_spec(module_name)
    origin = spec.origin if spec and spec.origin else module_name
    try:
        return str(Path(origin).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return origin


def _add_component(schema: Schema, module_name: str) -> None:
    where = _module_file(module_name)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a broken component must stop the run, whatever it raised
        schema.problems.append((where, None, f"cannot import component: {type(exc).__name__}: {exc}"))
        return
    defaults = getattr(module, "DEFAULTS", None)
    if defaults is None:
        return  # a helper module without settings
    if not isinstance(defaults, dict):
        schema.problems.append((where, "DEFAULTS", "must be a dict of setting name -> default"))
        return
    declared_types = getattr(module, "TYPES", {}) or {}
    required: set[str] = set(getattr(module, "REQUIRED", set()) or set())
    roles = getattr(module, "ROLES", None)
    component = getattr(module, "COMPONENT", None)
    choices: dict[str, tuple[Any, ...]] = dict(getattr(module, "CHOICES", {}) or {})
    if component is not None:
        choices.update(getattr(component, "choices", {}) or {})
    schema.components.append(where)
    for key in choices:
        if key not in defaults:
            schema.problems.append((where, key, "in CHOICES but not in DEFAULTS"))

    for key in declared_types:
        if key not in defaults:
            schema.problems.append((where, key, "in TYPES but not in DEFAULTS"))
    for key in required:
        if key not in defaults:
            schema.problems.append((where, key, "in REQUIRED but not in DEFAULTS"))

    for key, default in defaults.items():
        if key in declared_types:
            declared = declared_types[key]
            declared_tuple: tuple[type, ...] = tuple(declared) if isinstance(declared, tuple) else (declared,)
            expected: TypeSpec = declared_tuple
            if default is not None and not type_matches(default, expected):
                schema.problems.append(
                    (where, key, f"default {default!r} does not match TYPES ({describe_types(expected)})")
                )
            if default is None and key not in required:
                expected = (*declared_tuple, type(None))
        else:
            expected = types_from_default(default)
        allowed = tuple(choices[key]) if key in choices else None
        if allowed is not None and default is not None and default not in allowed:
            schema.problems.append((where, key, f"default {default!r} is not one of its CHOICES"))
        schema.add(KeySpec(key, expected, where, default=default, choices=allowed))

    role_set = frozenset(roles) if roles else None
    switch = next(
        (key for key, value in defaults.items() if key.endswith("_enabled") and isinstance(value, bool)), None
    )
    for key in sorted(required):
        schema.required.append(Requirement(key, where, role_set, switch))
    checks = tuple(getattr(component, "checks", ()) or ())
    exposures = getattr(component, "exposures", None)
    if checks or exposures:
        name = str(getattr(component, "name", module_name.rsplit(".", 1)[-1]))
        schema.checks.append(SettingsChecks(where, name, checks, switch, exposures))


def _add_cluster_settings(schema: Schema) -> None:
    from spectra import cluster_settings

    where = _module_file(cluster_settings.__name__)
    for key, default in cluster_settings.DEFAULTS.items():
        declared = cluster_settings.TYPES.get(key)
        expected = (
            (declared if isinstance(declared, tuple) else (declared,)) if declared else types_from_default(default)
        )
        schema.add(KeySpec(key, expected, where, default=default))
    schema.checks.append(SettingsChecks(where, "cluster settings", tuple(cluster_settings.CHECKS)))


def load_schema(components_package: str | None = DEFAULT_COMPONENTS_PACKAGE) -> Schema:
    schema = Schema()
    _add_inventory_keys(schema)
    _add_pyinfra_keys(schema)
    _add_cluster_settings(schema)
    if components_package:
        names, problems = _component_module_names(components_package)
        schema.problems.extend(problems)
        for name in names:
            _add_component(schema, name)
    return schema
