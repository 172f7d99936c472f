"""Several facts in ONE remote command.

pyinfra 3 runs one remote command per ``host.get_fact`` and has no fact cache, so a component that reads
five facts one after the other pays five round trips (and pyinfra's per-fact overhead) on every run.
:class:`Facts` runs the commands of several facts in one shell, each in its own subshell (an ``exit`` in
one part cannot end the others), and hands each part's output lines to that fact's own ``process``:

.. code:: python

    platform, packages = host.get_fact(Facts, parts=[(Platform, {}), (DebPackages, {})])

Each part keeps pyinfra's semantics: a part whose ``requires_command`` is missing gives the fact's
``default()``; a part with no output gives ``default()``; a part that exits non-zero fails the whole fact
(pyinfra then fails the host, as it does for a single fact that fails), naming the part.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyinfra.api import FactBase, FactProcessError, StringCommand

# Marker lines around each part's output. Fixed text (no user data), unlikely in any fact's output.
_BEGIN = "@@spectra-fact-begin@@"
_END = "@@spectra-fact-end@@"
_MISSING = "@@spectra-fact-missing-command@@"

Part = tuple[type[FactBase[Any]], Mapping[str, Any]]


def _call(attribute: Any, kwargs: Mapping[str, Any]) -> Any:
    return attribute(**kwargs) if callable(attribute) else attribute


def part_name(part: Part) -> str:
    return part[0].name


class Facts(FactBase[list[Any]]):
    """
    The results of several facts, in the order asked, from one remote command. Use :func:`bind` to get
    the class to pass to ``host.get_fact`` (pyinfra's ``process`` sees only the output, so the class
    carries the parts):

    .. code:: python

        parts = [(Platform, {}), (SysctlValues, {"keys": ["net.ipv4.ip_forward"]})]
        platform, sysctls = host.get_fact(bind(parts), parts=parts)

    + parts: ``[(FactClass, {keyword arguments}), ...]``
    """

    parts: tuple[Part, ...] = ()

    def command(self, parts: Sequence[Part]) -> StringCommand:
        pieces: list[Any] = []
        for index, (cls, kwargs) in enumerate(parts):
            fact = cls()
            command = _call(fact.command, kwargs)
            required = fact.requires_command(**kwargs)
            body: list[Any] = ["(", command, ")"]
            if required:
                body = [
                    "if", "command", "-v", required, ">/dev/null", "2>&1;", "then", *body, ";",
                    "else", "echo", f"'{_MISSING}';", "fi",
                ]  # fmt: skip
            pieces += ["echo", f"'{_BEGIN} {index}';", *body, ";", "echo", f"'{_END} {index}'", "$?;"]
        return StringCommand(*pieces)

    @staticmethod
    def default() -> list[Any]:
        return []

    def process(self, output: list[str]) -> list[Any]:
        return process_parts(self.parts, output)


_BOUND: dict[str, type[Facts]] = {}


def bind(parts: Sequence[Part]) -> type[Facts]:
    """A :class:`Facts` class that knows ``parts`` (call ``host.get_fact(bind(parts), parts=parts)``).

    Classes are kept per distinct ``parts`` (pyinfra checks every new fact class when it is created).
    """
    bound = tuple((cls, dict(kwargs)) for cls, kwargs in parts)
    key = json.dumps([(f"{cls.__module__}.{cls.__qualname__}", kwargs) for cls, kwargs in bound], default=str)
    if key not in _BOUND:
        _BOUND[key] = type("Facts", (Facts,), {"parts": bound, "__module__": __name__})
    return _BOUND[key]


def split_output(output: Sequence[str], count: int) -> list[tuple[list[str], int | None]]:
    """Per part: (its output lines, its exit status, or None when it never finished)."""
    parts: list[tuple[list[str], int | None]] = [([], None) for _ in range(count)]
    current: int | None = None
    lines: list[str] = []
    for line in output:
        if line.startswith(_BEGIN + " "):
            current, lines = int(line.split()[1]), []
        elif line.startswith(_END + " ") and current is not None:
            fields = line.split()
            status = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 1
            if 0 <= current < count:
                parts[current] = (lines, status)
            current, lines = None, []
        elif current is not None:
            lines.append(line)
    return parts


def process_parts(parts: Sequence[Part], output: Sequence[str]) -> list[Any]:
    """Each part's result, from the output of :meth:`Facts.command`."""
    results = []
    for part, (lines, status) in zip(parts, split_output(output, len(parts)), strict=True):
        fact = part[0]()
        if status is None:
            raise FactProcessError(f"{part_name(part)}: no complete output (the command was cut short)")
        if lines == [_MISSING]:
            results.append(fact.default())
            continue
        if status != 0:
            raise FactProcessError(f"{part_name(part)} failed (exit status {status})")
        results.append(fact.process(lines) if lines else fact.default())
    return results
