"""File mode and owner rules, shared by the OS baseline and the CIS file checks.

File states are :class:`facts.files.FileState` as :meth:`compliance.probe.Probe.files` returns them (the
deploys' own fact: ``stat -L``, so a symbolic link is judged by what it points to).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from compliance.model import Outcome, failed, not_applicable, passed
from compliance.probe import Probe
from facts.files import FileState


def mode_bits(state: FileState) -> int:
    return int(state.get("mode") or "0", 8)


@dataclass(frozen=True)
class FileExpectation:
    """A mode that files must not exceed ("600 or more restrictive") and/or their exact owner."""

    max_mode: int | None = None
    user: str | None = None
    groups: tuple[str, ...] | None = None  # any of them

    def problems(self, path: str, state: FileState) -> list[str]:
        """Why the file breaks the expectation (empty: it does not)."""
        if state.get("type") == "link":
            return [f"{path} is a dangling symbolic link"]
        problems = []
        mode = mode_bits(state)
        if self.max_mode is not None and mode & ~self.max_mode & 0o7777:
            problems.append(f"{path} is {mode:04o} (want {self.max_mode:04o} or stricter)")
        if self.user is not None and state.get("user") != self.user:
            problems.append(f"{path} is owned by user {state.get('user')} (want {self.user})")
        if self.groups is not None and state.get("group") not in self.groups:
            problems.append(f"{path} has group {state.get('group')} (want {' or '.join(self.groups)})")
        return problems

    def evaluate(self, states: Mapping[str, FileState]) -> Outcome:
        problems = [problem for path, state in states.items() for problem in self.problems(path, state)]
        if problems:
            return failed("; ".join(problems))
        return passed(
            ", ".join(f"{path} {mode_bits(s):04o} {s.get('user')}:{s.get('group')}" for path, s in states.items())
        )


MODE_600 = FileExpectation(max_mode=0o600)
ROOT_OWNED = FileExpectation(user="root", groups=("root",))


def _not_required(probe: Probe) -> str | None:
    return None


@dataclass(frozen=True, eq=False)
class PresentFiles:
    """Files (patterns; the last component may be a glob) checked against ``expect`` when present. When none
    is there the check is not applicable, ``absent`` saying why they may be missing, unless ``required``
    gives a reason they must exist: then it fails."""

    paths: Sequence[str] | Callable[[Probe], Sequence[str]]
    expect: FileExpectation
    absent: str | Callable[[Probe], str]
    required: Callable[[Probe], str | None] = _not_required

    def __call__(self, probe: Probe) -> Outcome:
        patterns = list(self.paths(probe) if callable(self.paths) else self.paths)
        states = probe.matching(patterns)
        if states:
            return self.expect.evaluate(states)
        required = self.required(probe)
        if required:
            return failed(f"{' '.join(patterns)} missing although {required}")
        absent = self.absent(probe) if callable(self.absent) else self.absent
        return not_applicable(f"{' / '.join(patterns)} absent: {absent}")
