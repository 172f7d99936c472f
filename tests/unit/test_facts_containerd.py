import pytest

from facts.containerd import Containerd
from tests.unit.facts_util import command_text

pytestmark = pytest.mark.unit


def test_installed_with_config() -> None:
    lines = [
        "V containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1",
        "S " + "b" * 64,
        "C version = 2",
    ]
    assert Containerd().process(lines) == {
        "version": "1.6.20",
        "config_sha256": "b" * 64,
        "config_version": 2,
    }


def test_not_installed_no_config() -> None:
    assert Containerd().process([]) == {"version": None, "config_sha256": None, "config_version": None}


def test_config_without_version_line() -> None:
    assert Containerd().process(["S " + "c" * 64])["config_version"] is None


def test_command_quotes_config_path() -> None:
    assert command_text(Containerd(), config="/etc/my config.toml").endswith("sh '/etc/my config.toml'")
