from pathlib import Path

import pytest

from facts.binaries import BinaryVersions, parse_version
from tests.unit.facts_util import command_text, run_locally

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1", "1.6.20"),
        ("runc version 1.1.5+ds1", "1.1.5"),
        ("node_exporter, version 1.8.2 (branch: HEAD, revision: f1e0e8360aa6)", "1.8.2"),
        ("containerd github.com/containerd/containerd v1.7.22 7f7fdf5fed64", "1.7.22"),
        ("CNI protocol versions supported: 0.1.0", "0.1.0"),
        ("no digits here", None),
    ],
)
def test_parse_version(line: str, version: str | None) -> None:
    assert parse_version(line) == version


def test_process_present_absent_unparsable() -> None:
    lines = ["containerd\t+containerd github.com/containerd/containerd 1.6.20~ds1", "runc\t-", "odd\t+hello"]
    assert BinaryVersions().process(lines) == {"containerd": "1.6.20", "runc": None, "odd": "hello"}


def test_process_empty() -> None:
    assert BinaryVersions().process([]) == {}


def test_command_is_one_sh_call_with_quoted_pairs() -> None:
    text = command_text(BinaryVersions(), commands={"a b": "/opt/x --version"})
    assert text.startswith("sh -c ")
    assert "'a b' '/opt/x --version'" in text


def test_runs_locally(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\necho 'tool, version 2.3.4 (rev abc)' >&2\n")
    tool.chmod(0o755)
    result = run_locally(
        BinaryVersions(), commands={"tool": f"{tool} --version", "missing": f"{tmp_path}/nope --version"}
    )
    assert result == {"tool": "2.3.4", "missing": None}
