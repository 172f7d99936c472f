"""Results of a compliance run: one per host and check, waivers applied, then the reports made from them."""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from compliance.checks import BY_ID
from compliance.model import STATUSES, Status
from compliance.waivers import Waiver, expired_waivers, find_waiver


@dataclass(frozen=True)
class CheckResult:
    host: str
    check: str
    status: Status
    reason: str = ""
    waiver: str | None = None  # "waived until ... : reason" or "expired on ..."


@dataclass
class ResultSet:
    inventory: str
    hosts: dict[str, list[str]]  # host -> its groups, in report order
    results: list[CheckResult]
    waiver_problems: list[str] = field(default_factory=list)  # expired waivers: each fails the run
    generated_at: str = ""
    # hosts ssh could not reach or log in to -> the cause: one error each (no check results), fails the run
    connection_errors: dict[str, str] = field(default_factory=dict)

    def counts(self, host: str | None = None) -> dict[str, int]:
        counted = Counter(r.status for r in self.results if host is None or r.host == host)
        return {status: counted.get(status, 0) for status in STATUSES}

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.waiver_problems and not self.connection_errors

    def get(self, host: str, check: str) -> CheckResult | None:
        for result in self.results:
            if result.host == host and result.check == check:
                return result
        return None


def complete(raw: Iterable[Mapping[str, Any]], hosts: Sequence[str], check_ids: Sequence[str]) -> list[CheckResult]:
    """Results for every host and check, in registry order; a check that reported nothing failed."""
    found = {(item["host"], item["check"]): item for item in raw}
    results = []
    for host in hosts:
        for check_id in check_ids:
            item = found.get((host, check_id))
            if item is None:
                reason = "no result: the check did not run (see pytest.log)"
                results.append(CheckResult(host, check_id, "fail", reason))
            else:
                results.append(CheckResult(host, check_id, item["status"], item.get("reason", "")))
    return results


def apply_waivers(
    results: Iterable[CheckResult], waivers: Sequence[Waiver], host_groups: Mapping[str, Sequence[str]],
    today: datetime.date,
) -> tuple[list[CheckResult], list[str]]:  # fmt: skip
    """Failures covered by an active waiver become ``waived``; expired waivers are problems of the run."""
    applied = []
    for result in results:
        active, expired = find_waiver(waivers, result.check, result.host, host_groups.get(result.host, []), today)
        if result.status == "fail" and active is not None:
            note = f"waived for {active.target} until {active.expires.isoformat()}: {active.reason}"
            applied.append(replace(result, status="waived", waiver=note))
        elif expired is not None:
            applied.append(replace(result, waiver=f"waiver for {expired.target} expired on {expired.expires}"))
        else:
            applied.append(result)
    problems = [
        f"{waiver.describe()} has expired: renew it after review or remove it ({waiver.reason})"
        for waiver in expired_waivers(waivers, today)
    ]
    return applied, problems


def check_info(check_id: str) -> dict[str, str]:
    check = BY_ID[check_id]
    return {
        "id": check.id, "section": check.section, "title": check.title, "rationale": check.rationale,
        "fix": check.fix, "reference": check.reference,
    }  # fmt: skip


def to_json(result_set: ResultSet) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    for host, groups in result_set.hosts.items():
        if host in result_set.connection_errors:
            hosts[host] = {"groups": groups, "status": "error", "error": result_set.connection_errors[host],
                           "summary": result_set.counts(host), "checks": {}}  # fmt: skip
            continue
        checks = {}
        for result in result_set.results:
            if result.host == host:
                entry: dict[str, Any] = {"status": result.status, "reason": result.reason}
                if result.waiver:
                    entry["waiver"] = result.waiver
                checks[result.check] = entry
        status = "fail" if any(r.host == host and r.status == "fail" for r in result_set.results) else "pass"
        hosts[host] = {"groups": groups, "status": status, "summary": result_set.counts(host), "checks": checks}
    used = list(dict.fromkeys(result.check for result in result_set.results))
    return {
        "inventory": result_set.inventory,
        "generated_at": result_set.generated_at,
        "ok": result_set.ok,
        "summary": result_set.counts(),
        "connection_errors": len(result_set.connection_errors),
        "waiver_problems": result_set.waiver_problems,
        "hosts": hosts,
        "checks": {check_id: check_info(check_id) for check_id in used},
    }
