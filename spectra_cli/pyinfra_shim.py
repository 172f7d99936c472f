"""Run the pyinfra CLI unchanged, then exit non-zero when the run was not a success.

``python -m spectra_cli.pyinfra_shim ARGS`` is ``pyinfra ARGS`` (same ``pyinfra_cli.main.main``), except
for the exit code. pyinfra 3.10 exits 0 in cases that are failures for us:

* ``--no-wait``: ``_run_no_wait_ops`` runs each host in a greenlet; a failing host raises inside its
  greenlet, ``gevent.joinall`` drops the exception, ``state.failed_hosts`` stays empty and
  ``_exit()`` returns 0 (``pyinfra/api/operations.py``, ``pyinfra_cli/cli.py``);
* Ctrl+C: ``pyinfra_cli/main.py`` installs a SIGINT handler that calls ``sys.exit(0)``;
* a run that activates zero hosts (missing inventory file, ``--limit`` matching nothing).

After pyinfra returns, this reads pyinfra's own state (failed hosts, per-host error counts) and exits
1 for failed hosts or zero hosts and 130 for an interrupt. With ``SPECTRA_RESULT_FILE`` set it also
writes a JSON summary there for ``spectra``.

With ``--dry`` the summary also says, per host, which operations *would* change and with which commands
(``would_change``), for ``spectra drift``. The signal is pyinfra's own: run without ``-y``, pyinfra
prepares with change detection (``State(check_for_changes=True)``), runs each operation's command
generator up to its first command and stores the answer in ``OperationMeta._maybe_is_change`` (what
``will_change`` returns); ``--dry`` then exits before executing, with the connections still open. For the
operations that would change, the generator is run again, in the host's context, to list the commands.

Every pyinfra internal read here (the CLI entry point, the run's state, operation names) goes through
:mod:`spectra.pyinfra_compat`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from spectra import pyinfra_compat

RESULT_FILE_ENV = "SPECTRA_RESULT_FILE"
EXIT_INTERRUPTED = 130


def summarise(state: Any, pyinfra_code: int, interrupted: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "pyinfra_exit_code": pyinfra_code,
        "interrupted": interrupted,
        "state": state is not None,
        "activated_hosts": [],
        "failed_hosts": [],
        "hosts_with_errors": [],
        "stage": None,
    }
    if state is None:
        return summary
    outcomes = pyinfra_compat.host_outcomes(state)
    summary["stage"] = outcomes.stage
    summary["activated_hosts"] = outcomes.activated
    summary["failed_hosts"] = outcomes.failed
    summary["hosts_with_errors"] = outcomes.with_errors
    summary["changed_operations"] = changed_operations(state)
    return summary


def changed_operations(state: Any) -> dict[str, list[str]]:
    """Per activated host, the names of the operations that changed something (pyinfra's own results)."""
    try:
        by_host = pyinfra_compat.prepared_operations(state, state.activated_hosts)
    except Exception:  # noqa: BLE001 - no operations were prepared (e.g. failed before the prepare stage)
        return {}
    return {
        host.name: [pyinfra_compat.pretty_op_name(op.meta) for op in operations if op.changed()]
        for host, operations in by_host.items()
    }


MAX_COMMANDS = 5  # commands listed per operation that would change


def describe_command(command: Any) -> str:
    """One line for a pyinfra command, secrets masked (``MaskString``)."""
    from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand

    if isinstance(command, StringCommand):
        text = command.get_masked_value()
    elif isinstance(command, FileUploadCommand):
        source = command.src if isinstance(command.src, str) else "generated content"
        text = f"upload {source} -> {command.dest}"
    elif isinstance(command, FunctionCommand):
        text = f"run {getattr(command.function, '__name__', 'function')}()"
    else:
        text = repr(command)
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def would_change(state: Any, op_name: Callable[[Any], str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per activated host, the operations a ``--dry`` run found would change, with their commands.

    ``conditional``: the operation has ``_if``, which pyinfra only evaluates while executing.
    ``op_name`` names an operation from its meta (default: pyinfra CLI's ``pretty_op_name``).
    """
    name: Callable[[Any], str] = op_name or pyinfra_compat.pretty_op_name
    changes: dict[str, list[dict[str, Any]]] = {}
    try:
        by_host = pyinfra_compat.prepared_operations(state, sorted(state.activated_hosts, key=lambda item: item.name))
    except Exception:  # noqa: BLE001 - nothing was prepared
        return changes
    for host, operations in by_host.items():
        items = []
        for op in operations:
            if op.may_change is False:
                continue
            commands: list[str] = []
            error = None
            try:
                with pyinfra_compat.host_context(state, host):
                    commands = [describe_command(command) for command in op.command_generator()]
            except Exception as exc:  # noqa: BLE001 - report it; the operation still counts as a change
                error = f"{type(exc).__name__}: {exc}"
            if not commands and error is None:
                continue
            items.append(
                {
                    "operation": name(op.meta),
                    "commands": commands[:MAX_COMMANDS],
                    "more_commands": max(0, len(commands) - MAX_COMMANDS),
                    "conditional": bool(op.global_arguments.get("_if")),
                    "error": error,
                }
            )
        changes[host.name] = items
    return changes


def decide_exit(summary: dict[str, Any], ran_operations: bool) -> tuple[int, str | None]:
    """Exit code and reason from a run summary."""
    if summary["interrupted"]:
        return EXIT_INTERRUPTED, "interrupted"
    code = summary["pyinfra_exit_code"]
    if code:
        return code, None
    failed = sorted(set(summary["failed_hosts"]) | set(summary["hosts_with_errors"]))
    if failed:
        return 1, f"pyinfra exited 0 but these hosts failed: {', '.join(failed)}"
    if ran_operations and summary["state"] and not summary["activated_hosts"]:
        return 1, "pyinfra ran on zero hosts"
    return 0, None


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return 1  # sys.exit("message")


def run(argv: list[str]) -> int:
    interrupted = False
    real_signal = signal.signal

    def tracking_signal(signum: int, handler: Any) -> Any:
        # pyinfra's SIGINT handler exits 0: note the interrupt before it runs.
        if signum == signal.SIGINT and callable(handler):
            inner: Callable[[int, Any], Any] = handler

            def on_interrupt(sig: int, frame: Any) -> Any:
                nonlocal interrupted
                interrupted = True
                return inner(sig, frame)

            return real_signal(signum, on_interrupt)
        return real_signal(signum, handler)

    signal.signal = tracking_signal  # type: ignore[assignment]
    try:
        pyinfra_compat.run_cli(argv)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        interrupted = True
        code = EXIT_INTERRUPTED
    finally:
        signal.signal = real_signal

    state = pyinfra_compat.current_state()
    summary = summarise(state, code, interrupted)
    if state is not None and "--dry" in argv and not interrupted:
        summary["would_change"] = would_change(state)
    ran_operations = "debug-inventory" not in argv
    final, reason = decide_exit(summary, ran_operations)
    summary["exit_code"] = final
    summary["reason"] = reason
    if reason:
        print(f"spectra: {reason}", file=sys.stderr)
    if summary.get("changed_operations") and ran_operations and "--dry" not in argv:
        counts = ", ".join(f"{name} {len(ops)}" for name, ops in sorted(summary["changed_operations"].items()))
        print(f"spectra: changed operations per host: {counts}", file=sys.stderr)
    result_file = os.environ.get(RESULT_FILE_ENV)
    if result_file:
        with open(result_file, "w", encoding="utf-8") as handle:
            json.dump(summary, handle)
    return final


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
