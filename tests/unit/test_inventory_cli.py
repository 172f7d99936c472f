"""The `spectra` command, run as a real process against pyinfra's @fake connector hosts.

pyinfra 3.10 exits 0 for a missing inventory, a --limit matching nothing, a failed host under
--no-wait and Ctrl+C; spectra must not. The scenarios start together (module fixture) to keep the
run short; each test then reads its own result.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from inventories.grouping import HostRecord
from spectra_cli.pyinfra_shim import decide_exit
from spectra_cli.rollout import RolloutError, plan, rollout
from spectra_cli.runner import PyinfraRun, RunOutcome
from spectra_cli.validation import ValidationResult

pytestmark = pytest.mark.unit

SPECTRA = str(Path(sys.executable).parent / "spectra")

INVENTORY = """
    from inventories.grouping import HostRecord, build_groups, file_group

    def _host(name, zone, roles, fail=False, delay=0.0):
        data = {"fake_delay": delay, "fake_delay_jitter": 0.0}
        if fail:
            data["fake_responses"] = {"spectra-probe": {"success": False, "stderr": "probe failed"}}
        return HostRecord(f"@fake/{name}", data, roles=roles, zone=zone)

    globals().update(build_groups(HOSTS, inventory_group=file_group(__file__)))
"""

HOSTS = {
    "inv.py": """[
        _host("n1", "lab-a", ("control_plane", "etcd")),
        _host("n2", "lab-b", ("workers",), fail=True),
        _host("n3", "lab-c", ("workers",)),
        _host("n4", "lab-a", ("workers",)),
    ]""",
    "slow.py": """[_host("slow", "lab-a", ("control_plane", "etcd"), delay=4.0)]""",
}

DEPLOY = """
    from pyinfra.operations import server

    server.shell(name="probe", commands=["spectra-probe"])
"""

SCENARIOS = {
    "missing": ["validate", "missing.py"],
    "limit_nothing": ["deploy", "inv.py", "deploy.py", "--limit", "az_lab_x"],
    "no_wait": ["deploy", "inv.py", "deploy.py", "--no-wait"],
    "rollout": ["rollout", "inv.py", "deploy.py", "--by-zone"],
    "rollout_zones": ["rollout", "inv.py", "deploy.py", "--by-zone", "--zones", "lab-c", "--limit", "*n3"],
    "own_option": ["deploy", "inv.py", "deploy.py", "--", "--limit", "n1"],
    "lab_down": ["validate", str(Path(__file__).resolve().parents[2] / "inventories" / "lab.py")],
    "bad_data": ["validate", "bad/inv.py"],
}


@dataclass
class Finished:
    code: int
    output: str


def _project(root: Path) -> None:
    for name, hosts in HOSTS.items():
        (root / name).write_text(textwrap.dedent(INVENTORY).replace("HOSTS", hosts))
    (root / "deploy.py").write_text(textwrap.dedent(DEPLOY))
    (root / "group_data").mkdir()
    (root / "group_data" / "all.py").write_text("etcd_topology = 'stacked'\n")
    # a project whose group_data has mistakes (own directory: group_data is per working directory)
    (root / "bad" / "group_data").mkdir(parents=True)
    (root / "bad" / "inv.py").write_text((root / "inv.py").read_text())
    (root / "bad" / "group_data" / "worker.py").write_text("ssh_port = 22\n")
    (root / "bad" / "group_data" / "all.py").write_text("ssh_conect_retries = 2\n_sudo = 'yes'\n")


def _env(root: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPECTRA_")}
    # Inventory, connector and pyinfra keys only: not the components being written elsewhere.
    env["SPECTRA_COMPONENTS"] = ""
    env["SPECTRA_LAB_DIR"] = str(root / "no-lab")
    env["PYINFRA_PROGRESS"] = "off"
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spectra")
    _project(root)
    return root


@pytest.fixture(scope="module")
def runs(project: Path) -> dict[str, Finished]:
    processes = {
        name: subprocess.Popen(
            [SPECTRA, *args],
            cwd=project,
            env=_env(project),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in SCENARIOS.items()
    }
    finished = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=120)
        finished[name] = Finished(process.returncode, output)
    return finished


def test_missing_inventory_is_an_error(runs: dict[str, Finished]) -> None:
    run = runs["missing"]
    assert run.code == 2
    assert "error: missing.py: inventory file does not exist (pyinfra would run on zero hosts)" in run.output


def test_limit_matching_nothing_runs_nothing(runs: dict[str, Finished]) -> None:
    run = runs["limit_nothing"]
    assert run.code == 2
    assert "error: --limit: 'az_lab_x' matches no host or group" in run.output
    assert "spectra: pyinfra" not in run.output


def test_lab_not_up(runs: dict[str, Finished]) -> None:
    run = runs["lab_down"]
    assert run.code == 2
    assert "lab is not up: run `python -m lab up`" in run.output


def test_failed_host_with_no_wait_fails_the_run(runs: dict[str, Finished]) -> None:
    run = runs["no_wait"]
    assert run.code == 1, run.output
    assert "spectra: pyinfra exited 0 but these hosts failed: @fake/n2" in run.output


def test_rollout_stops_at_the_first_failing_zone(runs: dict[str, Finished]) -> None:
    run = runs["rollout"]
    assert run.code == 1, run.output
    assert run.output.count("spectra: pyinfra -y") == 2
    assert "spectra: pyinfra -y --limit az_lab_a inv.py deploy.py" in run.output
    assert "spectra: pyinfra -y --limit az_lab_b inv.py deploy.py" in run.output
    lines = [line.split() for line in run.output.splitlines()[-3:]]
    assert lines == [["az_lab_a", "ok"], ["az_lab_b", "failed", "(exit", "1)"], ["az_lab_c", "not", "started"]]


def test_rollout_of_chosen_zones_succeeds(runs: dict[str, Finished]) -> None:
    run = runs["rollout_zones"]
    assert run.code == 0, run.output
    assert "==> zone az_lab_c (1/1): @fake/n3" in run.output
    assert "spectra: pyinfra -y --limit @fake/n3 inv.py deploy.py" in run.output  # zone AND --limit
    assert run.output.splitlines()[-1].split() == ["az_lab_c", "ok"]


def test_limit_goes_through_spectra(runs: dict[str, Finished]) -> None:
    run = runs["own_option"]
    assert run.code == 2
    assert "pass --limit to spectra before `--`" in run.output


def test_group_data_mistakes_name_file_and_key(runs: dict[str, Finished]) -> None:
    run = runs["bad_data"]
    assert run.code == 2
    assert "error: bad/group_data/all.py: ssh_conect_retries: unknown key (did you mean 'ssh_connect_retries'?)" in (
        run.output
    )
    assert "error: bad/group_data/all.py: _sudo: expected bool, got str 'yes'" in run.output
    assert "error: bad/group_data/worker.py: no group 'worker' in this inventory (did you mean 'workers'?)" in (
        run.output
    )
    assert "spectra: bad/inv.py: 3 error(s), nothing was run" in run.output


def test_ctrl_c_is_not_success(project: Path) -> None:
    process = subprocess.Popen(
        [SPECTRA, "deploy", "slow.py", "deploy.py"],
        cwd=project,
        env=_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal would have
    )
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    for line in process.stdout:
        lines.append(line)
        if "Beginning operation run" in line or time.monotonic() > deadline:
            break
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl+C does
    rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest
    assert process.returncode == 130, output
    assert "spectra: deploy failed (exit 130): interrupted" in output


# The pieces, without processes


def test_decide_exit() -> None:
    base = {"interrupted": False, "pyinfra_exit_code": 0, "state": True, "activated_hosts": ["a"]}
    assert decide_exit({**base, "failed_hosts": [], "hosts_with_errors": []}, True) == (0, None)
    assert decide_exit({**base, "failed_hosts": [], "hosts_with_errors": ["a"]}, True)[0] == 1
    assert decide_exit({**base, "interrupted": True, "failed_hosts": [], "hosts_with_errors": []}, True)[0] == 130
    empty = {**base, "activated_hosts": [], "failed_hosts": [], "hosts_with_errors": []}
    assert decide_exit(empty, True) == (1, "pyinfra ran on zero hosts")


class _FakeInventory:
    def __init__(self, zones: dict[str, list[str]]) -> None:
        self.groups = {zone: [HostRecord(name) for name in names] for zone, names in zones.items()}


def _validation(zones: dict[str, list[str]], selected: list[str]) -> ValidationResult:
    result = ValidationResult("inv.py")
    result.inventory = _FakeInventory(zones)
    result.selected = selected
    return result


def test_plan_and_rollout_logic() -> None:
    validation = _validation({"az_b": ["h2"], "az_a": ["h1", "h3"]}, ["h1", "h2", "h3", "h4"])
    with pytest.raises(RolloutError, match="hosts without a zone would not be converged: h4"):
        plan(validation)
    steps = plan(validation, skip_unzoned=True)
    assert [(step.zone, step.limit) for step in steps] == [("az_a", ["az_a"]), ("az_b", ["az_b"])]
    steps = plan(validation, zones=["b", "az_a"], user_limit=["h*"], skip_unzoned=True)
    assert [(step.zone, step.limit) for step in steps] == [("az_b", ["h2"]), ("az_a", ["h1", "h3"])]
    with pytest.raises(RolloutError, match="--zones names zones with no selected hosts: c"):
        plan(validation, zones=["c"], skip_unzoned=True)

    calls: list[list[str]] = []

    def runner(run: PyinfraRun) -> RunOutcome:
        calls.append(list(run.limit))
        return RunOutcome(1 if run.limit == ["az_a"] else 0)

    base = PyinfraRun("inv.py", ["deploy.py"], exclude=["h9"])
    report = rollout(plan(validation, skip_unzoned=True), base, runner, log=lambda line: None)
    assert calls == [["az_a"]]
    assert [(r.zone, r.status) for r in report.results] == [("az_a", "failed"), ("az_b", "not started")]
    assert report.exit_code == 1
