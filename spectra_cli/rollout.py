"""Zone-by-zone rollouts: converge one ``az_*`` group at a time, stop at the first zone that fails."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from inventories.grouping import zone_group
from spectra_cli.runner import PyinfraRun, RunOutcome
from spectra_cli.validation import ValidationResult


class RolloutError(Exception):
    """The rollout cannot start (bad --zones, hosts without a zone)."""


@dataclass
class ZoneStep:
    zone: str  # the group, az_...
    hosts: list[str]
    limit: list[str]  # what is passed to pyinfra --limit


@dataclass
class ZoneResult:
    zone: str
    status: str  # ok | failed | not started
    exit_code: int | None = None
    reason: str | None = None


@dataclass
class RolloutReport:
    results: list[ZoneResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        for result in self.results:
            if result.status == "failed":
                return result.exit_code or 1
        return 0

    def lines(self) -> list[str]:
        out = []
        for result in self.results:
            detail = f" (exit {result.exit_code}{': ' + result.reason if result.reason else ''})"
            out.append(f"  {result.zone:<24} {result.status}{detail if result.status == 'failed' else ''}")
        return out


def plan(
    validation: ValidationResult,
    zones: Sequence[str] = (),
    user_limit: Sequence[str] = (),
    skip_unzoned: bool = False,
) -> list[ZoneStep]:
    """The zone steps in order: sorted zone groups, or the ``zones`` order (names or az_ groups).

    With a user ``--limit`` each step lists its hosts explicitly (zone AND limit); otherwise it limits
    to the zone group itself. Selected hosts outside every zone stop the plan unless ``skip_unzoned``.
    """
    available = validation.zones()
    if zones:
        order = [zone_group(zone) for zone in zones]
        unknown = [zone for zone, group in zip(zones, order, strict=True) if group not in available]
        if unknown:
            known = ", ".join(available) or "none"
            raise RolloutError(f"--zones names zones with no selected hosts: {', '.join(unknown)} (zones: {known})")
        if len(set(order)) != len(order):
            raise RolloutError("--zones lists a zone twice")
    else:
        order = list(available)
    if not order:
        raise RolloutError("no zone groups (az_*) among the selected hosts")

    zoned = {host for hosts in available.values() for host in hosts}
    unzoned = sorted(set(validation.selected) - zoned)
    if unzoned and not skip_unzoned:
        raise RolloutError(
            f"hosts without a zone would not be converged: {', '.join(unzoned)} "
            "(use --skip-unzoned, or deploy them with --limit)"
        )

    steps = []
    for group in order:
        hosts = available[group]
        limit = list(hosts) if user_limit else [group]
        steps.append(ZoneStep(group, hosts, limit))
    return steps


Runner = Callable[[PyinfraRun], RunOutcome]


def rollout(
    steps: Sequence[ZoneStep],
    base: PyinfraRun,
    runner: Runner,
    pause: float = 0.0,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> RolloutReport:
    """Run ``base`` once per zone step; stop at the first failing zone."""
    report = RolloutReport()
    for index, step in enumerate(steps):
        log(f"==> zone {step.zone} ({index + 1}/{len(steps)}): {', '.join(step.hosts)}")
        run = replace(base, limit=step.limit)
        outcome = runner(run)
        if outcome.exit_code != 0:
            report.results.append(ZoneResult(step.zone, "failed", outcome.exit_code, outcome.reason))
            report.results.extend(ZoneResult(later.zone, "not started") for later in steps[index + 1 :])
            log(f"==> zone {step.zone} failed: stopping the rollout")
            break
        report.results.append(ZoneResult(step.zone, "ok", 0))
        if pause and index + 1 < len(steps):
            log(f"==> pausing {pause:g}s before the next zone")
            time.sleep(pause)
    log("==> rollout summary:")
    for line in report.lines():
        log(line)
    return report
