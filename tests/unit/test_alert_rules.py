"""The Prometheus alerting rules the platform ships: valid for promtool, unit-tested with promtool's own
test runner (tests/promtool/alerts_test.yaml), and the names and annotations operators rely on pinned."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml


def promtool_binary() -> Path:
    """promtool from ``SPECTRA_PROMTOOL``, else the lab's build (made on first use)."""
    override = os.environ.get("SPECTRA_PROMTOOL")
    if override:
        return Path(override)
    try:
        import lab.images.prometheus as prometheus_image
    except ImportError as error:
        # a missing promtool must not pass as a skip: these tests are the rules' only check
        pytest.fail(
            f"no promtool: lab.images.prometheus cannot be imported ({error}); "
            "set SPECTRA_PROMTOOL to a promtool binary or add lab/images/prometheus.py"
        )
    return Path(prometheus_image.promtool_path())


pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "templates/addons/prometheus/rules/alerts.yaml"
PROMTOOL_TESTS = ROOT / "tests/promtool/alerts_test.yaml"

ALERTS = {
    "NodeDown",
    "TargetDown",
    "KubeletDown",
    "NodeFilesystemAlmostFull",
    "NodeFilesystemFillingUp",
    "NodeMemoryPressure",
    "CertificateExpiringSoon",
    "CertificateExpired",
    "GatewayCertificateExpiring",
    "EtcdNoLeader",
    "EtcdMemberDown",
    "EtcdInsufficientMembers",
    "ApiserverErrorRate",
    "CoreDNSFailures",
    "PodCrashLooping",
    "PersistentVolumeFilling",
    "Watchdog",
}
ALWAYS_FIRING = {"Watchdog"}  # has no state in which it must be silent


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = promtool_binary()
    assert binary.is_file(), f"promtool not found at {binary}"
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=300, check=False)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for rule in rules():
        assert "alert" in rule, f"not an alerting rule: {rule}"
        assert rule["alert"] not in found, f"{rule['alert']} defined twice"
        found[rule["alert"]] = rule
    return found


def test_promtool_check_rules_accepts_the_file() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    # run from the repository root: promtool resolves rule_files against the test file's directory
    result = promtool("test", "rules", PROMTOOL_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_named_labelled_and_annotated() -> None:
    found = alerts()
    assert set(found) == ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "none"), name
        for annotation in ("summary", "description", "runbook"):
            assert str(rule["annotations"].get(annotation, "")).strip(), f"{name}: no {annotation}"
    assert found["Watchdog"]["labels"]["severity"] == "none"
    # a lab test measures how fast a powered-off node is reported
    assert found["NodeDown"]["for"] == "1m"


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == ALERTS
    assert silent == ALERTS - ALWAYS_FIRING


def test_promtool_tests_fail_when_an_expectation_is_wrong(tmp_path: Path) -> None:
    document = yaml.safe_load(PROMTOOL_TESTS.read_text())
    # the copies live elsewhere: point them at the rules by absolute path
    document["rule_files"] = [str(RULES)]
    intact = tmp_path / "intact_test.yaml"
    intact.write_text(yaml.safe_dump(document, sort_keys=False))

    node_down = next(
        check
        for case in document["tests"]
        for check in case["alert_rule_test"]
        if check["alertname"] == "NodeDown" and check["exp_alerts"]
    )
    node_down["exp_alerts"][0]["exp_labels"]["severity"] = "warning"
    broken = tmp_path / "broken_test.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))

    # the intact copy passing shows the broken one fails on the label, not on the rewritten paths
    result = promtool("test", "rules", intact)
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("test", "rules", broken)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "NodeDown" in result.stdout + result.stderr
