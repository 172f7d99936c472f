"""Reports (JSON, JUnit XML, HTML) made from a result set."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from compliance.checks import check_ids
from compliance.report import to_html, to_junit, write_reports
from compliance.results import CheckResult, ResultSet, complete, to_json

pytestmark = pytest.mark.unit


def _result_set(problems: list[str] | None = None) -> ResultSet:
    raw = [
        {"host": "node1", "check": "SPX-OS-001", "status": "pass", "reason": "net.ipv4.ip_forward = 1"},
        {"host": "node1", "check": "SPX-SSH-004", "status": "fail", "reason": "passwordauthentication yes (want no)"},
        {"host": "node1", "check": "4.1.9", "status": "not_applicable", "reason": "absent: no kubelet <here>"},
        {"host": "node2", "check": "SPX-OS-001", "status": "pass", "reason": ""},
        {"host": "node2", "check": "4.1.9", "status": "not_applicable", "reason": "absent"},
    ]
    results = complete(raw, ["node1", "node2"], ["SPX-OS-001", "SPX-SSH-004", "4.1.9"])
    results[4] = CheckResult("node2", "SPX-SSH-004", "waived", "passwordauthentication yes", "waived until 2027-01-01")
    return ResultSet("inventories/lab.py", {"node1": ["lab"], "node2": ["lab", "workers"]}, results,
                     problems or [], "2026-11-25T12:00:00+00:00")  # fmt: skip


def test_missing_results_are_failures() -> None:
    results = complete([], ["node1"], check_ids()[:2])
    assert [(r.status, r.reason.split(":")[0]) for r in results] == [("fail", "no result"), ("fail", "no result")]


def test_json_per_host_and_check() -> None:
    data = to_json(_result_set())
    assert data["ok"] is False
    assert data["summary"] == {"pass": 2, "fail": 1, "waived": 1, "not_applicable": 2}
    assert data["hosts"]["node1"]["checks"]["SPX-SSH-004"] == {
        "status": "fail", "reason": "passwordauthentication yes (want no)"
    }  # fmt: skip
    assert data["hosts"]["node2"]["checks"]["SPX-SSH-004"]["waiver"] == "waived until 2027-01-01"
    assert data["hosts"]["node2"]["checks"]["4.1.9"]["status"] == "not_applicable"
    assert data["checks"]["4.1.9"]["reference"].startswith("CIS Kubernetes")
    assert data["checks"]["SPX-SSH-004"]["fix"]


def test_waived_and_not_applicable_alone_are_compliant_but_an_expired_waiver_is_not() -> None:
    results = [CheckResult("n", "SPX-OS-001", "waived", "x"), CheckResult("n", "4.1.1", "not_applicable", "y")]
    assert ResultSet("inv", {"n": []}, results).ok
    assert not ResultSet("inv", {"n": []}, results, ["waiver #1 ... has expired"]).ok


def test_junit_xml() -> None:
    root = ET.fromstring(to_junit(_result_set(["waiver #1 (SPX-SSH-004 ...) has expired"])))
    assert root.get("failures") == "2"
    suites = {suite.get("name"): suite for suite in root}
    assert list(suites) == ["node1", "node2", "waivers"]
    node1 = {str(case.get("name")).split()[0]: case for case in suites["node1"]}
    failure = node1["SPX-SSH-004"].find("failure")
    assert failure is not None and failure.get("message") == "passwordauthentication yes (want no)"
    assert "fix: " in (failure.text or "")
    skipped = node1["4.1.9"].find("skipped")
    assert skipped is not None and skipped.get("message", "").startswith("not applicable: ")
    node2 = {str(case.get("name")).split()[0]: case for case in suites["node2"]}
    assert node2["SPX-SSH-004"].find("skipped").get("message", "").startswith("waived: ")  # type: ignore[union-attr]
    assert suites["node1"].get("failures") == "1" and suites["node2"].get("skipped") == "2"


def test_html_is_self_contained_and_says_status_in_words() -> None:
    page = to_html(_result_set())
    assert "NOT COMPLIANT" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page and "<link" not in page
    for label in ("PASS", "FAIL", "WAIVED", "N/A"):
        assert f">{label}</td>" in page
    assert "absent: no kubelet &lt;here&gt;" in page  # escaped
    assert "COMPLIANT: no failing check" in to_html(
        ResultSet("inv", {"n": []}, [CheckResult("n", "SPX-OS-001", "pass", "")])
    )


def test_write_reports(tmp_path: Path) -> None:
    paths = write_reports(_result_set(), tmp_path / "out")
    assert sorted(path.name for path in paths.values()) == ["compliance.json", "index.html", "junit.xml"]
    assert json.loads(paths["json"].read_text())["inventory"] == "inventories/lab.py"
