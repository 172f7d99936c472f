"""The fast operation-order function gives pyinfra's answer, replaces only the function it was verified
against, and stays off on a pyinfra outside the verified versions."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pyinfra
import pytest

from deploys import pyinfra_speedups
from spectra import pyinfra_compat

pytestmark = pytest.mark.unit

util: Any = importlib.import_module("pyinfra.api.util")
operation: Any = importlib.import_module("pyinfra.api.operation")

# sha256 of the source of pyinfra.api.util.get_operation_order_from_stack that operation_order_from_stack
# reproduces (pyinfra 3.10.0). A pyinfra release that changes it fails here: check the replacement against
# the new source, then update this and pyinfra_compat.VERIFIED_SERIES.
VERIFIED_SOURCE_SHA256 = "f4807f61585570e091fd453c7552d9e2b49329555f07f395a8e8f1d2a398a0b2"


@pytest.fixture
def pristine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pyinfra's own function in place, as before any deploy file ran; restored afterwards."""
    monkeypatch.setattr(operation, "get_operation_order_from_stack", util.get_operation_order_from_stack)
    monkeypatch.delattr(operation, "_spectra_fast_operation_order", raising=False)
    pyinfra_compat.check_version.cache_clear()
    yield
    pyinfra_compat.check_version.cache_clear()


def _nested(depth: int, state: Any) -> tuple[list[Any], list[Any]]:
    if depth:
        return _nested(depth - 1, state)
    # both on one line: the caller's line number is part of the answer
    return util.get_operation_order_from_stack(state), pyinfra_compat.operation_order_from_stack(state)


@pytest.mark.parametrize("deploy_file", [None, __file__, "/nowhere/deploy.py"])
@pytest.mark.parametrize("is_cli", [True, False])
def test_same_answer_as_pyinfra(deploy_file: str | None, is_cli: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=3)
    theirs, ours = _nested(4, state)
    assert ours == theirs
    if deploy_file != "/nowhere/deploy.py":  # a deploy file not on the stack leaves no line number
        assert len(ours) > 4


def test_the_replaced_function_is_the_verified_one() -> None:
    source = inspect.getsource(util.get_operation_order_from_stack)
    assert hashlib.sha256(source.encode()).hexdigest() == VERIFIED_SOURCE_SHA256


def test_enable_installs_it_once(pristine: None) -> None:
    assert pyinfra_speedups.enable() is True
    assert operation.get_operation_order_from_stack is pyinfra_compat.operation_order_from_stack
    assert pyinfra_speedups.enable() is True  # idempotent
    assert operation.get_operation_order_from_stack is pyinfra_compat.operation_order_from_stack


def test_not_installed_over_someone_elses_replacement(pristine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def theirs(state: Any) -> list[Any]:
        return []

    monkeypatch.setattr(operation, "get_operation_order_from_stack", theirs)
    assert pyinfra_speedups.enable() is False
    assert operation.get_operation_order_from_stack is theirs


def test_not_installed_on_an_unverified_pyinfra(pristine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyinfra_compat, "pyinfra_version", lambda: "3.11.0")
    with pytest.warns(pyinfra_compat.PyinfraCompatWarning, match=r"pyinfra 3.11.0 is not .*\(3.10.x\)"):
        assert pyinfra_speedups.enable() is False
    assert operation.get_operation_order_from_stack is util.get_operation_order_from_stack
