import pytest

from facts.sysctl import SysctlValues, normalise_value
from tests.unit.facts_util import command_text, run_locally

pytestmark = pytest.mark.unit


def test_process() -> None:
    lines = ["net.ipv4.ip_forward\t+1", "net.ipv4.ip_local_port_range\t+32768\t60999", "net.bridge.x\t-"]
    assert SysctlValues().process(lines) == {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.ip_local_port_range": "32768 60999",
        "net.bridge.x": None,
    }


def test_process_empty() -> None:
    assert SysctlValues().process([]) == {}


def test_normalise_value() -> None:
    assert normalise_value(1) == "1"
    assert normalise_value([32768, 60999]) == "32768 60999"
    assert normalise_value(" 4096\t87380  6291456 ") == "4096 87380 6291456"


def test_command_quotes_keys() -> None:
    assert command_text(SysctlValues(), keys=["a.b", "c d"]).endswith("sh a.b /proc/sys/a/b 'c d' '/proc/sys/c d'")


def test_missing_key_locally() -> None:
    assert run_locally(SysctlValues(), keys=["no.such.key_xyz"]) == {"no.such.key_xyz": None}


def test_several_keys_without_a_process_per_key_locally() -> None:
    keys = ["net.ipv4.ip_local_port_range", "kernel.ostype", "no.such.key_xyz", "net.ipv4"]
    values = run_locally(SysctlValues(), keys=keys)
    assert values["kernel.ostype"] == "Linux"
    assert len((values["net.ipv4.ip_local_port_range"] or "").split()) == 2  # tab-separated pair, squeezed
    assert values["no.such.key_xyz"] is None
    assert values["net.ipv4"] is None  # a directory is not a key
    assert "awk" not in command_text(SysctlValues(), keys=keys) and " tr " not in command_text(
        SysctlValues(), keys=keys
    )
