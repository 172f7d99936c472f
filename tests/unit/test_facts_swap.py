import pytest

from facts.swap import Swap

pytestmark = pytest.mark.unit


def test_process() -> None:
    lines = [
        "A /swapfile                               file\t\t1048572\t0\t-2",
        "A /dev/sda2 partition 2097148 0 -3",
        "F /swapfile none swap sw 0 0",
    ]
    assert Swap().process(lines) == {
        "active": ["/swapfile", "/dev/sda2"],
        "fstab": ["/swapfile none swap sw 0 0"],
    }


def test_no_swap() -> None:
    assert Swap().process([]) == {"active": [], "fstab": []}
    assert Swap.default() == {"active": [], "fstab": []}


def test_command_skips_comments() -> None:
    assert "$1 !~ /^#/" in Swap().command()
