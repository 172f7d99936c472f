"""The real Kubernetes binaries, built from the Go module proxy, cached and published on the lab mirror.

The module fixture runs `python -m lab.kubernetes_build build`: quick when the cache holds the pinned
version with matching sums, a full build otherwise (tens of minutes on 2 cores). A failed build fails
every test here; nothing is skipped and no binary is stood in for.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploys import checksums
from lab import kubernetes_build as kb

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
VERSION = kb.DEFAULT_VERSION
ARCH = kb.host_arch()
BUILD_TIMEOUT = 3 * 3600

VERSION_COMMANDS = {
    "kubelet": ["--version"],
    "kube-apiserver": ["--version"],
    "kube-controller-manager": ["--version"],
    "kube-scheduler": ["--version"],
    "kube-proxy": ["--version"],
    "kubectl": ["version", "--client"],
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def has_interpreter(path: Path) -> bool:
    """Whether an ELF64 file asks for a dynamic loader (a PT_INTERP program header): not static."""
    with open(path, "rb") as handle:
        header = handle.read(64)
        assert header[:4] == b"\x7fELF" and header[4] == 2, f"{path} is not a 64-bit ELF file"
        phoff = struct.unpack_from("<Q", header, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    return any(struct.unpack_from("<I", table, i * phentsize)[0] == 3 for i in range(phnum))


@pytest.fixture(scope="module")
def built() -> kb.BuildResult:
    result = subprocess.run(
        [sys.executable, "-m", "lab.kubernetes_build", "build", "--version", VERSION, "--arch", ARCH],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, f"the Kubernetes build failed:\n{result.stdout}\n{result.stderr}"
    outcome = kb.build(VERSION, ARCH, log=lambda message: None)  # cached now: reads the record
    assert outcome.cached, "the build just ran; the cache must be valid"
    return outcome


@pytest.fixture(scope="module")
def mirror_http(built: kb.BuildResult) -> Iterator[str]:
    """The lab's mirror server program on a loopback port, serving the real mirror directory."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "lab.mirror_server", str(kb.mirror_root()), "127.0.0.1", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None, "the mirror server exited"
                assert time.monotonic() < deadline, "the mirror server did not listen within 10 s"
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_every_binary_is_published_in_the_upstream_layout_with_matching_sha256(built: kb.BuildResult) -> None:
    for binary in kb.BINARIES:
        path = kb.mirror_root() / "release" / VERSION / "bin" / "linux" / ARCH / binary
        assert path.is_file(), f"{path} is not published"
        assert os.access(path, os.X_OK), f"{path} is not executable"
        sum_text = path.with_name(binary + ".sha256").read_text()
        assert sum_text == built.binaries[binary].sha256, f"{binary}.sha256 is not just the recorded digest"
        assert sha256(path) == sum_text, f"{path} does not match its .sha256"
        assert sha256(built.directory / binary) == sum_text


def test_each_binary_prints_the_pinned_release_tag(built: kb.BuildResult) -> None:
    for binary, args in VERSION_COMMANDS.items():
        path = kb.mirror_path(kb.mirror_root(), VERSION, ARCH, binary)
        result = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{binary} {' '.join(args)} exited {result.returncode}: {output}"
        expected = f"Kubernetes {VERSION}" if binary != "kubectl" else f"Client Version: {VERSION}"
        assert expected in output, f"{binary} {' '.join(args)} printed {output!r}"


def test_kubelet_version_is_exactly_the_tag(built: kb.BuildResult) -> None:
    path = kb.mirror_path(kb.mirror_root(), VERSION, ARCH, "kubelet")
    output = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60).stdout
    assert output.strip() == f"Kubernetes {VERSION}"


def test_binaries_upstream_builds_static_are_static(built: kb.BuildResult) -> None:
    for binary in kb.BINARIES:
        dynamic = has_interpreter(built.directory / binary)
        if binary in kb.STATIC_BINARIES:
            assert not dynamic, f"{binary} must be static (CGO_ENABLED=0), as upstream builds it"
        assert built.binaries[binary].cgo == dynamic


def test_the_lab_table_holds_the_lab_build_sums(built: kb.BuildResult) -> None:
    table = checksums.load_table(kb.lab_table_path())
    for binary in kb.BINARIES:
        assert checksums.lookup(table, VERSION, ARCH, binary) == built.binaries[binary].sha256


def test_the_same_download_path_reads_the_mirror_over_http(
    built: kb.BuildResult, mirror_http: str, tmp_path: Path
) -> None:
    """What production does against the upstream site, pointed at the mirror: only the base URL differs."""
    base = f"{mirror_http}/release"
    table_path = tmp_path / "from-mirror.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "lab.kubernetes_build", "sums", "--version", VERSION, "--arch", ARCH,
         "--from-url", base, "--table", str(table_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = checksums.load_table(table_path)
    assert table == {VERSION: {ARCH: {binary: built.binaries[binary].sha256 for binary in kb.BINARIES}}}
    url = checksums.release_url(base, VERSION, ARCH, "kubectl")
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
    assert hashlib.sha256(body).hexdigest() == checksums.lookup(table, VERSION, ARCH, "kubectl")
