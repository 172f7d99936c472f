"""The one way to read a setting: host and group data first, then the default of the module that owns the key.

Every key has exactly one owner: ``spectra.cluster_settings`` (cluster-wide names, ranges, ports), a
component module in ``deploys/components/`` (its ``DEFAULTS``), or :data:`HOST_KEYS` (inventory and
connection data). :func:`owners` finds them all and refuses a key declared twice, so a component can read
another's setting (``setting("cluster_domain")``) and gets the same default whichever deploy is running,
inside its ``@deploy`` or outside (fact requests at prepare time), on this host or another (``member=``).

:class:`Settings` is that view as a mapping, what components' ``should_run``, ``fact_requests`` and
``checks`` receive. :func:`require` stops the run for this host at prepare time, before anything changes.
Secrets referenced in data (``spectra.secrets.from_env``/``from_file``) are resolved here, when read.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError

from spectra import cluster_settings, secrets

COMPONENTS_PACKAGE = "deploys.components"

# Inventory and connection data the deploys read, with the value they take when the inventory has none.
HOST_KEYS: dict[str, Any] = {
    "roles": [],
    "zone": None,
    "region": None,
    "node_address": None,  # this host's address inside the cluster (spectra.topology.node_address)
    "private_ip": None,
    "ssh_hostname": None,
    "ssh_port": 22,  # pyinfra's: the port sshd listens on, which the firewall keeps open
    "ssh_user": None,
    "ssh_password": None,
}


@dataclass(frozen=True)
class Owner:
    module: str
    default: Any


class SettingsError(RuntimeError):
    """A key with two owners, or read without any: a bug in the code, not in the inventory."""


def component_modules() -> list[str]:
    package = importlib.import_module(COMPONENTS_PACKAGE)
    return sorted(
        f"{COMPONENTS_PACKAGE}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )


def _sources(module_names: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    sources: list[tuple[str, Mapping[str, Any]]] = []
    for name in module_names:
        defaults = getattr(importlib.import_module(name), "DEFAULTS", None)
        if isinstance(defaults, Mapping):
            sources.append((name, defaults))
    return sources


def _collect(sources: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Owner]:
    found: dict[str, Owner] = {key: Owner("deploys.settings.HOST_KEYS", default) for key, default in HOST_KEYS.items()}
    for module, defaults in [("spectra.cluster_settings", cluster_settings.DEFAULTS), *sources]:
        for key, default in defaults.items():
            if key in found:
                raise SettingsError(f"{key} is declared by {found[key].module} and {module}: one owner per key")
            found[key] = Owner(module, default)
    return found


@cache
def owners() -> dict[str, Owner]:
    """Every readable key and its owner (every component module imported); a key declared twice is refused.

    The unit tests call this, so a second owner anywhere fails them; a deploy asks :func:`owner`, which
    looks at the modules the run imported first and imports the rest only for a key none of them declares
    (node.py then never imports the cluster components and their PKI library: ~0.1 s per run)."""
    return _collect(_sources(component_modules()))


_IMPORTED: dict[str, Owner] = {}
_SEEN: set[str] = set()


def owner(key: str) -> Owner | None:
    if key not in _IMPORTED:
        prefix = f"{COMPONENTS_PACKAGE}."
        loaded = sorted(name for name in list(sys.modules) if name.startswith(prefix) and name not in _SEEN)
        if loaded or not _IMPORTED:
            _SEEN.update(loaded)
            _IMPORTED.update(_collect(_sources(sorted(_SEEN))))
        if key not in _IMPORTED:
            _IMPORTED.update(owners())
    return _IMPORTED.get(key)


_MISSING = object()


def setting(key: str, member: Any = None) -> Any:
    """``key`` for ``member`` (default: the current host): its data, else the owner's default."""
    target = host if member is None else member
    found = target.data.get(key, _MISSING)
    if found is not _MISSING:
        try:
            return secrets.resolve(found, key)  # from_env()/from_file() references in group data
        except secrets.SecretError as error:
            raise DeployError(f"{target.name}: setting {error}") from None
    known = owner(key)
    if known is None:
        raise SettingsError(f"no module declares the setting {key!r}")
    return known.default


class Settings(Mapping[str, Any]):
    """One host's settings, every key with its owner's default applied (a read-only mapping)."""

    def __init__(self, member: Any = None) -> None:
        self.member = host if member is None else member
        self.name = str(self.member.name)

    def __getitem__(self, key: str) -> Any:
        return setting(key, self.member)

    def __iter__(self) -> Iterator[str]:
        return iter(owners())

    def __len__(self) -> int:
        return len(owners())

    def of(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The values of one module's keys, as a plain dict."""
        return {key: self[key] for key in defaults}


def component_data(defaults: Mapping[str, Any], member: Any = None) -> dict[str, Any]:
    """The values of a module's ``DEFAULTS`` keys for ``member`` (default: the current host)."""
    return Settings(member).of(defaults)


def require(condition: bool, message: str) -> None:
    """Stop the deploy for this host with a clear message (raised at prepare, before any change)."""
    if not condition:
        raise DeployError(f"{host.name}: {message}")
