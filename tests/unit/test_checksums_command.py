"""`spectra checksums kubernetes` against a fake release site on 127.0.0.1 (upstream's layout, http.server).

The site serves ``release/<version>/bin/linux/<arch>/<binary>.sha256`` files written by each test; every
request is recorded, so a test can tell that an invalid request fetched nothing.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploys import checksums
from deploys.checksums import upstream
from spectra_cli import checksums as command
from spectra_cli import cli

pytestmark = pytest.mark.unit

VERSION = "v1.36.4"
ARCHES = ("amd64", "arm64")
SPECTRA = str(Path(sys.executable).parent / "spectra")


def digest(arch: str, binary: str) -> str:
    return hashlib.sha256(f"{VERSION} {arch} {binary}".encode()).hexdigest()


@dataclass
class Site:
    root: Path
    base: str  # http://127.0.0.1:PORT/release
    requests: list[str] = field(default_factory=list)

    def sum_file(self, arch: str, binary: str, version: str = VERSION) -> Path:
        return self.root / "release" / version / "bin" / "linux" / arch / f"{binary}.sha256"

    def publish(self, version: str = VERSION) -> None:
        for arch in ARCHES:
            for binary in checksums.KUBERNETES_BINARIES:
                path = self.sum_file(arch, binary, version)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(digest(arch, binary))  # just the digest, no newline: as upstream


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path.startswith("/moved/"):  # dl.k8s.io answers with a redirect to its CDN
                self.send_response(302)
                self.send_header("Location", "/release/" + self.path.removeprefix("/moved/"))
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Site(root, f"http://127.0.0.1:{port}/release", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """A table that already holds another release: merging must keep it."""
    path = tmp_path / "tables" / "kubernetes.yaml"
    checksums.write_table(path, {"v1.36.3": {"amd64": {"kubectl": "e" * 64}}})
    return path


def spectra(*args: str) -> int:
    return cli.main(["checksums", "kubernetes", *args])


def all_sums() -> dict[str, dict[str, str]]:
    return {arch: {binary: digest(arch, binary) for binary in checksums.KUBERNETES_BINARIES} for arch in ARCHES}


def lines(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines()]


# --- adding a release -------------------------------------------------------------------------------


def test_adds_every_arch_and_binary_and_keeps_the_rest(
    site: Site, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    assert spectra("--version", VERSION, "--from-url", site.base, "--table", str(table)) == 0
    assert checksums.load_table(table) == {VERSION: all_sums(), "v1.36.3": {"amd64": {"kubectl": "e" * 64}}}
    out = capsys.readouterr()
    assert sorted(lines(out.out)) == sorted(
        ["added", VERSION, arch, binary, sha] for arch, sums in all_sums().items() for binary, sha in sums.items()
    )
    assert f"{table}: 12 added" in out.err
    assert not [path for path in table.parent.iterdir() if path.name != table.name]  # no temporary file left


def test_a_second_run_finds_everything_present_and_leaves_the_file_alone(
    site: Site, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    args = ("--version", VERSION, "--from-url", site.base, "--table", str(table))
    assert spectra(*args) == 0
    before = (table.read_bytes(), table.stat().st_mtime_ns)
    capsys.readouterr()
    assert spectra(*args) == 0
    out = capsys.readouterr()
    assert {fields[0] for fields in lines(out.out)} == {"present"}
    assert "12 present (unchanged)" in out.err
    assert (table.read_bytes(), table.stat().st_mtime_ns) == before


def test_arch_and_binary_lists_and_a_new_table(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.publish()
    new_table = tmp_path / "new" / "k.yaml"
    args = ["--version", VERSION, "--from-url", site.base, "--table", str(new_table)]
    assert spectra(*args, "--arch", "arm64", "--binary", "kubelet,kubectl", "--binary", "kubelet") == 0
    assert checksums.load_table(new_table) == {
        VERSION: {"arm64": {"kubelet": digest("arm64", "kubelet"), "kubectl": digest("arm64", "kubectl")}}
    }
    assert sorted(site.requests) == [
        f"/release/{VERSION}/bin/linux/arm64/kubectl.sha256",
        f"/release/{VERSION}/bin/linux/arm64/kubelet.sha256",
    ]
    assert len(lines(capsys.readouterr().out)) == 2


def test_redirects_are_followed(site: Site, table: Path) -> None:
    site.publish()
    moved = site.base.replace("/release", "/moved")
    assert spectra("--version", VERSION, "--from-url", moved, "--arch", "amd64", "--table", str(table)) == 0
    assert checksums.load_table(table)[VERSION] == {"amd64": all_sums()["amd64"]}


def test_dry_run_fetches_and_prints_but_writes_nothing(
    site: Site, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    before = table.read_bytes()
    assert spectra("--version", VERSION, "--from-url", site.base, "--table", str(table), "--dry-run") == 0
    out = capsys.readouterr()
    assert len(lines(out.out)) == 12 and "dry run: nothing written" in out.err
    assert table.read_bytes() == before
    assert len(site.requests) == 12


def test_the_default_is_upstreams_site_both_arches_and_the_repository_table() -> None:
    args = cli.build_parser().parse_args(["checksums", "kubernetes", "--version", VERSION])
    assert args.from_url == "https://dl.k8s.io/release" == checksums.UPSTREAM_KUBERNETES_BASE_URL
    assert args.table == checksums.KUBERNETES_TABLE
    assert command._items(args.arch, upstream.DEFAULT_ARCHES) == ["amd64", "arm64"]
    assert command._items(args.binary, checksums.KUBERNETES_BINARIES) == list(checksums.KUBERNETES_BINARIES)


# --- failures: non-zero exit, the table untouched -------------------------------------------------------


def _unchanged(table: Path, before: bytes) -> None:
    assert table.read_bytes() == before
    assert [path.name for path in table.parent.iterdir()] == [table.name]


def test_an_unreachable_site_exits_1(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = table.read_bytes()
    base = f"http://127.0.0.1:{port}/release"
    assert spectra("--version", VERSION, "--from-url", base, "--table", str(table), "--timeout", "5") == 1
    err = capsys.readouterr().err
    assert f"{base}/{VERSION}/bin/linux/amd64/kubelet.sha256: cannot fetch" in err
    assert f"{table} is unchanged" in err
    _unchanged(table, before)


def test_one_missing_file_writes_nothing(site: Site, table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site.publish()
    site.sum_file("arm64", "kubectl").unlink()  # the very last one fetched: all others were fine
    before = table.read_bytes()
    assert spectra("--version", VERSION, "--from-url", site.base, "--table", str(table)) == 1
    out = capsys.readouterr()
    assert f"/{VERSION}/bin/linux/arm64/kubectl.sha256: HTTP 404" in out.err
    assert out.out == ""
    _unchanged(table, before)


@pytest.mark.parametrize(
    "content, message",
    [
        ("<html>Not here</html>", "does not start with a sha256 hex digest"),
        ("a" * 63, "does not start with a sha256 hex digest"),
        ("", "is empty"),
        (f"{'a' * 64}  kubelet\n{'b' * 64}  kubectl\n", "has 2 lines"),
        (f"{'a' * 64}  kube-proxy", "the sum of 'kube-proxy', not of 'kubelet'"),
        ("a" * 5000, "larger than 4096 bytes"),
    ],
)
def test_a_malformed_sum_file_exits_1(
    site: Site, table: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    site.sum_file("arm64", "kubelet").write_text(content)
    before = table.read_bytes()
    assert spectra("--version", VERSION, "--from-url", site.base, "--table", str(table)) == 1
    assert message in capsys.readouterr().err
    _unchanged(table, before)


def test_a_sum_that_differs_from_the_table_is_refused_unless_replaced(
    site: Site, table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    args = ["--version", VERSION, "--from-url", site.base, "--table", str(table), "--arch", "amd64"]
    assert spectra(*args) == 0
    site.sum_file("amd64", "kube-proxy").write_text("f" * 64)
    before = table.read_bytes()
    capsys.readouterr()
    assert spectra(*args) == 1
    err = capsys.readouterr().err
    assert f"{VERSION} amd64 kube-proxy: {site.base} publishes {'f' * 64}, {table} holds" in err
    assert "1 sum(s) differ from the table" in err
    _unchanged(table, before)

    assert spectra(*args, "--replace") == 0
    out = capsys.readouterr().out
    assert ["replaced", VERSION, "amd64", "kube-proxy", "f" * 64, f"(was {digest('amd64', 'kube-proxy')})"] in lines(
        out
    )
    assert checksums.load_table(table)[VERSION]["amd64"]["kube-proxy"] == "f" * 64


def test_a_failed_write_exits_1_and_keeps_the_old_table(
    site: Site, table: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    before = table.read_bytes()

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    assert spectra("--version", VERSION, "--from-url", site.base, "--table", str(table)) == 1
    assert "cannot write" in capsys.readouterr().err
    _unchanged(table, before)


# --- invalid input: exit 2, nothing fetched ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--version", "1.36.4"], "not a release tag of the form v1.MINOR.PATCH"),
        (["--version", "v1.36"], "v1.MINOR.PATCH"),
        (["--version", "v1.36.4-rc.1"], "v1.MINOR.PATCH"),
        (["--version", "v2.0.0"], "only Kubernetes 1.x"),
        (["--version", VERSION, "--arch", "AMD 64"], "architecture 'AMD 64' is not valid"),
        (["--version", VERSION, "--binary", "kubeadm"], "binary 'kubeadm' is not one of"),
    ],
)
def test_invalid_requests_exit_2_before_any_fetch(
    site: Site, table: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    before = table.read_bytes()
    assert spectra(*args, "--from-url", site.base, "--table", str(table)) == 2
    assert message in capsys.readouterr().err
    assert site.requests == []
    _unchanged(table, before)


@pytest.mark.parametrize("url", ["ftp://example.com/release", "dl.k8s.io/release", "http:///release"])
def test_an_invalid_url_exits_2(table: Path, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert spectra("--version", VERSION, "--from-url", url, "--table", str(table)) == 2
    assert "release URL" in capsys.readouterr().err


def test_an_invalid_existing_table_exits_2_before_any_fetch(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish()
    broken = tmp_path / "broken.yaml"
    broken.write_text("v1.36.3:\n  amd64:\n    kubelet: not-a-sum\n")
    assert spectra("--version", VERSION, "--from-url", site.base, "--table", str(broken)) == 2
    assert "not a sha256 hex digest" in capsys.readouterr().err
    assert site.requests == []
    assert broken.read_text() == "v1.36.3:\n  amd64:\n    kubelet: not-a-sum\n"


def test_the_installed_command_exit_codes(site: Site, table: Path) -> None:
    """The real `spectra` entry point: argparse errors and ours are 2, a fetch failure 1, success 0."""
    site.publish()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SPECTRA, "checksums", *args], capture_output=True, text=True, timeout=60)

    assert run("kubernetes").returncode == 2  # --version is required
    assert run("etcd", "--version", VERSION).returncode == 2
    assert run("kubernetes", "--version", "latest", "--table", str(table)).returncode == 2
    missing = run("kubernetes", "--version", "v1.36.9", "--from-url", site.base, "--table", str(table))
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    done = run("kubernetes", "--version", VERSION, "--from-url", site.base, "--table", str(table), "--arch", "amd64")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 6


def test_the_command_does_not_load_pyinfra_cli() -> None:
    """No inventory is involved: the process is not gevent-patched (pyinfra_cli's import does that)."""
    code = (
        "import sys; from spectra_cli import cli; "
        "cli.main(['checksums', 'kubernetes', '--version', 'bad']); print('pyinfra_cli' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
