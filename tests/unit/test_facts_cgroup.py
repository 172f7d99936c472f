import pytest

from facts.cgroup import CgroupVersion

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["root=cgroup2fs", "unified=", "memory="], "v2"),
        (["root=tmpfs", "unified=cgroup2fs", "memory=cgroupfs"], "hybrid"),
        (["root=tmpfs", "unified=", "memory=cgroupfs"], "v1"),
        (["root=", "unified=", "memory="], None),
        ([], None),
    ],
)
def test_versions(lines: list[str], expected: str | None) -> None:
    assert CgroupVersion().process(lines) == expected


def test_default_is_none() -> None:
    assert CgroupVersion.default() is None


def test_command_reads_root_and_unified() -> None:
    command = CgroupVersion().command()
    assert "stat -fc %T /sys/fs/cgroup" in command
    assert "/sys/fs/cgroup/unified" in command
