"""Operator faults (issue 13): apt/dpkg calls wait for the package locks with a bound; ``spectra comply`` reports a
host it cannot reach as one connection error with its cause."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import stat
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import DeployError, OperationValueError

from compliance.checks import check_ids
from compliance.report import to_html, to_junit
from compliance.results import ResultSet, complete, to_json
from deploys.components import os_prerequisites
from deploys.operations import managed
from spectra_cli import comply
from tests.unit.pyinfra_harness import run_component, run_op

pytestmark = pytest.mark.unit


def apt(bound: int, *arguments: str) -> str:
    return shlex.join(["sh", "-c", managed._APT_LOCK_SCRIPT, "spectra-apt", str(bound), *arguments])


# --- package locks: the commands ------------------------------------------------------------------------------


def test_missing_package_waits_for_the_locks_with_the_configured_bound() -> None:
    result = run_op(managed.apt_packages, ["jq"], current={}, facts={}, data={"apt_lock_timeout": 20})
    assert result.commands == [
        "function say_if_apt_locked", apt(20, "update"), apt(20, "install", "--no-install-recommends", "jq"),
    ]  # fmt: skip


def test_installed_packages_cost_nothing_whatever_the_bound() -> None:
    result = run_op(managed.apt_packages, ["jq"], current={"jq": ["1.6"]}, facts={}, data={"apt_lock_timeout": 20})
    assert result.commands == [] and result.fact_reads == []


def test_the_wrapper_names_every_apt_and_dpkg_lock() -> None:
    for lock in managed.APT_LOCKS:
        assert lock in managed._APT_LOCK_SCRIPT
    assert '-o "DPkg::Lock::Timeout=$left" "$@"' in managed._APT_LOCK_SCRIPT


@pytest.mark.parametrize("value", [-1, 3601, "300", 2.5, True, None])
def test_bad_lock_timeouts_are_refused_before_anything_runs(value: Any) -> None:
    assert os_prerequisites.check({**os_prerequisites.DEFAULTS, "apt_lock_timeout": value}) == [
        f"apt_lock_timeout={value!r}: a whole number of seconds from 0 to 3600"
    ]
    with pytest.raises(DeployError, match="apt_lock_timeout"):
        run_component(os_prerequisites.COMPONENT, data={"apt_lock_timeout": value})
    with pytest.raises(OperationValueError, match="apt_lock_timeout"):
        managed.apt_command("update", timeout=value)


@pytest.mark.parametrize("value", [0, 300, 3600])
def test_good_lock_timeouts_pass(value: int) -> None:
    assert os_prerequisites.check({**os_prerequisites.DEFAULTS, "apt_lock_timeout": value}) == []


# --- package locks: the wrapper run here, on a lock file of the test's own ------------------------------------


@pytest.fixture
def wrapper(tmp_path: Path) -> tuple[list[str], Path, dict[str, str]]:
    """The wrapper with its lock list replaced by one temporary file, and an apt-get that prints its arguments."""
    lock = tmp_path / "lock-frontend"
    lock.write_text("")
    script = managed._APT_LOCK_SCRIPT.replace(" ".join(managed.APT_LOCKS), str(lock))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text('#!/bin/sh\necho "apt-get $DEBIAN_FRONTEND $*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return ["sh", "-c", script, "spectra-apt"], lock, env


def _hold(lock: Path, seconds: float) -> None:
    """An fcntl lock on ``lock`` (the kind apt and dpkg take) held by this process, released after ``seconds``."""
    fd = os.open(lock, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    timer = threading.Timer(seconds, os.close, (fd,))
    timer.daemon = True
    timer.start()


def test_free_lock_runs_apt_at_once_with_the_rest_of_the_bound(wrapper: Any) -> None:
    command, _lock, env = wrapper
    done = subprocess.run([*command, "30", "install", "jq"], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("apt-get noninteractive -q -y -o Acquire::Retries=3 ")
    assert done.stdout.split(" -o DPkg::Lock::Timeout=")[1] in ("30 install jq\n", "29 install jq\n")


def test_held_lock_is_waited_for_and_said_then_apt_runs(wrapper: Any) -> None:
    command, lock, env = wrapper
    _hold(lock, 1.5)
    started = time.monotonic()
    done = subprocess.run([*command, "30", "update"], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1.4
    assert done.stderr.startswith(f"spectra: waiting for {lock}, held by process {os.getpid()} (")
    assert "s left of apt_lock_timeout=30)" in done.stderr
    assert done.stdout.endswith(" update\n")


def test_lock_held_past_the_bound_fails_naming_the_lock_and_its_holder(wrapper: Any) -> None:
    command, lock, env = wrapper
    _hold(lock, 5)
    started = time.monotonic()
    done = subprocess.run([*command, "1", "install", "jq"], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 75 and done.stdout == ""
    assert time.monotonic() - started < 4
    assert done.stderr.splitlines()[-1].startswith(f"spectra: {lock} is still held by process {os.getpid()} (")
    assert done.stderr.splitlines()[-1].endswith(") after 1 s (apt_lock_timeout): giving up")


# --- unreachable hosts in spectra comply ----------------------------------------------------------------------

CHANGED_KEY = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
Host key verification failed.
"""
CHANGED_KEY_WORDS = (
    "Host key for 10.0.0.9 has changed and you have requested strict checking.\nHost key verification failed.\n"
)


@pytest.mark.parametrize(
    ("stderr", "cause"),
    [
        (CHANGED_KEY, "host key changed (known_hosts has another key for this host)"),
        (CHANGED_KEY_WORDS, "host key changed (known_hosts has another key for this host)"),
        ("Host key verification failed.\n", "host key not verified (unknown, or changed)"),
        ("No ED25519 host key is known for 10.0.0.9 and you have requested strict checking.\n"
         "Host key verification failed.\n", "host key unknown (not in known_hosts)"),
        ("ssh: connect to host 198.18.50.13 port 22: Connection timed out\n",
         "timed out after 7 s (no answer, packets dropped or host down)"),
        ("root@198.18.50.13: Permission denied (publickey).\n", "authentication failed"),
        ("ssh: connect to host 198.18.50.13 port 22: Connection refused\n",
         "connection refused (nothing listens on the ssh port)"),
        ("ssh: Could not resolve hostname nowhere: Name or service not known\n", "host name does not resolve"),
        ("", "cannot connect"),
    ],
)  # fmt: skip
def test_connection_causes(stderr: str, cause: str) -> None:
    found = comply.connection_cause(stderr, 7)
    assert found.split(": ", 1)[0] == cause
    last = [line for line in stderr.splitlines() if not line.startswith("@")][-2:]
    assert found.endswith(" ".join(last) or "ssh exited 255 and printed nothing")


def test_preflight_login_is_bounded_and_leaves_a_master_for_the_suite() -> None:
    assert comply.preflight_command("node3", Path("/tmp/x/ssh_config"), 7) == [
        "ssh", "-F", "/tmp/x/ssh_config", "-o", "ConnectTimeout=7", "-o", "ConnectionAttempts=1",
        "-o", "ControlMaster=auto", "-o", "ControlPersist=120s", "node3", "true",
    ]  # fmt: skip


def test_connection_errors_only_for_hosts_ssh_could_not_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"good": (0, ""), "bad": (255, "ssh: connect to host 10.0.0.9 port 22: Connection timed out"),
               "fails-true": (1, "")}  # fmt: skip

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        code, stderr = answers[command[-2]]
        return subprocess.CompletedProcess(command, code, "", stderr)

    monkeypatch.setattr(comply.subprocess, "run", fake_run)
    targets = [comply.comply_hosts.ComplyHost(name=name, hostname=name) for name in answers]
    assert comply.connection_errors(targets, Path("cfg"), 5) == {
        "bad": "timed out after 5 s (no answer, packets dropped or host down): "
        "ssh: connect to host 10.0.0.9 port 22: Connection timed out"
    }


CAUSE = "timed out after 10 s (no answer, packets dropped or host down): ssh: connect ... timed out"


def _with_unreachable() -> ResultSet:
    ids = check_ids()
    raw = [{"host": "good", "check": check_id, "status": "pass", "reason": ""} for check_id in ids]
    return ResultSet("inventories/lab.py", {"good": ["lab"], "bad": ["lab"]}, complete(raw, ["good"], ids),
                     connection_errors={"bad": CAUSE}, generated_at="2026-12-02T20:00:00+00:00")  # fmt: skip


def test_unreachable_host_is_one_error_in_json() -> None:
    data = to_json(_with_unreachable())
    assert data["ok"] is False and data["connection_errors"] == 1
    assert data["hosts"]["bad"] == {
        "groups": ["lab"], "status": "error", "error": CAUSE,
        "summary": {"pass": 0, "fail": 0, "waived": 0, "not_applicable": 0}, "checks": {},
    }  # fmt: skip
    assert data["hosts"]["good"]["status"] == "pass"
    assert data["summary"]["fail"] == 0 and data["summary"]["pass"] == len(check_ids())
    json.dumps(data)


def test_unreachable_host_is_one_junit_error_not_failures() -> None:
    root = ET.fromstring(to_junit(_with_unreachable()))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == (str(len(check_ids()) + 1), "0", "1")
    suites = {suite.get("name"): suite for suite in root}
    bad = suites["bad"]
    assert (bad.get("tests"), bad.get("errors"), bad.get("failures")) == ("1", "1", "0")
    cases = list(bad)
    assert len(cases) == 1 and cases[0].find("failure") is None
    error = cases[0].find("error")
    assert error is not None and error.get("type") == "connection"
    assert error.get("message") == f"cannot connect: {CAUSE}"
    assert len(list(suites["good"])) == len(check_ids()) and suites["good"].get("failures") == "0"


def test_unreachable_host_in_text_and_html(capsys: pytest.CaptureFixture[str]) -> None:
    result_set = _with_unreachable()
    comply.print_summary(result_set, {"html": Path("r/index.html"), "junit": Path("r/j.xml"), "json": Path("r/c.json")})
    assert capsys.readouterr().out.splitlines() == [
        f"good: {len(check_ids())} pass, 0 fail, 0 waived, 0 not applicable",
        "bad: connection error, not checked",
        f"ERROR bad: cannot connect: {CAUSE}",
        "reports: r/index.html r/j.xml r/c.json",
    ]
    page = to_html(result_set)
    assert "NOT COMPLIANT" in page and "1 host(s) not reached" in page
    assert "ERROR bad: not checked, cannot connect: timed out after 10 s" in page


def test_a_changed_host_key_is_told_in_ssh_s_last_words_without_the_banner() -> None:
    stderr = CHANGED_KEY.replace(
        "Host key verification failed.\n",
        "Offending ED25519 key in /k:2\nHost key for 10.0.0.9 has changed and you have requested strict checking.\n"
        "Host key verification failed.\n",
    )
    assert comply.connection_cause(stderr, 7) == (
        "host key changed (known_hosts has another key for this host): "
        "Host key for 10.0.0.9 has changed and you have requested strict checking. Host key verification failed."
    )


def test_the_probe_names_a_held_lock_and_says_nothing_when_free(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.write_text("")
    probe = managed._APT_LOCK_PROBE.replace(" ".join(managed.APT_LOCKS), str(lock))
    free = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, timeout=30)
    assert (free.returncode, free.stdout, free.stderr) == (0, "", "")
    _hold(lock, 2)
    held = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, timeout=30)
    assert held.returncode == 0 and held.stdout.startswith(f"{lock}, held by process {os.getpid()} (")


class _Output:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout


class _Host:
    print_prefix = "[node1] "

    def __init__(self, ok: bool, stdout: str) -> None:
        self.answer = (ok, _Output(stdout))
        self.commands: list[str] = []

    def run_shell_command(self, command: Any) -> tuple[bool, _Output]:
        self.commands.append(command.get_raw_value())
        return self.answer


@pytest.mark.parametrize(
    ("ok", "stdout", "logged"),
    [
        (True, "/var/lib/dpkg/lock-frontend, held by process 42 (unattended-upgr)\n",
         ["[node1] waiting up to 300 s (apt_lock_timeout) for /var/lib/dpkg/lock-frontend, held by process 42 "
          "(unattended-upgr)"]),
        (True, "", []),
        (False, "awk: not found", []),  # the notice never fails the operation: the wrapper does the waiting
    ],
)  # fmt: skip
def test_the_notice_logs_a_held_lock_in_pyinfra_s_output(
    ok: bool, stdout: str, logged: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    host = _Host(ok, stdout)
    with caplog.at_level("WARNING", logger="pyinfra"):
        assert managed.say_if_apt_locked(None, host, 300) is True
    assert host.commands == [shlex.join(["sh", "-c", managed._APT_LOCK_PROBE])]
    assert [record.getMessage() for record in caplog.records if record.name == "pyinfra"] == logged
