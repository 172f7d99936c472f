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
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

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
    summary["stage"] = getattr(getattr(state, "current_stage", None), "name", None)
    summary["activated_hosts"] = sorted(host.name for host in state.activated_hosts)
    summary["failed_hosts"] = sorted(host.name for host in state.failed_hosts)
    summary["hosts_with_errors"] = sorted(
        host.name for host, results in state.results.items() if getattr(results, "error_ops", 0) > 0
    )
    summary["changed_operations"] = changed_operations(state)
    return summary


def changed_operations(state: Any) -> dict[str, list[str]]:
    """Per activated host, the names of the operations that changed something (pyinfra's own results)."""
    from pyinfra_cli.prints import pretty_op_name

    changed: dict[str, list[str]] = {}
    try:
        op_order = state.get_op_order()
    except Exception:  # noqa: BLE001 - no operations were prepared (e.g. failed before the prepare stage)
        return changed
    for host in state.activated_hosts:
        names = []
        for op_hash in op_order:
            op = state.ops.get(host, {}).get(op_hash)
            if op is None:
                continue
            meta = op.operation_meta
            if meta.did_succeed(_raise_if_not_complete=False) and meta.did_change():
                names.append(pretty_op_name(state.op_meta[op_hash]))
        changed[host.name] = names
    return changed


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
    from pyinfra.context import ctx_state
    from pyinfra_cli.main import main as pyinfra_main

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

    sys.argv = ["pyinfra", *argv]
    signal.signal = tracking_signal  # type: ignore[assignment]
    try:
        pyinfra_main()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        interrupted = True
        code = EXIT_INTERRUPTED
    finally:
        signal.signal = real_signal

    state = ctx_state.get() if ctx_state.isset() else None
    summary = summarise(state, code, interrupted)
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
