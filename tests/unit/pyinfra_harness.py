"""Drive pyinfra operations and @deploy functions in unit tests without any host.

Facts in, commands out, the way pyinfra's own data-file tests work, but for whole deploys:

    from tests.unit.pyinfra_harness import run_deploy, run_op, by_kwarg

    result = run_deploy(
        my_component.install,                     # a @deploy or @operation, called with *args/**kwargs
        facts={
            "server.LinuxDistribution": {"name": "Debian", "release_meta": {"VERSION_ID": "12"}, ...},
            LinuxDistribution: {...},             # a fact class works as key as well as its name
            "files.File": by_kwarg("path", {"/etc/x": {...}, "/etc/y": None}),
            SomeFact: lambda **kwargs: ...,       # any callable gets the fact's keyword arguments
        },
        data={"node_exporter_enabled": True},    # host data, overrides @deploy data_defaults
    )
    result.commands            # every command of every operation, as shell strings, in order
    result.ops                 # OpResult(name, commands, noops, has_if) per operation, in order
    result.op("Install containerd")   # first operation whose name contains the text
    result.uploads             # {remote path: uploaded text} for files put by FileUploadCommand
    result.fact_reads          # [(fact name, kwargs)] in the order they were read: one remote command each
    result.facts_read          # every fact name read, the parts of combined reads (facts.combined) included

How it works: a real pyinfra ``State``/``Inventory`` with one host, in API mode with
``check_for_changes=False`` (like ``pyinfra -y``), and ``host.get_fact`` replaced by a lookup in
``facts``. Operations are added by calling the deploy in the host context; then each operation's
command generator is run once, the way the execute stage runs it. ``_if`` conditions are not
evaluated (they need executed operations); ``OpResult.has_if`` tells an operation has one.
Several facts read as one (``facts.combined.Facts``) are answered part by part from ``facts`` and count as
one read. A fact that is read but not given raises ``MissingFact`` naming it and its arguments, so a test
states every fact the code under test depends on. The pyinfra internals this needs (contexts, the host's
fact and noop methods, the prepared operations) go through :mod:`spectra.pyinfra_compat`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from inspect import getcallargs
from io import BytesIO, StringIO
from typing import Any

from pyinfra.api import (
    Config,
    FactBase,
    FileUploadCommand,
    FunctionCommand,
    Host,
    Inventory,
    ShortFactBase,
    State,
    StringCommand,
)
from pyinfra.api.command import PyinfraCommand

from facts.combined import Facts
from spectra import pyinfra_compat

HOSTNAME = "testhost"
COMBINED = "facts.combined.Facts"


class MissingFact(KeyError):
    """A fact was read that the test did not provide."""


def by_kwarg(name: str, values: Mapping[Any, Any], default: Any = None) -> Callable[..., Any]:
    """A fact value chosen by one keyword argument, e.g. ``by_kwarg("path", {"/etc/x": {...}})``."""

    def lookup(**kwargs: Any) -> Any:
        key = kwargs.get(name)
        if isinstance(key, list):
            key = tuple(key)
        return values.get(key, default)

    return lookup


@dataclass
class OpResult:
    name: str
    commands: list[str] = field(default_factory=list)
    noops: list[str] = field(default_factory=list)
    has_if: bool = False
    global_arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.commands)


@dataclass
class Result:
    ops: list[OpResult]
    uploads: dict[str, str]
    fact_reads: list[tuple[str, dict[str, Any]]]
    host: Host
    state: State

    @property
    def commands(self) -> list[str]:
        return [command for op in self.ops for command in op.commands]

    @property
    def changed_ops(self) -> list[OpResult]:
        return [op for op in self.ops if op.changed]

    @property
    def noops(self) -> list[str]:
        return [noop for op in self.ops for noop in op.noops]

    def op(self, text: str) -> OpResult:
        for op in self.ops:
            if text in op.name:
                return op
        raise KeyError(f"no operation named like {text!r}; have: {[op.name for op in self.ops]}")

    def has_op(self, text: str) -> bool:
        return any(text in op.name for op in self.ops)

    @property
    def facts_read(self) -> list[str]:
        names: list[str] = []
        for name, kwargs in self.fact_reads:
            if name == COMBINED:
                names += [part for part, _ in kwargs["parts"]]
            else:
                names.append(name)
        return names


def _fact_name(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, type) and issubclass(key, (FactBase, ShortFactBase)):
        return key.name
    raise TypeError(f"fact keys are fact classes or their names, not {key!r}")


def _normalise_kwargs(cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if issubclass(cls, ShortFactBase):
        cls = cls.fact
    command = getattr(cls(), "command", None)
    if (args or kwargs) and callable(command):
        merged = getcallargs(command, *args, **kwargs)
        merged.pop("self", None)
        return merged
    return dict(kwargs)


def _command_to_text(command: PyinfraCommand, uploads: dict[str, str]) -> str:
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    if isinstance(command, FileUploadCommand):
        src = command.src
        if isinstance(src, StringIO | BytesIO):
            raw = src.getvalue()
            data = raw.encode() if isinstance(raw, str) else raw
        elif isinstance(src, str):
            with open(src, "rb") as handle:
                data = handle.read()
        else:
            raw = src.read()
            data = raw.encode() if isinstance(raw, str) else raw
        uploads[command.dest] = data.decode(errors="replace")
        return f"upload {command.dest} sha256={hashlib.sha256(data).hexdigest()}"
    if isinstance(command, FunctionCommand):
        return f"function {command.function.__name__}"
    return repr(command)


def _make_state(
    data: Mapping[str, Any] | None,
    others: Mapping[str, Mapping[str, Any]] | None = None,
    groups: Sequence[str] = (),
) -> tuple[State, Host]:
    hosts = [(HOSTNAME, dict(data or {})), *((name, dict(values)) for name, values in (others or {}).items())]
    inventory = Inventory((hosts, {}), **{group: ([HOSTNAME], {}) for group in groups})
    config = Config()
    config.TEMP_DIR = "/tmp"
    state = State(inventory, config, check_for_changes=False)
    host = inventory.get_host(HOSTNAME)
    return state, host


def run_deploy(
    func: Callable[..., Any],
    *args: Any,
    facts: Mapping[Any, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    others: Mapping[str, Mapping[str, Any]] | None = None,
    groups: Sequence[str] = (),
    **kwargs: Any,
) -> Result:
    """Call a @deploy or @operation function for one fake host; return its operations' commands.

    ``others``: more inventory hosts (name -> host data) beside the one the deploy runs on, for code that
    looks at the whole inventory (peer lists, firewall sets, the first control plane). ``groups``: inventory
    groups the host is in (``env_prod``).
    """
    state, host = _make_state(data, others, groups)
    fact_values = {_fact_name(key): value for key, value in (facts or {}).items()}
    fact_reads: list[tuple[str, dict[str, Any]]] = []
    noops: dict[str | None, list[str]] = {}

    def answer(name: str, call_kwargs: dict[str, Any]) -> Any:
        if name not in fact_values:
            raise MissingFact(f"fact {name} {call_kwargs} not given to the test")
        value = fact_values[name]
        return value(**call_kwargs) if callable(value) else value

    def get_fact(cls: type[Any], *fact_args: Any, **fact_kwargs: Any) -> Any:
        if isinstance(cls, type) and issubclass(cls, Facts):
            parts = [(part_cls, _normalise_kwargs(part_cls, (), dict(kw))) for part_cls, kw in fact_kwargs["parts"]]
            fact_reads.append((COMBINED, {"parts": [(_fact_name(part_cls), kw) for part_cls, kw in parts]}))
            return [answer(_fact_name(part_cls), kw) for part_cls, kw in parts]
        name = _fact_name(cls)
        call_kwargs = _normalise_kwargs(cls, fact_args, fact_kwargs)
        fact_reads.append((name, call_kwargs))
        return answer(name, call_kwargs)

    def noop(description: str) -> None:
        noops.setdefault(pyinfra_compat.current_op_hash(host), []).append(description)

    pyinfra_compat.answer_facts_and_noops(host, get_fact, noop)

    with pyinfra_compat.host_context(state, host, config=state.config):
        func(*args, **kwargs)

        ops: list[OpResult] = []
        uploads: dict[str, str] = {}
        for op in pyinfra_compat.prepared_operations(state, [host])[host]:
            result = OpResult(
                name=op.names[0] if op.names else op.op_hash,
                has_if=bool(op.global_arguments.get("_if")),
                global_arguments=dict(op.global_arguments),
            )
            for command in op.command_generator():
                result.commands.append(_command_to_text(command, uploads))
            result.noops = noops.get(op.op_hash, [])
            ops.append(result)

    return Result(ops=ops, uploads=uploads, fact_reads=fact_reads, host=host, state=state)


def run_component(
    component: Any,
    facts: Mapping[Any, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    others: Mapping[str, Mapping[str, Any]] | None = None,
    groups: Sequence[str] = (),
) -> Result:
    """Run one component the way an entry file does (``deploys.component.run``): its settings checked, its
    gate, its facts read in one command, then its deploy. Bad settings raise ``DeployError``."""
    from deploys.component import run

    def entry() -> None:
        run([component])

    return run_deploy(entry, facts=facts, data=data, others=others, groups=groups)


def run_op(
    op: Callable[..., Any],
    *args: Any,
    facts: Mapping[Any, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Result:
    """Same as run_deploy, for a single operation (reads more naturally in operation tests)."""
    return run_deploy(op, *args, facts=facts, data=data, **kwargs)
