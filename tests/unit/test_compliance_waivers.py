"""Waivers: parsing, unknown ids/groups, expiry, and how they change results."""

from __future__ import annotations

import datetime
import textwrap

import pytest

from compliance.results import CheckResult, apply_waivers
from compliance.waivers import WaiverError, check_waivers, load_waivers, parse_waivers

pytestmark = pytest.mark.unit

TODAY = datetime.date(2026, 11, 25)
GROUPS = {"all", "workers", "az_lab_a", "lab"}
HOSTS = {"node1", "node2"}

GOOD = """
- check: SPX-SSH-008
  group: workers
  reason: "appliance needs 6 tries; SEC-123"
  expires: 2026-12-31
  approved_by: security
- check: SPX-OS-021
  host: node1
  reason: "SEC-124"
  expires: "2026-11-25"
"""


def test_the_repository_waivers_file_is_an_empty_reviewed_list() -> None:
    assert load_waivers("compliance/waivers.yaml") == []


def test_parse_good_waivers() -> None:
    waivers = parse_waivers(GOOD)
    assert [(w.check, w.group, w.host, w.expires) for w in waivers] == [
        ("SPX-SSH-008", "workers", None, datetime.date(2026, 12, 31)),
        ("SPX-OS-021", None, "node1", datetime.date(2026, 11, 25)),
    ]
    check_waivers(waivers, GROUPS, HOSTS)
    assert not waivers[1].expired(TODAY)  # valid through its expiry day
    assert waivers[1].expired(TODAY + datetime.timedelta(days=1))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{check: x}", "must be a list of waivers"),
        ("- check: SPX-OS-001\n  reason: r\n  expires: 2027-01-01", "give exactly one of group or host"),
        ("- check: SPX-OS-001\n  group: g\n  host: h\n  reason: r\n  expires: 2027-01-01", "exactly one of group"),
        ("- check: SPX-OS-001\n  group: workers\n  expires: 2027-01-01", "reason is required"),
        ("- check: SPX-OS-001\n  group: workers\n  reason: r", "expires (YYYY-MM-DD) is required"),
        ("- check: SPX-OS-001\n  group: workers\n  reason: r\n  expires: soon", "expires must be a date"),
        ("- check: SPX-OS-001\n  group: workers\n  reason: r\n  expires: 2027-01-01\n  to: x", "unknown key(s) to"),
        ("- [1]", "must be a mapping"),
        ("- check: [", "not valid YAML"),
    ],
)
def test_malformed_waivers_are_errors(text: str, message: str) -> None:
    with pytest.raises(WaiverError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_waivers(text)


def test_unknown_check_ids_groups_and_hosts_are_errors() -> None:
    waivers = parse_waivers(
        textwrap.dedent("""
        - {check: SPX-SSH-999, group: workers, reason: r, expires: 2027-01-01}
        - {check: SPX-SSH-004, group: worker, reason: r, expires: 2027-01-01}
        - {check: 4.1.1, host: node9, reason: r, expires: 2027-01-01}
    """)
    )
    with pytest.raises(WaiverError) as caught:
        check_waivers(waivers, GROUPS, HOSTS)
    assert str(caught.value).splitlines() == [
        "waiver #1 (SPX-SSH-999 for group workers, expires 2027-01-01): unknown check id 'SPX-SSH-999'",
        "waiver #2 (SPX-SSH-004 for group worker, expires 2027-01-01): unknown group 'worker' (not in the inventory)",
        "waiver #3 (4.1.1 for host node9, expires 2027-01-01): unknown host 'node9' (not in the inventory)",
    ]


def test_active_waiver_turns_a_failure_into_waived_and_leaves_passes_alone() -> None:
    waivers = parse_waivers(GOOD)
    results = [
        CheckResult("node2", "SPX-SSH-008", "fail", "maxauthtries 6 (want 4 or less)"),
        CheckResult("node1", "SPX-SSH-008", "fail", "maxauthtries 6 (want 4 or less)"),
        CheckResult("node1", "SPX-OS-021", "pass", "/etc/shadow 0640"),
    ]
    groups = {"node1": ["all", "lab"], "node2": ["all", "workers"]}
    applied, problems = apply_waivers(results, waivers, groups, TODAY)
    assert problems == []
    assert [r.status for r in applied] == ["waived", "fail", "pass"]
    assert applied[0].waiver == "waived for group workers until 2026-12-31: appliance needs 6 tries; SEC-123"
    assert applied[0].reason == "maxauthtries 6 (want 4 or less)"


def test_an_expired_waiver_waives_nothing_and_is_a_problem_of_the_run() -> None:
    waivers = parse_waivers(GOOD)
    later = datetime.date(2027, 1, 1)
    results = [CheckResult("node2", "SPX-SSH-008", "fail", "maxauthtries 6")]
    applied, problems = apply_waivers(results, waivers, {"node2": ["workers"]}, later)
    assert applied[0].status == "fail"
    assert applied[0].waiver == "waiver for group workers expired on 2026-12-31"
    assert problems == [
        "waiver #1 (SPX-SSH-008 for group workers, expires 2026-12-31) has expired: renew it after review or "
        "remove it (appliance needs 6 tries; SEC-123)",
        "waiver #2 (SPX-OS-021 for host node1, expires 2026-11-25) has expired: renew it after review or "
        "remove it (SEC-124)",
    ]
