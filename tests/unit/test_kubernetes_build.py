"""Kubernetes artifacts: generated go.mod, layout paths, checksum tables, idempotent publishing, CLI errors.

No Go build runs here: the binaries published below are small test files, and `go` is a stub script where
its error handling is under test. The real build is checked by tests/lab/test_kubernetes_artifacts.py.
Reading a release's published sums over HTTP (`spectra checksums kubernetes`) is in test_checksums_command.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from deploys import checksums
from deploys.checksums import ChecksumError
from lab import kubernetes_build as kb

pytestmark = pytest.mark.unit

UPSTREAM_GO_MOD = """\
// This is a generated file. Do not edit directly.

module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
\tgithub.com/spf13/cobra v1.10.2
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go // a comment
\tk8s.io/component-base => ./staging/src/k8s.io/component-base
\tgithub.com/example/other => github.com/example/other v1.2.3
)

replace k8s.io/streaming => ./staging/src/k8s.io/streaming
"""

HEX_A = "a" * 64
HEX_B = "b" * 64


@pytest.fixture
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPECTRA_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPECTRA_LAB_DIR", str(tmp_path / "lab"))
    return tmp_path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_cache(directory: Path, contents: dict[str, bytes] | None = None) -> dict[str, str]:
    """A cache directory as `build` leaves it: one file per binary and build.json with their sums."""
    contents = contents or {binary: f"test bytes of {binary}\n".encode() for binary in kb.BINARIES}
    directory.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    for binary, data in contents.items():
        (directory / binary).write_bytes(data)
        records[binary] = {"sha256": sha(data), "size": len(data), "seconds": 1.0, "cgo": binary == "kubelet"}
    (directory / "build.json").write_text(json.dumps({"binaries": records}))
    return {binary: record["sha256"] for binary, record in records.items()}


# --- versions and the generated module ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1.36.3", "v1.35.4", "v1.37.12"])
def test_release_tags_are_accepted(version: str) -> None:
    assert kb.parse_version(version)[0] == 1


@pytest.mark.parametrize("version", ["1.36.3", "v1.36", "v2.0.0", "v1.36.3-rc.1", "latest", ""])
def test_other_versions_are_refused(version: str) -> None:
    with pytest.raises(kb.BuildError, match="v1.MINOR.PATCH|1.x"):
        kb.parse_version(version)


def test_staging_modules_follow_the_kubernetes_minor_and_patch() -> None:
    assert kb.staging_version("v1.36.3") == "v0.36.3"
    assert kb.staging_version("v1.35.10") == "v0.35.10"


def test_staging_modules_are_read_from_block_and_single_replace_lines() -> None:
    assert kb.staging_modules(UPSTREAM_GO_MOD) == [
        "k8s.io/api",
        "k8s.io/client-go",
        "k8s.io/component-base",
        "k8s.io/streaming",
    ]


def test_generated_go_mod_requires_the_tag_and_replaces_every_staging_module() -> None:
    text = kb.render_go_mod("v1.36.3", UPSTREAM_GO_MOD)
    lines = [line.strip() for line in text.splitlines()]
    assert "module spectra.lab/kubernetes-build" in lines
    assert "go 1.26.0" in lines
    assert "godebug default=go1.26" in lines
    assert "require k8s.io/kubernetes v1.36.3" in lines
    replaces = sorted(" ".join(line.split()) for line in lines if "=>" in line)
    assert replaces == [
        "k8s.io/api => k8s.io/api v0.36.3",
        "k8s.io/client-go => k8s.io/client-go v0.36.3",
        "k8s.io/component-base => k8s.io/component-base v0.36.3",
        "k8s.io/streaming => k8s.io/streaming v0.36.3",
    ]
    assert "./staging" not in text and "github.com/example/other" not in text


def test_go_mod_without_staging_modules_is_an_error() -> None:
    with pytest.raises(kb.BuildError, match="no staging modules"):
        kb.render_go_mod("v1.36.3", "module k8s.io/kubernetes\n\ngo 1.26.0\n")


def test_go_mod_without_go_directive_is_an_error() -> None:
    with pytest.raises(kb.BuildError, match="no `go` directive"):
        kb.render_go_mod("v1.36.3", "replace k8s.io/api => ./staging/src/k8s.io/api\n")


def test_ldflags_set_the_version_variables_like_upstream() -> None:
    flags = kb.ldflags("v1.36.3", "2026-07-22T18:07:38Z")
    assert flags.startswith("all=") and flags.endswith(" -s -w")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X '{package}.gitVersion=v1.36.3'" in flags
        assert f"-X '{package}.gitMajor=1'" in flags
        assert f"-X '{package}.gitMinor=36'" in flags
        assert f"-X '{package}.buildDate=2026-07-22T18:07:38Z'" in flags
    assert "gitCommit" not in flags
    assert "gitCommit=abc" in kb.ldflags("v1.36.3", "x", git_commit="abc")


def test_release_time_comes_from_the_module_info(tmp_path: Path) -> None:
    info_file = tmp_path / "v1.36.3.info"
    info_file.write_text('{"Version":"v1.36.3","Time":"2026-07-22T18:07:38Z"}')
    assert kb.release_time({"Info": str(info_file)}) == "2026-07-22T18:07:38Z"
    assert kb.release_time({"Time": "2026-07-22T18:07:38.123Z"}) == "2026-07-22T18:07:38Z"
    assert kb.release_time({}) == "1970-01-01T00:00:00Z"


def test_only_kubelet_is_built_with_cgo() -> None:
    assert set(kb.BINARIES) - kb.STATIC_BINARIES == {"kubelet"}


# --- layout -----------------------------------------------------------------------------------------


def test_cache_and_mirror_paths_follow_the_documented_layout(lab_env: Path) -> None:
    assert kb.cache_dir("v1.36.3", "amd64") == lab_env / "cache/kubernetes/v1.36.3/linux/amd64"
    assert kb.module_dir("v1.36.3") == lab_env / "cache/kubernetes/v1.36.3/module"
    assert kb.mirror_root() == lab_env / "lab/mirror"
    assert kb.lab_table_path() == lab_env / "lab/checksums/kubernetes.yaml"
    assert (
        kb.mirror_path(kb.mirror_root(), "v1.36.3", "amd64", "kubelet")
        == lab_env / "lab/mirror/release/v1.36.3/bin/linux/amd64/kubelet"
    )


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECTRA_LAB_CACHE", raising=False)
    monkeypatch.delenv("SPECTRA_LAB_DIR", raising=False)
    assert kb.cache_dir("v1.36.3", "amd64") == Path("/var/cache/spectra-lab/kubernetes/v1.36.3/linux/amd64")
    assert kb.mirror_root() == Path("/var/lib/spectra-lab/mirror")


def test_release_url_is_the_upstream_layout() -> None:
    assert (
        checksums.release_url("https://dl.k8s.io/release/", "v1.36.3", "amd64", "kubelet")
        == "https://dl.k8s.io/release/v1.36.3/bin/linux/amd64/kubelet"
    )
    assert (
        checksums.release_url("http://198.18.0.1:8080/release", "v1.36.3", "arm64", "kubectl")
        == "http://198.18.0.1:8080/release/v1.36.3/bin/linux/arm64/kubectl"
    )


# --- sum files and tables ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [HEX_A, HEX_A + "\n", f"{HEX_A}  kubelet\n", HEX_A.upper()])
def test_sha256_files_upstream_and_sha256sum_style(text: str) -> None:
    assert checksums.parse_sha256_file(text) == HEX_A


BAD_SUM_FILES = [
    "",
    "\n",
    "not-a-digest",
    "a" * 63,
    "<html>404</html>",
    f"{HEX_A}  kubelet\n{HEX_B}  kubectl\n",  # a list of sums, not the sum of one file
    f"{HEX_A} kubelet extra",
]


@pytest.mark.parametrize("text", BAD_SUM_FILES)
def test_bad_sha256_files_are_refused(text: str) -> None:
    with pytest.raises(ChecksumError):
        checksums.parse_sha256_file(text, "kubelet.sha256")


def test_a_named_sha256_file_must_name_the_binary() -> None:
    assert checksums.parse_sha256_file(f"{HEX_A} *kubelet", "f", "kubelet") == HEX_A
    assert checksums.parse_sha256_file(HEX_A, "f", "kubelet") == HEX_A
    with pytest.raises(ChecksumError, match="the sum of 'kubectl', not of 'kubelet'"):
        checksums.parse_sha256_file(f"{HEX_A}  kubectl", "f", "kubelet")


def test_table_round_trip_and_merge(tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    assert checksums.load_table(path) == {}
    table = checksums.with_entries({}, "v1.36.3", "amd64", {"kubelet": HEX_A})
    assert checksums.write_table(path, table) is True
    assert checksums.write_table(path, table) is False  # unchanged: not rewritten
    table = checksums.with_entries(checksums.load_table(path), "v1.36.3", "amd64", {"kubectl": HEX_B})
    table = checksums.with_entries(table, "v1.37.2", "arm64", {"kubelet": HEX_B})
    checksums.write_table(path, table)
    loaded = checksums.load_table(path)
    assert loaded == {
        "v1.37.2": {"arm64": {"kubelet": HEX_B}},
        "v1.36.3": {"amd64": {"kubectl": HEX_B, "kubelet": HEX_A}},
    }
    text = path.read_text()
    assert text.startswith("# sha256 of release binaries")
    assert text.index("v1.37.2") < text.index("v1.36.3")  # newest first
    assert checksums.lookup(loaded, "v1.36.3", "amd64", "kubelet") == HEX_A


def test_versions_sort_numerically(tmp_path: Path) -> None:
    table = {"v1.9.0": {"amd64": {"kubelet": HEX_A}}, "v1.36.10": {"amd64": {"kubelet": HEX_A}},
             "v1.36.9": {"amd64": {"kubelet": HEX_A}}}  # fmt: skip
    text = checksums.dump_table(table)
    assert text.index("v1.36.10") < text.index("v1.36.9") < text.index("v1.9.0")


def test_lookup_of_a_missing_entry_says_how_to_add_it() -> None:
    how = "`spectra checksums kubernetes --version v1.36.4 --arch amd64`"
    with pytest.raises(ChecksumError, match=f"no sha256 for kubelet v1.36.4 linux/amd64.*{how}"):
        checksums.lookup({}, "v1.36.4", "amd64", "kubelet")


@pytest.mark.parametrize(
    "raw, message",
    [
        (["v1.36.3"], "mapping"),
        ({"1.36.3": {}}, "vX.Y.Z"),
        ({"v1.36.3": {"amd64": {"kubelet": "abc"}}}, "not a sha256"),
        ({"v1.36.3": {"amd64": ["kubelet"]}}, "map binaries"),
        ({"v1.36.3": {"AMD 64": {}}}, "architecture"),
    ],
)
def test_invalid_tables_are_refused(raw: object, message: str) -> None:
    with pytest.raises(ChecksumError, match=message):
        checksums.validate_table(raw)


def test_the_repository_table_is_valid() -> None:
    table = checksums.load_table(checksums.KUBERNETES_TABLE)
    assert kb.DEFAULT_VERSION in table
    for arches in table.values():
        for binaries in arches.values():
            assert set(binaries) <= set(kb.BINARIES)


# --- cache and publish ------------------------------------------------------------------------------


def test_cached_binaries_must_match_their_recorded_sums(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    sums = make_cache(directory)
    assert kb.cached_binaries(directory) == sums
    (directory / "kube-proxy").write_bytes(b"changed")
    (directory / "kubectl").unlink()
    assert set(kb.cached_binaries(directory)) == set(kb.BINARIES) - {"kube-proxy", "kubectl"}
    assert kb.cached_binaries(tmp_path / "nothing") == {}


def test_a_valid_cache_skips_the_build_without_go(lab_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = make_cache(kb.cache_dir("v1.36.3", "amd64"))

    def no_go(*args: object, **kwargs: object) -> kb.Go:
        raise AssertionError("a cached build must not look for Go")

    monkeypatch.setattr(kb.Go, "find", no_go)
    result = kb.build("v1.36.3", "amd64", log=lambda message: None)
    assert result.cached
    assert {binary: record.sha256 for binary, record in result.binaries.items()} == sums


def test_a_missing_binary_means_a_build_and_a_missing_go_says_so(lab_env: Path) -> None:
    make_cache(kb.cache_dir("v1.36.3", "amd64"))
    (kb.cache_dir("v1.36.3", "amd64") / "kubelet").unlink()
    with pytest.raises(kb.BuildError, match="Go is not installed"):
        kb.Go.find(candidates=[None, str(lab_env / "no-go")])


def test_publish_is_atomic_and_idempotent(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    sums = make_cache(directory)
    mirror = tmp_path / "mirror"
    assert kb.publish(directory, "v1.36.3", "amd64", mirror) == {binary: True for binary in kb.BINARIES}
    for binary in kb.BINARIES:
        dest = mirror / "release/v1.36.3/bin/linux/amd64" / binary
        assert sha(dest.read_bytes()) == sums[binary]
        assert dest.with_name(binary + ".sha256").read_text() == sums[binary]  # just the digest, as upstream
        assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    # A second run changes nothing and leaves no temporary files behind.
    mtimes = {p: p.stat().st_mtime_ns for p in mirror.rglob("*") if p.is_file()}
    assert kb.publish(directory, "v1.36.3", "amd64", mirror) == {binary: False for binary in kb.BINARIES}
    assert {p: p.stat().st_mtime_ns for p in mirror.rglob("*") if p.is_file()} == mtimes
    assert not [p for p in mirror.rglob(".*")]


def test_lab_up_publishes_the_cached_release_and_the_lab_table(lab_env: Path) -> None:
    sums = make_cache(kb.cache_dir("v1.36.3", "amd64"))
    state_dir = lab_env / "other-lab"
    assert kb.publish_to_lab(state_dir, "v1.36.3", "amd64", log=lambda message: None) == sums
    for binary in kb.BINARIES:
        assert sha((state_dir / "mirror/release/v1.36.3/bin/linux/amd64" / binary).read_bytes()) == sums[binary]
    table = kb.load_table(state_dir / "checksums/kubernetes.yaml")
    assert table == {"v1.36.3": {"amd64": sums}}


def test_publish_repairs_a_damaged_mirror_entry(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    sums = make_cache(directory)
    mirror = tmp_path / "mirror"
    kb.publish(directory, "v1.36.3", "amd64", mirror)
    dest = kb.mirror_path(mirror, "v1.36.3", "amd64", "kubelet")
    dest.write_bytes(b"truncated")
    dest.with_name("kubectl.sha256").write_text(HEX_B)
    changed = kb.publish(directory, "v1.36.3", "amd64", mirror)
    assert {binary for binary, did in changed.items() if did} == {"kubelet", "kubectl"}
    assert sha(dest.read_bytes()) == sums["kubelet"]
    assert dest.with_name("kubectl.sha256").read_text() == sums["kubectl"]


def test_publish_refuses_an_incomplete_cache(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    make_cache(directory)
    (directory / "kube-scheduler").write_bytes(b"not what was built")
    with pytest.raises(kb.BuildError, match="kube-scheduler not built"):
        kb.publish(directory, "v1.36.3", "amd64", tmp_path / "mirror")
    assert not (tmp_path / "mirror").exists()


def test_publish_binary_checks_its_source(tmp_path: Path) -> None:
    source = tmp_path / "kubelet"
    source.write_bytes(b"one")
    with pytest.raises(kb.BuildError, match="does not match its recorded sha256"):
        kb.publish_binary(source, HEX_A, tmp_path / "out" / "kubelet")


# --- sums from a URL or the mirror, and the CLI -------------------------------------------------------


def test_sums_from_a_url_and_from_the_mirror_agree(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    sums = make_cache(directory)
    mirror = tmp_path / "mirror"
    kb.publish(directory, "v1.36.3", "amd64", mirror)
    assert kb.sums_from_mirror(mirror, "v1.36.3", "amd64") == sums
    assert kb.sums_from_served_mirror((mirror / "release").as_uri(), "v1.36.3", "amd64") == sums


def test_sums_from_a_url_name_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(kb.BuildError, match=r"v1.36.3/bin/linux/amd64/kubelet.sha256"):
        kb.sums_from_served_mirror((tmp_path / "empty").as_uri(), "v1.36.3", "amd64", ["kubelet"])


def test_sums_from_the_mirror_check_the_binary(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    make_cache(directory)
    mirror = tmp_path / "mirror"
    kb.publish(directory, "v1.36.3", "amd64", mirror)
    kb.mirror_path(mirror, "v1.36.3", "amd64", "kube-proxy").write_bytes(b"x")
    with pytest.raises(kb.BuildError, match="kube-proxy is missing or does not match"):
        kb.sums_from_mirror(mirror, "v1.36.3", "amd64")


def test_cli_sums_from_url_writes_a_table_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "cache"
    sums = make_cache(directory)
    mirror = tmp_path / "mirror"
    kb.publish(directory, "v1.36.3", "amd64", mirror)
    table = tmp_path / "table.yaml"
    base = (mirror / "release").as_uri()
    args = ["sums", "--version", "v1.36.3", "--arch", "amd64", "--from-url", base, "--table", str(table)]
    assert kb.main(args) == 0
    assert checksums.load_table(table) == {"v1.36.3": {"amd64": sums}}
    assert "updated" in capsys.readouterr().out
    assert kb.main(args) == 0
    assert "unchanged" in capsys.readouterr().out


def test_cli_sums_from_url_write_the_lab_table_never_the_production_one(lab_env: Path) -> None:
    sums = make_cache(kb.cache_dir("v1.36.3", "amd64"))
    assert kb.main(["publish", "--version", "v1.36.3", "--arch", "amd64"]) == 0
    production = checksums.KUBERNETES_TABLE.read_bytes()
    base = (kb.mirror_root() / "release").as_uri()
    assert kb.main(["sums", "--version", "v1.36.3", "--arch", "amd64", "--from-url", base]) == 0
    assert checksums.load_table(kb.lab_table_path()) == {"v1.36.3": {"amd64": sums}}
    assert checksums.KUBERNETES_TABLE.read_bytes() == production


def test_cli_sums_from_mirror_defaults_to_the_lab_table(lab_env: Path) -> None:
    sums = make_cache(kb.cache_dir("v1.36.3", "amd64"))
    assert kb.main(["publish", "--version", "v1.36.3", "--arch", "amd64"]) == 0
    assert kb.main(["sums", "--version", "v1.36.3", "--arch", "amd64", "--from-mirror"]) == 0
    assert checksums.load_table(kb.lab_table_path()) == {"v1.36.3": {"amd64": sums}}


def test_cli_errors_exit_non_zero_with_a_message(lab_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kb.main(["build", "--version", "1.36"]) == 1
    assert "v1.MINOR.PATCH" in capsys.readouterr().err
    assert kb.main(["publish", "--version", "v1.36.3", "--arch", "amd64"]) == 1
    assert "not built" in capsys.readouterr().err


def _stub_go(tmp_path: Path, script: str) -> kb.Go:
    stub = tmp_path / "go"
    stub.write_text("#!/bin/sh\n" + script)
    stub.chmod(0o755)
    return kb.Go(str(stub))


def test_a_proxy_refusal_carries_gos_own_message(tmp_path: Path) -> None:
    go = _stub_go(
        tmp_path,
        'echo \'{"Path": "k8s.io/kubernetes", "Version": "v1.36.99", "Error": "k8s.io/kubernetes@v1.36.99: '
        "reading https://proxy.golang.org/k8s.io/kubernetes/@v/v1.36.99.info: 404 Not Found\"}'\nexit 1\n",
    )
    with pytest.raises(kb.BuildError, match=r"did not give k8s.io/kubernetes@v1.36.99:\n.*404 Not Found"):
        kb.download_upstream_module(go, "v1.36.99", tmp_path / "work")


def test_a_failing_go_command_carries_its_stderr(tmp_path: Path) -> None:
    go = _stub_go(tmp_path, "echo 'go: k8s.io/api@v0.36.3: verifying module: checksum mismatch' >&2\nexit 1\n")
    with pytest.raises(kb.BuildError, match="go get.*failed \\(go exited 1\\):\ngo: k8s.io/api@v0.36.3: verifying"):
        go.run(["get", "x"], cwd=tmp_path, what="go get", nice=False)


def test_a_build_failure_stops_the_cli_with_exit_1(
    lab_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find = kb.Go.find
    monkeypatch.setattr(kb.Go, "find", classmethod(lambda cls, candidates=None: find([])))
    assert kb.main(["build", "--version", "v1.36.3", "--arch", "amd64"]) == 1
    assert "Go is not installed" in capsys.readouterr().err
    assert not (kb.mirror_root()).exists()


def test_no_temporary_files_survive_a_failed_table_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        checksums.write_table(tmp_path / "t.yaml", {"v1.36.3": {"amd64": {"kubelet": HEX_A}}})
    assert list(tmp_path.iterdir()) == []


def test_artifact_pairs_the_url_with_the_tables_sum() -> None:
    table = {"v1.36.3": {"amd64": {"kubectl": HEX_A}}}
    assert checksums.artifact(table, "http://198.18.0.1:8080/release", "v1.36.3", "amd64", "kubectl") == (
        "http://198.18.0.1:8080/release/v1.36.3/bin/linux/amd64/kubectl",
        HEX_A,
    )
    with pytest.raises(ChecksumError, match="no sha256 for kubelet"):
        checksums.artifact(table, checksums.UPSTREAM_KUBERNETES_BASE_URL, "v1.36.3", "amd64", "kubelet")
