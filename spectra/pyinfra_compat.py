"""Every use of pyinfra's private or unstable API, behind one module and one version check.

pyinfra's public API is what ``pyinfra.api`` exports (``deploy``, ``operation``, ``FactBase``, ``State``,
``Inventory``, the command classes and exceptions) and the ``from pyinfra import host`` proxies. Spectra needs
more than that, and each such use is a function here:

* the CLI's own pieces, so ``spectra`` sees what a ``pyinfra`` run sees: its entry point
  (:func:`run_cli`), inventory and group-data loaders (:func:`make_inventory`, :func:`read_group_data`),
  ``--data`` parsing (:func:`parse_cli_value`), operation names (:func:`pretty_op_name`), and importing
  ``pyinfra_cli`` for its gevent patch (:func:`patch_stdlib_for_gevent`);
* the state a run leaves behind (:func:`current_state`, :func:`host_outcomes`, :func:`prepared_operations`):
  failed hosts, error counts and per-operation change signals, from which ``spectra`` fixes pyinfra's exit
  codes and lists drift;
* the context variables and host methods the unit-test harness swaps (:func:`host_context`,
  :func:`answer_facts_and_noops`, :func:`current_op_hash`);
* pyinfra's tables of connector data keys and global arguments (:func:`get_all_connectors`,
  :func:`all_global_arguments`), for the inventory schema;
* two speed patches: :func:`enable_fast_operation_order` (pyinfra's operation ordering without
  ``inspect.stack()``) and :func:`enable_ssh_tcp_nodelay` (``TCP_NODELAY`` on the paramiko sockets pyinfra's
  SSH connector opens).

Version policy: all of this was verified with the pyinfra series in :data:`VERIFIED_SERIES` (3.10.x: the
unit tests run every function here against the installed pyinfra, and pin the source of the function the
operation-order patch replaces). :func:`check_version` is the one check. With any other pyinfra it warns
once (:class:`PyinfraCompatWarning`) and the operation-order patch stays off, because a wrong order would
pass silently; everything else still runs, since pyproject already bounds pyinfra (<4) and a changed
internal fails loudly here (AttributeError/ImportError naming the pyinfra piece) rather than quietly.
A warning, not an error: refusing to deploy on a pyinfra release that may well work would block users for
no proven fault. To verify a new series: run the unit tests against it, then add it to VERIFIED_SERIES.

Importing this module patches nothing and does not import ``pyinfra_cli`` (which gevent-patches the
process): each function imports what it needs when called.
"""

from __future__ import annotations

import functools
import importlib
import re
import socket
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

# (major, minor) series of pyinfra this module was verified with: any patch release of them.
VERIFIED_SERIES: tuple[tuple[int, int], ...] = ((3, 10),)

_FAST_ORDER_MARK = "_spectra_fast_operation_order"
_NODELAY_MARK = "_spectra_tcp_nodelay"


class PyinfraCompatWarning(UserWarning):
    """The installed pyinfra is not one this module was verified with."""


# ---------------------------------------------------------------------------------------------------------
# The version check


@functools.cache
def pyinfra_version() -> str:
    # pyinfra reads its own version from the package metadata when it is imported; asking the metadata
    # again costs 20-80 ms per process
    import pyinfra

    return str(getattr(pyinfra, "__version__", "unknown"))


def verified_versions() -> str:
    return ", ".join(f"{major}.{minor}.x" for major, minor in VERIFIED_SERIES)


def is_verified(version: str) -> bool:
    match = re.match(r"^(\d+)\.(\d+)(?:\.|$)", version)
    return match is not None and (int(match.group(1)), int(match.group(2))) in VERIFIED_SERIES


@functools.cache
def check_version() -> bool:
    """Whether the installed pyinfra is a verified one; if not, warn once per process."""
    version = pyinfra_version()
    if is_verified(version):
        return True
    warnings.warn(
        f"pyinfra {version} is not a version spectra was verified with ({verified_versions()}): "
        "the operation-order speed-up is off; if a pyinfra internal changed, spectra fails naming it "
        "(see spectra/pyinfra_compat.py)",
        PyinfraCompatWarning,
        stacklevel=3,
    )
    return False


# ---------------------------------------------------------------------------------------------------------
# The CLI's own pieces


def patch_stdlib_for_gevent() -> None:
    """Import ``pyinfra_cli``, whose import runs gevent's ``monkey.patch_all()``, as the ``pyinfra`` command
    does first. Call it before inventory files import boto3 & co. (they must see the patched stdlib)."""
    check_version()
    importlib.import_module("pyinfra_cli")


def parse_cli_value(text: str) -> Any:
    """A ``--data key=VALUE`` value as the pyinfra CLI reads it (``"true"`` -> True, JSON, ...)."""
    check_version()
    from pyinfra_cli.util import parse_cli_arg

    return parse_cli_arg(text)


def run_cli(argv: Sequence[str]) -> None:
    """``pyinfra ARGV`` in this process; raises ``SystemExit`` as the command does."""
    check_version()
    from pyinfra_cli.main import main

    sys.argv = ["pyinfra", *argv]  # click reads the arguments from sys.argv
    main()


def make_inventory(
    inventory_path: str,
    cwd: str | None = None,
    override_data: Mapping[str, Any] | None = None,
    group_data_directories: Sequence[str] | None = None,
) -> Any:
    """The ``pyinfra.api.Inventory`` the CLI builds for an inventory file (same loader, same group_data)."""
    check_version()
    from pyinfra.api import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory as cli_make_inventory

    with ctx_state.use(State()):  # the loader reads the current state
        return cli_make_inventory(
            inventory_path,
            cwd=cwd,
            override_data=dict(override_data or {}),
            group_data_directories=list(group_data_directories) if group_data_directories else None,
        )


def read_group_data(path: str, inventory: Any = None) -> dict[str, dict[str, Any]]:
    """``{group: data}`` from one group_data file (or directory) with the CLI's loader and import filtering.

    Group data files may read ``pyinfra.inventory``: pass it, or call this inside pyinfra contexts."""
    check_version()
    from pyinfra_cli.inventory import _get_group_data

    if inventory is None:
        return dict(_get_group_data(path))
    from pyinfra.api import State
    from pyinfra.context import ctx_inventory, ctx_state

    with ctx_state.use(State()), ctx_inventory.use(inventory):
        return dict(_get_group_data(path))


def pretty_op_name(op_meta: Any) -> str:
    """An operation's name as the pyinfra CLI prints it (``Files | /etc/x``)."""
    check_version()
    from pyinfra_cli.prints import pretty_op_name as cli_pretty_op_name

    return str(cli_pretty_op_name(op_meta))


def get_all_connectors() -> dict[str, Any]:
    """pyinfra's connectors by name (each has ``data_cls`` and ``data_meta``: its host data keys)."""
    check_version()
    from pyinfra.api.connectors import get_all_connectors as connectors

    return dict(connectors())


def all_global_arguments() -> list[tuple[str, Any]]:
    """``(name, type hint)`` of every global argument (``_sudo``, ``_retries`` ...)."""
    check_version()
    from pyinfra.api.arguments import all_global_arguments as arguments

    return list(arguments())


# ---------------------------------------------------------------------------------------------------------
# The state a run leaves behind


def current_state() -> Any | None:
    """The ``State`` of the run in this process (set by the CLI), or None before one exists."""
    check_version()
    from pyinfra.context import ctx_state

    return ctx_state.get() if ctx_state.isset() else None


@dataclass(frozen=True)
class HostOutcomes:
    stage: str | None  # the stage the run reached: Prepare, Execute ...
    activated: list[str]
    failed: list[str]
    with_errors: list[str]  # hosts with failed operations, even when pyinfra did not mark them failed


def host_outcomes(state: Any) -> HostOutcomes:
    check_version()
    return HostOutcomes(
        stage=getattr(getattr(state, "current_stage", None), "name", None),
        activated=sorted(host.name for host in state.activated_hosts),
        failed=sorted(host.name for host in state.failed_hosts),
        with_errors=sorted(
            host.name for host, results in state.results.items() if getattr(results, "error_ops", 0) > 0
        ),
    )


@dataclass(frozen=True)
class PreparedOperation:
    """One operation as pyinfra holds it for one host: what to name it, its arguments, its commands."""

    op_hash: str
    meta: Any  # pyinfra's per-operation meta: ``names`` and ``args``, what pretty_op_name reads
    global_arguments: Mapping[str, Any]
    command_generator: Callable[[], Iterator[Any]]
    _host_meta: Any  # pyinfra's OperationMeta for this host

    @property
    def names(self) -> list[str]:
        return sorted(self.meta.names)

    @property
    def may_change(self) -> bool | None:
        """Change detection's answer while preparing (a run without ``-y``): False means "no change"; None
        means not evaluated."""
        return self._host_meta._maybe_is_change

    def changed(self) -> bool:
        """Whether it ran and changed something (after the execute stage; False if it did not run)."""
        meta = self._host_meta
        return bool(meta.did_succeed(_raise_if_not_complete=False) and meta.did_change())


def prepared_operations(state: Any, hosts: Iterable[Any]) -> dict[Any, list[PreparedOperation]]:
    """Per host, the operations prepared for it, in the order pyinfra runs them."""
    check_version()
    op_order = state.get_op_order()  # a sort over every host's operations: once, not per host
    by_host: dict[Any, list[PreparedOperation]] = {}
    for host in hosts:
        host_ops = state.ops.get(host, {})
        by_host[host] = [
            PreparedOperation(
                op_hash=op_hash,
                meta=state.op_meta[op_hash],
                global_arguments=host_ops[op_hash].global_arguments,
                command_generator=host_ops[op_hash].command_generator,
                _host_meta=host_ops[op_hash].operation_meta,
            )
            for op_hash in op_order
            if op_hash in host_ops
        ]
    return by_host


# ---------------------------------------------------------------------------------------------------------
# What the unit-test harness swaps


@contextmanager
def host_context(state: Any, host: Any, config: Any = None) -> Iterator[None]:
    """``pyinfra.state``/``pyinfra.host`` (and ``pyinfra.config`` when given) for code run outside the CLI."""
    check_version()
    from pyinfra.context import ctx_config, ctx_host, ctx_state

    with ExitStack() as stack:
        if config is not None:
            stack.enter_context(ctx_config.use(config))
        stack.enter_context(ctx_state.use(state))
        stack.enter_context(ctx_host.use(host))
        yield


def answer_facts_and_noops(host: Any, get_fact: Callable[..., Any], noop: Callable[[str], None]) -> None:
    """Make ``host`` answer every fact read with ``get_fact(cls, *args, **kwargs)`` and record
    ``host.noop(description)`` calls with ``noop``: operations and facts go through these two."""
    check_version()
    host.get_fact = get_fact
    host.noop = noop


def current_op_hash(host: Any) -> str | None:
    """The hash of the operation ``host`` is preparing now."""
    check_version()
    return getattr(host, "current_op_hash", None)


# ---------------------------------------------------------------------------------------------------------
# Speed patches


def operation_order_from_stack(state: Any, frame: FrameType | None = None) -> list[Any]:
    """What pyinfra's ``get_operation_order_from_stack(state)`` returns, from raw frames.

    In CLI mode pyinfra orders operations by the line numbers of the deploy code that added them: for every
    operation on every host it calls ``inspect.stack()`` and ``inspect.getframeinfo`` on each frame, which
    build source context for every frame of a deep (gevent + @deploy) stack and, for frames without a source
    file (gevent's compiled greenlets), scan all of ``sys.modules`` each time. Measured on the lab: ~9 ms of
    CPU per operation, ~0.6 s of a 3-node no-op run of deploys/node.py. This walks the same frames
    (``f_back`` from the caller, as ``inspect.stack`` does) and reads the same two values
    (``co_filename``, ``f_lineno``) without source context: same list, same operation hashes and order.
    """
    import pyinfra
    from pyinfra.api.util import PYINFRA_INSTALL_DIR

    util_file = f"{PYINFRA_INSTALL_DIR}/api/util.py"

    # pyinfra's version sees its own frame first (a pyinfra frame, never a line number, but the last index
    # when the deploy file is not on the stack): stand in for it, then walk from our caller outwards
    current: FrameType | None = frame if frame is not None else sys._getframe(1)
    frames: list[tuple[str, int]] = [(util_file, 0)]
    while current is not None:
        frames.append((current.f_code.co_filename, current.f_lineno))
        current = current.f_back
    frames.reverse()

    start = 0
    if state.current_deploy_filename:
        for start, (filename, _) in enumerate(frames):  # noqa: B007 (the index is the result)
            if filename == state.current_deploy_filename:
                break

    line_numbers: list[Any] = []
    if pyinfra.is_cli:
        line_numbers.append(state.current_op_file_number)
    for filename, lineno in frames[start:]:
        if filename.startswith(PYINFRA_INSTALL_DIR):
            continue
        line_numbers.append(lineno)
    return line_numbers


def enable_fast_operation_order() -> bool:
    """Install :func:`operation_order_from_stack` where pyinfra's operations call it. True when installed
    (or already was); False on an unverified pyinfra, or when someone else already replaced pyinfra's."""
    if not check_version():
        return False
    # pyinfra.api re-exports functions named like its modules (``operation``): fetch the modules themselves
    operation_module: Any = importlib.import_module("pyinfra.api.operation")
    util_module: Any = importlib.import_module("pyinfra.api.util")
    if getattr(operation_module, _FAST_ORDER_MARK, False):
        return True
    if operation_module.get_operation_order_from_stack is not util_module.get_operation_order_from_stack:
        return False
    operation_module.get_operation_order_from_stack = operation_order_from_stack
    setattr(operation_module, _FAST_ORDER_MARK, True)
    return True


def enable_ssh_tcp_nodelay() -> bool:
    """Turn off Nagle's algorithm on every TCP socket paramiko's ``Transport`` wraps (pyinfra's SSH
    connector connects through it). True when installed (or already was).

    pyinfra sends one small request per remote command and waits for the answer; with Nagle on, each round
    trip stalls on the peer's delayed ACK (measured: ~44 ms per remote command, ~2 ms with TCP_NODELAY).
    Neither pyinfra nor paramiko sets the option. Installed on any pyinfra: it only sets a socket option
    before paramiko's own ``__init__`` runs unchanged. Sockets that are not TCP (a ProxyJump channel) are
    left alone.
    """
    check_version()
    import paramiko.transport

    transport_class: Any = paramiko.transport.Transport
    if getattr(transport_class, _NODELAY_MARK, False):
        return True
    original_init = transport_class.__init__

    @functools.wraps(original_init)
    def init_with_nodelay(self: Any, sock: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        original_init(self, sock, *args, **kwargs)

    transport_class.__init__ = init_with_nodelay
    setattr(transport_class, _NODELAY_MARK, True)
    return True


def ssh_tcp_nodelay_enabled() -> bool:
    import paramiko.transport

    return bool(getattr(paramiko.transport.Transport, _NODELAY_MARK, False))
