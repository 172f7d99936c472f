import pytest

from facts.systemd import SystemdUnits, is_enabled, is_running, unit_name
from tests.unit.facts_util import command_text

pytestmark = pytest.mark.unit

OUTPUT = [
    "U=containerd.service",
    "U=node_exporter.service",
    "U=chrony.service",
    "Id=containerd.service",
    "LoadState=loaded",
    "ActiveState=active",
    "SubState=running",
    "UnitFileState=enabled",
    "",
    "Id=node_exporter.service",
    "LoadState=not-found",
    "ActiveState=inactive",
    "SubState=dead",
    "UnitFileState=",
    "",
    "Id=chrony.service",
    "LoadState=loaded",
    "ActiveState=failed",
    "SubState=failed",
    "UnitFileState=disabled",
]


def test_process_many_units() -> None:
    units = SystemdUnits().process(OUTPUT)
    assert units["containerd.service"] == {
        "id": "containerd.service",
        "load": "loaded",
        "active": "active",
        "sub": "running",
        "enabled": "enabled",
    }
    assert units["node_exporter.service"] is None
    assert is_running(units["containerd.service"]) and is_enabled(units["containerd.service"])
    assert not is_running(units["chrony.service"]) and not is_enabled(units["chrony.service"])
    assert not is_running(None)


def test_alias_keyed_by_name_asked() -> None:
    units = SystemdUnits().process(
        [
            "U=sshd.service",
            "Id=ssh.service",
            "LoadState=loaded",
            "ActiveState=active",
            "SubState=running",
            "UnitFileState=alias",
        ]
    )
    assert units["sshd.service"] is not None and units["sshd.service"]["id"] == "ssh.service"


def test_process_empty_and_truncated() -> None:
    assert SystemdUnits().process([]) == {}
    assert SystemdUnits().process(["U=a.service"]) == {"a.service": None}


def test_command_one_systemctl_show() -> None:
    text = command_text(SystemdUnits(), units=["containerd", "chrony.service"])
    assert text.count("systemctl show") == 1
    assert "containerd.service chrony.service" in text


def test_requires_systemctl() -> None:
    assert SystemdUnits().requires_command(units=["x"]) == "systemctl"


def test_unit_name() -> None:
    assert unit_name("containerd") == "containerd.service"
    assert unit_name("fstrim.timer") == "fstrim.timer"
