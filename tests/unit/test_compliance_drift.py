"""Drift: the per-host change list the shim records in --dry mode, and how `spectra drift` reports it."""

from __future__ import annotations

from typing import Any

import pytest
from pyinfra.api.command import FileUploadCommand, HiddenValue, QuoteString, StringCommand
from pyinfra.api.operation import OperationMeta

from spectra_cli import drift
from spectra_cli.pyinfra_shim import describe_command, would_change
from spectra_cli.runner import PyinfraRun

pytestmark = pytest.mark.unit

SUMMARY = {
    "activated_hosts": ["node1", "node2"],
    "would_change": {
        "node1": [
            {"operation": "Files | /etc/shadow", "commands": ["chmod 640 /etc/shadow"], "more_commands": 0,
             "conditional": False, "error": None},
            {"operation": "Restart x", "commands": ["systemctl restart x"], "conditional": True},
        ],
        "node2": [],
    },
}  # fmt: skip


def test_parse_and_report_drift(capsys: pytest.CaptureFixture[str]) -> None:
    changes, conditional = drift.parse_drift(SUMMARY)
    assert changes == [drift.Drift("node1", "Files | /etc/shadow", ["chmod 640 /etc/shadow"])]
    assert [item.operation for item in conditional] == ["Restart x"]
    assert drift.report(SUMMARY) == drift.EXIT_DRIFT
    out = capsys.readouterr()
    assert "DRIFT node1 | Files | /etc/shadow\n      chmod 640 /etc/shadow\n" in out.out
    assert "drift per host: node1 1, node2 0" in out.out
    assert "1 operation(s) would change node1" in out.err


def test_clean_and_missing_change_lists() -> None:
    assert drift.report({"activated_hosts": ["n"], "would_change": {"n": []}}) == 0
    assert drift.report({"activated_hosts": ["n"]}) == 1  # a dry run that recorded nothing is not "clean"


def test_drift_runs_pyinfra_without_yes_so_it_detects_changes() -> None:
    run = PyinfraRun("inv.py", ["deploy.py"], flags=["--dry"], yes=False)
    assert "-y" not in run.argv() and run.argv()[-3:] == ["--dry", "inv.py", "deploy.py"]
    assert PyinfraRun("inv.py", ["deploy.py"]).argv()[0] == "-y"


def test_commands_are_described_with_secrets_masked() -> None:
    command = StringCommand("echo", HiddenValue("s3cret"), ">", QuoteString("/etc/a b"))
    assert describe_command(command) == "echo *MASKED* > '/etc/a b'"
    assert describe_command(FileUploadCommand("/tmp/src", "/etc/dst")) == "upload /tmp/src -> /etc/dst"
    assert describe_command(StringCommand("x" * 400)).endswith("...")


class _Host:
    def __init__(self, name: str) -> None:
        self.name = name


class _OpData:
    def __init__(self, commands: list[Any], maybe: bool | None, conditional: bool = False) -> None:
        self.operation_meta = OperationMeta("h", maybe)
        self.global_arguments = {"_if": [lambda: True] if conditional else None}
        self._commands = commands

    def command_generator(self) -> Any:
        yield from self._commands


class _Meta:
    def __init__(self, name: str) -> None:
        self.names = {name}
        self.args: list[str] = []


class _State:
    def __init__(self, ops: dict[_Host, dict[str, _OpData]], names: dict[str, str]) -> None:
        self.ops = ops
        self.activated_hosts = set(ops)
        self.op_meta = {op_hash: _Meta(name) for op_hash, name in names.items()}
        self._order = list(names)

    def get_op_order(self) -> list[str]:
        return self._order


def test_would_change_uses_pyinfras_change_signal_and_lists_commands() -> None:
    node1, node2 = _Host("node1"), _Host("node2")
    state = _State(
        {
            node1: {
                "a": _OpData([StringCommand("chmod 640 /etc/shadow")], maybe=True),
                "b": _OpData([StringCommand("never listed")], maybe=False),  # pyinfra found no change
                "c": _OpData([StringCommand(f"cmd {n}") for n in range(7)], maybe=True, conditional=True),
            },
            node2: {"a": _OpData([], maybe=None)},  # not evaluated while preparing: the generator decides
        },
        {"a": "Files | shadow", "b": "Noop", "c": "Restart"},
    )
    # (pyinfra_cli.prints, the default namer, would gevent-patch this test process on import)
    changes = would_change(state, op_name=lambda meta: " | ".join(sorted(meta.names)))
    assert changes["node2"] == []
    assert [item["operation"] for item in changes["node1"]] == ["Files | shadow", "Restart"]
    assert changes["node1"][0]["commands"] == ["chmod 640 /etc/shadow"] and not changes["node1"][0]["conditional"]
    assert changes["node1"][1]["commands"] == [f"cmd {n}" for n in range(5)]
    assert changes["node1"][1]["more_commands"] == 2 and changes["node1"][1]["conditional"]
