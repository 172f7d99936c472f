"""The compliance suite as `spectra comply` runs it (pytest, the plugin, the results file), on a fake host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compliance.checks import check_ids
from compliance.plugin import RESULTS_ENV
from compliance.results import complete

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# Loaded with -p before the suite runs: the plugin's probe for testinfra's "local" host is a fake node, so
# nothing is read from this machine.
FAKE_HOSTS = """
    from compliance import plugin
    from compliance.context import HostContext
    from compliance.probe import Probe
    from tests.unit.compliance_fakes import converged_control_plane, file

    node = converged_control_plane()
    if {broken!r}:
        node.files["/etc/shadow"] = file("644", group="shadow")
    plugin._probes["local"] = Probe(node, HostContext("local", ["control_plane", "etcd"]))
"""


def _suite(tmp_path: Path, broken: bool) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]]]:
    (tmp_path / "spectra_fake_hosts.py").write_text(textwrap.dedent(FAKE_HOSTS.format(broken=broken)))
    results = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]), **{RESULTS_ENV: str(results)})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "compliance.plugin", "-p", "spectra_fake_hosts",
         "-p", "no:cacheprovider", "-o", "addopts=", "-q", "compliance/suite", "--hosts=local://"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done, json.loads(results.read_text()) if results.exists() else []


def test_every_check_reports_its_outcome_to_the_results_file(tmp_path: Path) -> None:
    done, raw = _suite(tmp_path, broken=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{len(check_ids())} passed" in done.stdout
    results = complete(raw, ["local"], check_ids())
    assert [result.check for result in results] == check_ids()
    assert {result.status for result in results} == {"pass"}


def test_a_failing_check_fails_its_test_with_the_reason(tmp_path: Path) -> None:
    done, raw = _suite(tmp_path, broken=True)
    assert done.returncode == 1
    assert "SPX-OS-021: /etc/shadow is 0644 (want 0640 or stricter)" in done.stdout
    failed = [item for item in raw if item["status"] == "fail"]
    assert failed == [
        {
            "host": "local",
            "check": "SPX-OS-021",
            "status": "fail",
            "reason": "/etc/shadow is 0644 (want 0640 or stricter)",
        }
    ]
