"""The download operation: commands for given facts, and its script run against a local HTTP server."""

from __future__ import annotations

import grp
import hashlib
import http.server
import io
import os
import pwd
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import OperationValueError

from deploys.operations.download import download, download_paths, download_stat_only, stamp_path
from facts.files import FileStates
from tests.unit.facts_util import run_locally
from tests.unit.pyinfra_harness import run_op

pytestmark = pytest.mark.unit

URL = "https://example.org/releases/tool-1.0.linux-amd64.tar.gz"
SUM = "a" * 64
OTHER = "b" * 64


STAT = {"size": 1, "mtime": "1700000000.000000000", "ctime": "1700000100.123456789", "inode": "77"}
STAT_TEXT = "1 1700000000.000000000 1700000100.123456789 77"
TOOL = "/usr/local/bin/tool"


def _file(sha256: str | None, mode: str = "755", user: str = "root", group: str = "root", **stat: str) -> dict:
    return {"type": "file", "mode": mode, "user": user, "group": group, **STAT, **stat, "sha256": sha256}


def _stamp(content: str) -> dict:
    return {**_file("c" * 64, mode="644"), "content": content}


def _facts(states: dict) -> dict:
    def lookup(**kwargs: Any) -> dict:
        # as the real fact: stat-only paths come without their sum
        return {
            path: None if states.get(path) is None else {
                **states[path], **({"sha256": None} if path in kwargs.get("stat_only", ()) else {})
            }
            for path in kwargs["paths"]
        }  # fmt: skip

    return {FileStates: lookup}


def test_plain_file_already_installed_is_noop_with_one_fact() -> None:
    states = {TOOL: _file(SUM), stamp_path(TOOL): _stamp(f"{SUM} {SUM} {STAT_TEXT}\n")}
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, facts=_facts(states))
    assert result.commands == []
    assert result.noops and "already installed" in result.noops[0]
    (read,) = result.fact_reads
    assert read[0] == "facts.files.FileStates"
    assert read[1]["stat_only"] == [TOOL]  # the installed file is not hashed: its stamp and stat decide


def test_verify_hashes_the_installed_file_and_compares_it() -> None:
    states = {TOOL: _file(OTHER), stamp_path(TOOL): _stamp(f"{SUM} {SUM} {STAT_TEXT}\n")}
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, verify=True, facts=_facts(states))
    assert result.fact_reads[0][1]["stat_only"] == []
    assert len(result.commands) == 1 and "curl" in result.commands[0]  # same stat, other content: reinstalled


@pytest.mark.parametrize(
    "changed",
    [{"ctime": "1700000200.000000000"}, {"size": 2}, {"mtime": "1.0"}, {"inode": "78"}],
    ids=["ctime", "size", "mtime", "inode"],
)
def test_installed_file_touched_since_stamp_is_reinstalled(changed: dict) -> None:
    states = {TOOL: _file(None, **changed), stamp_path(TOOL): _stamp(f"{SUM} {SUM} {STAT_TEXT}\n")}
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, facts=_facts(states))
    assert len(result.commands) == 1 and "curl" in result.commands[0]


def test_stamp_without_stat_from_an_older_release_reinstalls_once() -> None:
    states = {TOOL: _file(None), stamp_path(TOOL): _stamp(f"{SUM} {SUM}\n")}
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, extract="tool-1.0/tool", facts=_facts(states))
    assert len(result.commands) == 1 and "curl" in result.commands[0]


def test_plain_file_missing_downloads_verifies_then_moves() -> None:
    result = run_op(download, url=URL, dest="/usr/local/bin/tool", sha256=SUM, facts=_facts({}))
    (command,) = result.commands
    assert command.startswith("sh -c ")
    assert f"spectra-download {URL} /usr/local/bin/tool {SUM} 755 root:root '' 0 " in command
    script = command
    # fetch, check, then move: in that order
    assert script.index("curl --fail") < script.index("sha256sum") < script.index('mv -f "$tmp" "$dest"')
    assert "--connect-timeout" in script and "wget" in script
    assert "sha256 mismatch for $url: expected $want, got $got" in script


def test_other_archive_recorded_redownloads() -> None:
    states = {TOOL: _file(OTHER), stamp_path(TOOL): _stamp(f"{OTHER} {OTHER} {STAT_TEXT}\n")}
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, facts=_facts(states))
    assert len(result.commands) == 1 and "curl" in result.commands[0]


def test_right_sum_wrong_mode_chmods_and_restamps() -> None:
    # mode/owner settings changed since the install (the stat still matches the stamp)
    states = {TOOL: _file(SUM, mode="700", user="nobody"), stamp_path(TOOL): _stamp(f"{SUM} {SUM} {STAT_TEXT}\n")}
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, mode="0755", facts=_facts(states))
    assert result.commands[:2] == ["chown root:root /usr/local/bin/tool", "chmod 755 /usr/local/bin/tool"]
    assert result.commands[2].startswith("sh -c ")
    assert result.commands[2].endswith(f"spectra-restamp {TOOL} {stamp_path(TOOL)} {SUM} {SUM}")


def test_extracted_member_noop_from_stamp() -> None:
    stamp = stamp_path(TOOL)
    states = {TOOL: _file(OTHER), stamp: _stamp(f"{SUM} {OTHER} {STAT_TEXT}\n")}
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, extract="tool-1.0/tool", facts=_facts(states))
    assert result.commands == []
    (read,) = result.fact_reads
    assert read[1]["paths"] == [TOOL, stamp] and read[1]["contents"] == [stamp]
    assert read[1]["stat_only"] == [TOOL]


@pytest.mark.parametrize(
    "stamp_content",
    [None, f"{OTHER} {OTHER} {STAT_TEXT}\n", f"{SUM} {'d' * 64} 9 {STAT_TEXT[2:]}\n"],
    ids=["no-stamp", "other-archive", "binary-replaced"],
)
def test_extracted_member_reinstalled(stamp_content: str | None) -> None:
    stamp = stamp_path(TOOL)
    states: dict = {TOOL: _file(OTHER)}
    if stamp_content is not None:
        states[stamp] = _stamp(stamp_content)
    result = run_op(download, url=URL, dest=TOOL, sha256=SUM, extract="tool-1.0/tool", facts=_facts(states))
    assert len(result.commands) == 1 and " root:root tool-1.0/tool 0 " in result.commands[0]


def test_current_snapshot_means_no_fact_read() -> None:
    current = {"/opt/x": _file(None), stamp_path("/opt/x"): _stamp(f"{SUM} {SUM} {STAT_TEXT}\n")}
    result = run_op(download, url=URL, dest="/opt/x", sha256=SUM, current=current, facts={})
    assert result.commands == [] and result.fact_reads == []


def test_paths_helpers() -> None:
    assert download_paths(TOOL) == [TOOL, stamp_path(TOOL)]
    assert download_stat_only(TOOL, "tool-1.0/tool") == [TOOL]
    assert download_stat_only(TOOL, verify=True) == []
    assert download_stat_only("/opt/cni/bin", ".") == []


def test_hostile_url_is_quoted() -> None:
    result = run_op(download, url="http://x/$(reboot);a", dest="/opt/x", sha256=SUM, facts=_facts({}))
    assert "'http://x/$(reboot);a'" in result.commands[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sha256": "abc"}, "64 hex"), ({"sha256": SUM, "extract": "../etc/passwd"}, "bad member")],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(OperationValueError, match=message):
        run_op(download, url=URL, dest="/opt/x", facts=_facts({}), **kwargs)


# --- the script itself, run locally against a local HTTP server -------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def _run(**kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    states = kwargs.pop("states", {})
    result = run_op(download, user=user, group=group, connect_timeout=2, max_time=20, facts=_facts(states), **kwargs)
    (command,) = result.commands
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True)


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_real_plain_download(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    (root / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    dest = tmp_path / "bin" / "tool"
    completed = _run(url=f"{base}/tool", dest=str(dest), sha256=hashlib.sha256(b"#!/bin/sh\necho hi\n").hexdigest())
    assert completed.returncode == 0, completed.stderr
    assert dest.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert oct(dest.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in dest.parent.iterdir()] == ["tool"]  # no temporary left behind


def test_real_mismatch_installs_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    (root / "tool").write_bytes(b"evil")
    dest = tmp_path / "bin" / "tool"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    completed = _run(url=f"{base}/tool", dest=str(dest), sha256=SUM)
    assert completed.returncode != 0
    assert f"sha256 mismatch for {base}/tool: expected {SUM}, got {hashlib.sha256(b'evil').hexdigest()}" in (
        completed.stderr
    )
    assert dest.read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == ["tool"]


def test_real_unreachable_fails_naming_url(tmp_path: Path) -> None:
    dest = tmp_path / "bin" / "tool"
    completed = _run(url="http://127.0.0.1:9/nothing", dest=str(dest), sha256=SUM)
    assert completed.returncode != 0
    assert "download failed: http://127.0.0.1:9/nothing" in completed.stderr
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_real_extract_member_and_stamp(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    archive = _tarball({"tool-1.0/tool": b"binary", "tool-1.0/LICENSE": b"text"})
    (root / "tool.tar.gz").write_bytes(archive)
    dest = tmp_path / "bin" / "tool"
    stamps = tmp_path / "stamps"
    archive_sum = hashlib.sha256(archive).hexdigest()
    completed = _run(
        url=f"{base}/tool.tar.gz",
        dest=str(dest),
        sha256=archive_sum,
        extract="tool-1.0/tool",
        stamp_dir=str(stamps),
    )
    assert completed.returncode == 0, completed.stderr
    assert dest.read_bytes() == b"binary"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tool"]
    stamp = Path(stamp_path(str(dest), str(stamps)))
    info = dest.stat()
    recorded = stamp.read_text().split()
    assert recorded[:2] == [archive_sum, hashlib.sha256(b"binary").hexdigest()]
    assert recorded[2] == "6" and recorded[5] == str(info.st_ino)
    assert recorded[4].split(".")[0] == str(int(info.st_ctime))


def test_real_install_then_noop_then_reinstall_after_a_write(server: tuple[str, Path], tmp_path: Path) -> None:
    """The stamp the script writes, read back by the real FileStates fact: no-op; a rewrite: reinstall."""
    base, root = server
    (root / "tool").write_bytes(b"v1")
    dest, stamps = tmp_path / "bin" / "tool", tmp_path / "stamps"
    args: dict[str, Any] = {"url": f"{base}/tool", "dest": str(dest), "sha256": hashlib.sha256(b"v1").hexdigest(),
            "stamp_dir": str(stamps)}  # fmt: skip
    assert _run(**args).returncode == 0

    def decide() -> list[str]:
        paths = download_paths(str(dest), stamp_dir=str(stamps))
        states = run_locally(FileStates(), paths=paths, contents=paths[1:], stat_only=[str(dest)])
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        return run_op(download, user=user, group=group, current=states, facts={}, **args).commands

    assert decide() == []
    dest.write_bytes(b"v1")  # same content and size, but written: ctime moved
    assert len(decide()) == 1


def test_real_extract_whole_archive(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    archive = _tarball({"./bridge": b"b", "./loopback": b"l"})
    (root / "cni.tgz").write_bytes(archive)
    dest = tmp_path / "cni" / "bin"
    completed = _run(
        url=f"{base}/cni.tgz",
        dest=str(dest),
        sha256=hashlib.sha256(archive).hexdigest(),
        extract=".",
        stamp_dir=str(tmp_path / "stamps"),
    )
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["bridge", "loopback"]
