"""Batched-state operations: content/template/directory/service/sysctl/apt_packages."""

from __future__ import annotations

import hashlib
import shlex

import pytest

from deploys.operations import managed
from facts.files import FileStates
from facts.systemd import SystemdUnits
from tests.unit.pyinfra_harness import run_op

pytestmark = pytest.mark.unit


def _file(data: bytes, mode: str = "644", user: str = "root") -> dict:
    return {"type": "file", "mode": mode, "user": user, "group": "root", "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


def test_content_up_to_date_from_snapshot_costs_nothing() -> None:
    result = run_op(managed.content, "/etc/x", "hi\n", current={"/etc/x": _file(b"hi\n")}, facts={})
    assert result.commands == [] and result.fact_reads == []


def test_content_changed_uploads_next_to_dest_then_renames() -> None:
    result = run_op(managed.content, "/etc/a b/x", "new\n", mode="0600", current=_file(b"old\n"), facts={})
    # the one file primitive (deploys.operations.files): the directory exists already, so no mkdir
    assert result.commands == [
        "upload /etc/a b/.x.spectra-new sha256=" + hashlib.sha256(b"new\n").hexdigest(),
        "chown root:root '/etc/a b/.x.spectra-new' && chmod 600 '/etc/a b/.x.spectra-new'",
        "mv -f '/etc/a b/.x.spectra-new' '/etc/a b/x'",
    ]
    assert result.uploads == {"/etc/a b/.x.spectra-new": "new\n"}


def test_content_only_mode_differs() -> None:
    result = run_op(managed.content, "/etc/x", "hi\n", mode="0600", current=_file(b"hi\n"), facts={})
    assert result.commands == ["chmod 600 /etc/x"]


def test_content_reads_own_fact_without_snapshot() -> None:
    result = run_op(managed.content, "/etc/x", "hi\n", facts={FileStates: {"/etc/x": _file(b"hi\n")}})
    assert result.commands == [] and len(result.fact_reads) == 1


def test_directory_missing_and_present() -> None:
    created = run_op(managed.directory, "/var/lib/x", mode="0750", user="x", group="x", current=None, facts={})
    assert created.commands == ["mkdir -p /var/lib/x", "chown x:x /var/lib/x", "chmod 750 /var/lib/x"]
    state = {"type": "directory", "mode": "750", "user": "x", "group": "x", "size": 1, "sha256": None}
    same = run_op(managed.directory, "/var/lib/x", mode="0750", user="x", group="x", current=state, facts={})
    assert same.commands == []


def test_directory_refuses_a_file() -> None:
    with pytest.raises(ValueError, match="not a directory"):
        run_op(managed.directory, "/var/lib/x", current=_file(b""), facts={})


RUNNING = {"id": "c.service", "load": "loaded", "active": "active", "sub": "running", "enabled": "enabled"}


def test_service_running_enabled_is_noop() -> None:
    result = run_op(managed.service, "c", current={"c.service": RUNNING}, facts={})
    assert result.commands == [] and result.noops


def test_service_restarted_and_reloaded() -> None:
    result = run_op(managed.service, "c", restarted=True, daemon_reload=True, current=RUNNING, facts={})
    assert result.commands == ["systemctl daemon-reload", "systemctl restart c.service"]


def test_service_unknown_unit_started_and_enabled() -> None:
    result = run_op(managed.service, "c", facts={SystemdUnits: {"c.service": None}})
    assert result.commands == ["systemctl start c.service", "systemctl enable c.service"]


def test_service_stopped_disabled() -> None:
    result = run_op(managed.service, "c", running=False, enabled=False, current=RUNNING, facts={})
    assert result.commands == ["systemctl stop c.service", "systemctl disable c.service"]


def test_sysctl_only_differences_in_one_command() -> None:
    current = {"net.ipv4.ip_forward": "0", "net.bridge.bridge-nf-call-iptables": "1"}
    result = run_op(
        managed.sysctl,
        {"net.ipv4.ip_forward": 1, "net.bridge.bridge-nf-call-iptables": 1},
        current=current,
        facts={},
    )
    assert result.commands == ["sysctl -q -w net.ipv4.ip_forward=1"]


def test_sysctl_noop() -> None:
    result = run_op(managed.sysctl, {"vm.x": "1 2"}, current={"vm.x": "1 2"}, facts={})
    assert result.commands == []


NOTICE = "function say_if_apt_locked"  # says in pyinfra's output when a lock is held (at execute time)


def apt(bound: int, *arguments: str) -> str:
    """An apt call as the operations make it: the lock-waiting wrapper, its bound, apt-get's arguments."""
    return shlex.join(["sh", "-c", managed._APT_LOCK_SCRIPT, "spectra-apt", str(bound), *arguments])


def test_apt_packages_noop_and_missing() -> None:
    installed = {"containerd": ["1.6.20~ds1-1+b1"], "runc": ["1.1.5+ds1-1"]}
    noop = run_op(managed.apt_packages, ["containerd", "runc"], current=installed, facts={})
    assert noop.commands == [] and noop.fact_reads == []
    result = run_op(managed.apt_packages, ["containerd", "runc", "chrony"], facts={"deb.DebPackages": installed})
    assert result.commands == [
        NOTICE, apt(300, "update"), apt(300, "install", "--no-install-recommends", "chrony"),
    ]  # fmt: skip


def test_apt_packages_pinned_version() -> None:
    installed = {"containerd": ["1.6.20~ds1-1+b1"]}
    result = run_op(managed.apt_packages, ["containerd=1.6.24-1"], current=installed, facts={})
    assert result.commands == [
        NOTICE,
        apt(300, "update"),
        apt(300, "install", "--no-install-recommends", "containerd=1.6.24-1"),
    ]
