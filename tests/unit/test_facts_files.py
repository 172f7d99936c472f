import hashlib
from pathlib import Path

import pytest

from facts.files import FileStates, normalise_mode, state_matches
from tests.unit.facts_util import command_text, run_locally

pytestmark = pytest.mark.unit

SUM = "a" * 64


def test_process_file_dir_missing_link() -> None:
    lines = [
        "A|/etc/a",
        "A|/etc/d",
        "A|/etc/missing",
        "A|/etc/dangling",
        "A|/etc/with|pipe",
        "S|regular file|644|root|root|12|1700000000.123456789|1700000001.000000000|42|/etc/a",
        "S|directory|755|root|adm|4096|1.0|2.0|7|/etc/d",
        "S|regular empty file|600|root|root|0|1.0|2.0|8|/etc/with|pipe",
        "L|/etc/dangling",
        f"H|{SUM}  /etc/a",
    ]
    states = FileStates().process(lines)
    assert states["/etc/a"] == {
        "type": "file",
        "mode": "644",
        "user": "root",
        "group": "root",
        "size": 12,
        "mtime": "1700000000.123456789",
        "ctime": "1700000001.000000000",
        "inode": "42",
        "sha256": SUM,
    }
    assert states["/etc/d"] is not None and states["/etc/d"]["type"] == "directory"
    assert states["/etc/d"]["sha256"] is None
    assert states["/etc/missing"] is None
    assert states["/etc/dangling"] is not None and states["/etc/dangling"]["type"] == "link"
    assert states["/etc/with|pipe"] is not None and states["/etc/with|pipe"]["type"] == "file"


def test_process_content_lines() -> None:
    lines = ["A|/var/stamp", "S|regular file|644|root|root|3|1.0|2.0|3|/var/stamp", "C|aGkK|/var/stamp"]
    assert FileStates().process(lines)["/var/stamp"]["content"] == "hi\n"  # type: ignore[index]


def test_process_escaped_sum_line() -> None:
    lines = ["A|/tmp/a\\b", "S|regular file|644|root|root|3|1.0|2.0|3|/tmp/a\\b", f"H|\\{SUM}  /tmp/a\\\\b"]
    assert FileStates().process(lines)["/tmp/a\\b"]["sha256"] == SUM  # type: ignore[index]


def test_process_empty() -> None:
    assert FileStates().process([]) == {}


def test_bad_line_raises() -> None:
    from pyinfra.api import FactProcessError

    with pytest.raises(FactProcessError):
        FileStates().process(["S|regular file|644"])
    with pytest.raises(FactProcessError):
        FileStates().process(["H|abc  /x"])


def test_command_quotes_paths_and_orders_contents_first() -> None:
    text = command_text(FileStates(), paths=["/a b", "/stamp"], contents=["/stamp"])
    assert text.endswith("sh 1 1 2 /stamp '/a b'")
    assert command_text(FileStates(), paths=["/x"], sha256=False).endswith("sh 0 0 1 /x")


def test_command_puts_stat_only_paths_last() -> None:
    text = command_text(FileStates(), paths=["/big", "/small", "/stamp"], contents=["/stamp"], stat_only=["/big"])
    assert text.endswith("sh 1 1 2 /stamp /small /big")


def test_stat_only_paths_are_not_hashed(tmp_path: Path) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(b"x" * 4096)
    small.write_text("s\n")
    states = run_locally(FileStates(), paths=[str(big), str(small)], stat_only=[str(big)])
    assert states[str(big)]["sha256"] is None
    assert states[str(big)]["size"] == 4096
    assert states[str(big)]["inode"] == str(big.stat().st_ino)
    assert states[str(big)]["ctime"].split(".")[0] == str(int(big.stat().st_ctime))
    assert states[str(small)]["sha256"] == hashlib.sha256(b"s\n").hexdigest()


def test_runs_locally(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("hello\n")
    regular.chmod(0o640)
    stamp = tmp_path / "stamp"
    stamp.write_text("abc\n")
    states = run_locally(
        FileStates(),
        paths=[str(regular), str(tmp_path), str(tmp_path / "missing"), str(stamp)],
        contents=[str(stamp)],
    )
    assert states[str(regular)]["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert states[str(regular)]["mode"] == "640"
    assert states[str(tmp_path)]["type"] == "directory"
    assert states[str(tmp_path / "missing")] is None
    assert states[str(stamp)]["content"] == "abc\n"


def test_runs_locally_with_awkward_names_and_links(tmp_path: Path) -> None:
    odd = tmp_path / "a b|c\\d"
    odd.write_text("odd\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link").symlink_to(odd)
    paths = [str(odd), str(tmp_path / "dangling"), str(tmp_path / "link"), str(tmp_path / "missing")]
    states = run_locally(FileStates(), paths=paths)
    digest = hashlib.sha256(b"odd\n").hexdigest()
    assert states[str(odd)]["sha256"] == digest and states[str(odd)]["type"] == "file"
    assert states[str(tmp_path / "dangling")]["type"] == "link"
    assert states[str(tmp_path / "link")]["sha256"] == digest  # followed
    assert states[str(tmp_path / "missing")] is None


def test_many_paths_one_stat(tmp_path: Path) -> None:
    paths = []
    for index in range(50):
        path = tmp_path / f"f{index}"
        path.write_text(str(index))
        paths.append(str(path))
    states = run_locally(FileStates(), paths=paths)
    assert all(states[p]["sha256"] == hashlib.sha256(str(i).encode()).hexdigest() for i, p in enumerate(paths))


@pytest.mark.parametrize(
    ("mode", "expected"), [(644, "644"), ("0644", "644"), ("0o755", "755"), ("4755", "4755"), (None, None)]
)
def test_normalise_mode(mode: int | str | None, expected: str | None) -> None:
    assert normalise_mode(mode) == expected


def test_normalise_mode_rejects_non_octal() -> None:
    with pytest.raises(ValueError):
        normalise_mode("0899")


def test_state_matches() -> None:
    state = {"type": "file", "mode": "644", "user": "root", "group": "root", "size": 1, "sha256": SUM}
    assert state_matches(state, sha256=SUM, mode="0644", user="root", group="root") == {}  # type: ignore[arg-type]
    assert state_matches(state, mode="600") == {"mode": "644"}  # type: ignore[arg-type]
    assert state_matches(None, sha256=SUM) == {"exists": False}
