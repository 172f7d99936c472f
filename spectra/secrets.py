"""Secrets in group data without the secret in the repository: a reference, resolved when the setting is read.

In ``group_data/*.py`` (or inventory data)::

    from spectra.secrets import from_env, from_file

    alertmanager_receivers = [
        {"name": "ops", "type": "slack", "api_url": from_env("SPECTRA_SLACK_WEBHOOK_URL"), "channel": "#ops"},
        {"name": "mail", "type": "email", "to": "ops@example.org", "from": "am@example.org",
         "smarthost": "smtp.example.org:587", "auth_username": "am",
         "auth_password": from_file("~/.config/spectra/smtp-password")},
    ]

``from_env(NAME)`` is the environment variable's value (``sops exec-env secrets.enc.yaml 'spectra deploy ...'``
passes a sops- or age-encrypted file's values this way, never written to disk); ``from_file(PATH)`` is a file's
text without its final newline (a file outside the repository, or one that a vault agent or ``sops -d`` wrote to
a tmpfs). ``deploys.settings.setting`` resolves references wherever they sit in a value (nested in lists and
dicts) each time the setting is read; ``spectra validate`` resolves them too. A missing variable, an empty one or
an unreadable file stops both with the setting's name and what is missing, before anything is applied.

Printing does not show a secret: a reference prints as ``from_env('NAME')``, and a resolved value is a
:class:`Secret`, a ``str`` (templates, JSON and YAML take it as the text) whose ``repr`` is ``'<secret>'``, so
messages that quote a value with ``!r`` show that instead. Only settings the toolkit reads are resolved: pyinfra's
own connection data (``ssh_password``, ...) is not; use SSH keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Secret", "SecretError", "SecretRef", "from_env", "from_file", "references", "resolve"]


class SecretError(ValueError):
    """A referenced secret that cannot be had; the message names the setting and what is missing."""


class Secret(str):
    """A resolved secret: the text itself everywhere but in ``repr``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<secret>'"


# YAML dumpers do not take str subclasses by themselves: a Secret is dumped as the plain string it is.
for _dumper in (yaml.SafeDumper, getattr(yaml, "CSafeDumper", None)):
    if _dumper is not None:
        _dumper.add_representer(Secret, lambda dumper, value: dumper.represent_str(str(value)))


class SecretRef:
    """Where a secret comes from; :meth:`value` reads it."""

    __slots__ = ("kind", "source")

    def __init__(self, kind: str, source: str) -> None:
        self.kind = kind
        self.source = source

    def describe(self) -> str:
        return f"environment variable {self.source}" if self.kind == "env" else f"file {self.source}"

    def value(self) -> Secret:
        if self.kind == "env":
            text = os.environ.get(self.source)
            if text is None or text == "":
                raise SecretError(f"{self.describe()} is {'empty' if text == '' else 'not set'}")
            return Secret(text)
        path = Path(self.source).expanduser()
        try:
            text = path.read_text().removesuffix("\n")
        except OSError as error:
            raise SecretError(f"{self.describe()} cannot be read ({error.strerror or error})") from None
        if not text:
            raise SecretError(f"{self.describe()} is empty")
        return Secret(text)

    def __repr__(self) -> str:
        return f"from_{self.kind}({self.source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and (self.kind, self.source) == (other.kind, other.source)

    def __hash__(self) -> int:
        return hash((self.kind, self.source))


def from_env(name: str) -> SecretRef:
    """The value of environment variable ``name`` when the setting is read."""
    if not isinstance(name, str) or not name or "=" in name:
        raise SecretError(f"from_env({name!r}): an environment variable name")
    return SecretRef("env", name)


def from_file(path: str | os.PathLike[str]) -> SecretRef:
    """The text of the file at ``path`` (``~`` expanded; the final newline dropped) when the setting is read."""
    text = os.fspath(path)
    if not text:
        raise SecretError("from_file(''): a path")
    return SecretRef("file", text)


def references(value: Any, where: str = "") -> Iterator[tuple[str, SecretRef]]:
    """``(path, reference)`` of every reference in ``value`` (``[0].api_url``), in order."""
    if isinstance(value, SecretRef):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from references(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from references(item, f"{where}[{index}]")


_SCALARS = (str, int, float, bool, type(None))
# id -> containers found to hold no reference, kept alive here so that no other object takes the id. Group data
# is not changed after loading: a container once plain stays plain (the checksum tables are read per binary).
_PLAIN: dict[int, Any] = {}


def _resolved(value: Any) -> Any:
    if isinstance(value, SecretRef):
        return value.value()
    if isinstance(value, Mapping):
        return {key: _resolved(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_resolved(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def resolve(value: Any, key: str) -> Any:
    """``value`` (setting ``key``'s) with every reference replaced by its secret; the value itself when it holds
    none (a scalar at once; a container once walked, then remembered). Raises :class:`SecretError` naming
    ``key`` and the path inside it."""
    if type(value) in _SCALARS or id(value) in _PLAIN:
        return value
    found = list(references(value, key))
    if not found:
        if isinstance(value, Mapping | list | tuple):
            _PLAIN[id(value)] = value
        return value
    problems = []
    for where, reference in found:  # every missing one in one message, not the first only
        try:
            reference.value()
        except SecretError as error:
            problems.append(f"{where}: {error}")
    if problems:
        raise SecretError("; ".join(problems))
    return _resolved(value)
