"""What a compliance check is: one record holding its metadata, its scope and the code that decides it.

A :class:`Check` has a stable id (the CIS Kubernetes Benchmark number as kube-bench encodes it where one
exists, else ``SPX-<AREA>-<NNN>``), a title, a one-line rationale, a fix hint, the hosts it is about
(:class:`Scope`) and ``evaluate``, which reads a host through a :class:`~compliance.probe.Probe` and
returns an :class:`Outcome`. The records live in ``compliance/checks/<section>.py``; the registry
(:mod:`compliance.checks`) lists them in report order.

Statuses a check can end with on a host: ``pass``, ``fail``, ``not_applicable`` (the thing checked is
absent or cannot exist here, with the reason), and, after waivers are applied, ``waived``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from compliance.probe import HostUnreachable, Probe
from spectra import topology

Status = Literal["pass", "fail", "not_applicable", "waived"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "waived", "not_applicable")
OutcomeStatus = Literal["pass", "fail", "not_applicable"]

CIS = "CIS Kubernetes Benchmark v1.9 (kube-bench cis-1.9)"


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    reason: str = ""


def passed(reason: str = "") -> Outcome:
    return Outcome("pass", reason)


def failed(reason: str) -> Outcome:
    return Outcome("fail", reason)


def not_applicable(reason: str) -> Outcome:
    return Outcome("not_applicable", reason)


@dataclass(frozen=True)
class Scope:
    """The hosts a check is about, by role (none: every host); on any other host the check is not
    applicable for the reason ``outside``. What a host has installed is decided by the check itself."""

    roles: frozenset[str] = frozenset()
    outside: str = ""

    def applies(self, member: topology.Member) -> bool:
        return not self.roles or topology.has_role(member, *self.roles)


EVERY_HOST = Scope()

Evaluate = Callable[[Probe], Outcome]


# eq=False: records are compared by identity, and an evaluate holding a dict must not need hashing
@dataclass(frozen=True, eq=False)
class Check:
    id: str
    section: str  # the key of its module's section ("os", "cis-worker", ...): the report groups by it
    title: str
    rationale: str
    fix: str
    evaluate: Evaluate
    scope: Scope = EVERY_HOST
    reference: str = ""  # the benchmark it comes from, empty for our own baselines

    def run(self, probe: Probe) -> Outcome:
        """The outcome on one host; an error while reading the host is a failure naming the error."""
        if not self.scope.applies(probe.context):
            return not_applicable(self.scope.outside)
        try:
            return self.evaluate(probe)
        except HostUnreachable as exc:
            return failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - any error reading the host fails the check, with the cause
            return failed(f"error while checking: {type(exc).__name__}: {exc}")


def check(
    *, id: str, section: str, title: str, rationale: str, fix: str, scope: Scope = EVERY_HOST, reference: str = ""
) -> Callable[[Evaluate], Check]:
    """Make the decorated function the ``evaluate`` of a check record (the name then holds the record)."""

    def record(evaluate: Evaluate) -> Check:
        return Check(id, section, title, rationale, fix, evaluate, scope, reference)

    return record
