"""The fast operation-order function gives pyinfra's answer, and is only installed over the code it was
checked against."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

import pyinfra
import pytest

from deploys import pyinfra_speedups

pytestmark = pytest.mark.unit

util: Any = importlib.import_module("pyinfra.api.util")
operation: Any = importlib.import_module("pyinfra.api.operation")


def _nested(depth: int, state: Any) -> tuple[list[Any], list[Any]]:
    if depth:
        return _nested(depth - 1, state)
    # both on one line: the caller's line number is part of the answer
    return util.get_operation_order_from_stack(state), pyinfra_speedups.operation_order_from_stack(state)


@pytest.mark.parametrize("deploy_file", [None, __file__, "/nowhere/deploy.py"])
@pytest.mark.parametrize("is_cli", [True, False])
def test_same_answer_as_pyinfra(deploy_file: str | None, is_cli: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=3)
    theirs, ours = _nested(4, state)
    assert ours == theirs
    if deploy_file != "/nowhere/deploy.py":  # a deploy file not on the stack leaves no line number
        assert len(ours) > 4


def test_installed_over_the_checked_pyinfra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operation, "get_operation_order_from_stack", util.get_operation_order_from_stack)
    monkeypatch.delattr(operation, "_spectra_fast_operation_order", raising=False)
    assert pyinfra_speedups.enable() is True
    assert operation.get_operation_order_from_stack is pyinfra_speedups.operation_order_from_stack
    assert pyinfra_speedups.enable() is True  # idempotent


def test_not_installed_over_other_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operation, "get_operation_order_from_stack", util.get_operation_order_from_stack)
    monkeypatch.delattr(operation, "_spectra_fast_operation_order", raising=False)
    monkeypatch.setattr(pyinfra_speedups, "KNOWN_SOURCE_SHA256", "0" * 64)
    assert pyinfra_speedups.enable() is False
    assert operation.get_operation_order_from_stack is util.get_operation_order_from_stack
