"""Several facts in one remote command: each part processed by its own fact, pyinfra's semantics kept."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from pyinfra.api import FactBase, FactProcessError
from pyinfra.facts.deb import DebPackages

from facts.combined import bind, process_parts, split_output
from facts.swap import Swap
from facts.sysctl import SysctlValues

pytestmark = pytest.mark.unit


class Echo(FactBase[list[str]]):
    def command(self, text: str) -> str:
        return f"printf '%s\\n' {text}"

    @staticmethod
    def default() -> list[str]:
        return ["default"]

    def process(self, output: list[str]) -> list[str]:
        return list(output)


class Fails(FactBase[Any]):
    def command(self) -> str:
        return "echo partial; exit 3"


class NeedsMissingBinary(FactBase[dict[str, Any]]):
    def command(self) -> str:
        return "spectra-no-such-binary --list"

    def requires_command(self) -> str:
        return "spectra-no-such-binary"

    @staticmethod
    def default() -> dict[str, Any]:
        return {}


def run(parts: list[tuple[type[Any], dict[str, Any]]]) -> list[Any]:
    fact = bind(parts)()
    command = fact.command(parts).get_raw_value()
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    return fact.process(output.splitlines())


def test_parts_in_order_each_processed_by_its_fact() -> None:
    echo, sysctls, swap = run(
        [(Echo, {"text": "a b"}), (SysctlValues, {"keys": ["kernel.spectra_no_such_key"]}), (Swap, {})]
    )
    assert echo == ["a", "b"]
    assert sysctls == {"kernel.spectra_no_such_key": None}
    assert set(swap) == {"active", "fstab"}


def test_part_without_output_gives_its_default() -> None:
    assert run([(Echo, {"text": "x"}), (Echo, {"text": "''"})]) == [["x"], [""]]
    assert process_parts([(Echo, {"text": "x"})], ["@@spectra-fact-begin@@ 0", "@@spectra-fact-end@@ 0 0"]) == [
        ["default"]
    ]


def test_missing_required_command_gives_default_and_does_not_stop_the_rest() -> None:
    assert run([(NeedsMissingBinary, {}), (Echo, {"text": "after"})]) == [{}, ["after"]]


def test_a_failing_part_fails_the_fact_naming_it() -> None:
    with pytest.raises(FactProcessError, match="Fails failed \\(exit status 3\\)"):
        run([(Echo, {"text": "x"}), (Fails, {}), (Echo, {"text": "y"})])


def test_cut_short_output_is_an_error() -> None:
    with pytest.raises(FactProcessError, match="no complete output"):
        process_parts([(Echo, {"text": "x"})], ["@@spectra-fact-begin@@ 0", "x"])


def test_exit_inside_a_part_does_not_end_the_others() -> None:
    class Exits(FactBase[list[str]]):
        def command(self) -> str:
            return "echo one; exit 0; echo never"

        def process(self, output: list[str]) -> list[str]:
            return output

    assert run([(Exits, {}), (Echo, {"text": "two"})]) == [["one"], ["two"]]


def test_user_values_stay_quoted() -> None:
    (values,) = run([(SysctlValues, {"keys": ["$(touch /tmp/spectra-pwned)"]})])
    assert values == {"$(touch /tmp/spectra-pwned)": None}


def test_split_output_ignores_lines_outside_parts() -> None:
    lines = ["noise", "@@spectra-fact-begin@@ 0", "a", "@@spectra-fact-end@@ 0 0", "more noise"]
    assert split_output(lines, 1) == [(["a"], 0)]


def test_bound_class_carries_its_parts_and_a_stable_name() -> None:
    parts: list[tuple[type[Any], dict[str, Any]]] = [(DebPackages, {}), (Swap, {})]
    cls = bind(parts)
    assert cls.name == "facts.combined.Facts"
    assert [part[0] for part in cls.parts] == [DebPackages, Swap]
    text = cls().command(parts).get_raw_value()
    assert "if command -v dpkg >/dev/null 2>&1; then ( dpkg -l )" in text


def test_bound_classes_are_reused_for_the_same_parts() -> None:
    assert bind([(Swap, {})]) is bind([(Swap, {})])
    assert bind([(SysctlValues, {"keys": ["a"]})]) is not bind([(SysctlValues, {"keys": ["b"]})])
