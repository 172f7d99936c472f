"""Build the real Kubernetes binaries from the Go module proxy, cache them, and publish them on the lab mirror.

No Kubernetes download site answers from the lab's machines, but k8s.io/kubernetes is a Go module. A small
generated go.mod requires ``k8s.io/kubernetes`` at the pinned release tag and replaces each staging module
(``k8s.io/api``, ``k8s.io/client-go``, ...: upstream points them at ``./staging/src/...``, which a
dependency cannot use) with its published ``v0.<minor>.<patch>`` release. ``go build`` of
``k8s.io/kubernetes/cmd/<name>`` then gives the same programs as the upstream release, built the way
upstream's ``hack/lib/golang.sh`` builds them: ``-trimpath``, tags ``selinux,notest,grpcnotrace``,
``-s -w``, the version variables set by ``-ldflags -X`` (so ``kubelet --version`` prints the tag), and
``CGO_ENABLED=0`` for the binaries upstream builds static (all of these but kubelet).

Layout (all outside the repository):

- cache: ``$SPECTRA_LAB_CACHE/kubernetes/<version>/<os>/<arch>/<binary>`` (default ``/var/cache/spectra-lab``)
  with ``build.json`` recording sums, sizes, build times, the Go version and the module cache used; the
  generated module lives in ``.../kubernetes/<version>/module/``.
- mirror: ``$SPECTRA_LAB_DIR/mirror/release/<version>/bin/<os>/<arch>/<binary>`` and ``<binary>.sha256``
  (just the hex digest), the upstream download layout.
- lab checksum table: ``$SPECTRA_LAB_DIR/checksums/kubernetes.yaml`` (lab-built sums differ from upstream's).

CLI::

    python -m lab.kubernetes_build build [--version vX.Y.Z] [--arch amd64] [--force] [--no-publish]
    python -m lab.kubernetes_build publish [--version vX.Y.Z]
    python -m lab.kubernetes_build sums --version vX.Y.Z (--from-mirror [ROOT] | --from-url BASE) [--table PATH]
    python -m lab.kubernetes_build paths [--version vX.Y.Z]

``sums`` fills the lab's table from the lab mirror: its files, or over HTTP the way a deploy downloads
(``--from-url``, read by the production reader :mod:`deploys.checksums.upstream`). The production table is
written by ``spectra checksums kubernetes``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploys.checksums import (
    KUBERNETES_BINARIES,
    KUBERNETES_TABLE,
    ChecksumError,
    load_table,
    parse_sha256_file,
    upstream,
    with_entries,
    write_table,
)

# v1.36.3: the newest patch of the newest minor but one that the module proxy serves here (v1.37.2 is the
# newest). 1.35 and later default failCgroupV1 to true but still run on cgroup v1 hosts (the lab's) when
# the kubelet configuration sets failCgroupV1: false; 1.36.3 checks exactly that in
# pkg/kubelet/apis/config/validation/validation_linux.go. Its Go requirement (go 1.26.0) is met by the
# machine's Go 1.26, its staging modules v0.36.3 are served, and its upstream kubectl sum is published.
DEFAULT_VERSION = "v1.36.3"
DEFAULT_OS = "linux"

# What production installs, so what the lab builds.
BINARIES = KUBERNETES_BINARIES
# From upstream's hack/lib/golang.sh (KUBE_STATIC_BINARIES): built with CGO_ENABLED=0. kubelet is not in
# that list: upstream builds it natively with cgo (dynamically linked against glibc).
STATIC_BINARIES = frozenset(BINARIES) - {"kubelet"}
# From hack/lib/golang.sh for non-debug builds.
BUILD_TAGS = "selinux,notest,grpcnotrace"
MODULE = "k8s.io/kubernetes"
BUILD_MODULE_NAME = "spectra.lab/kubernetes-build"

_STAGING_REPLACE_RE = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[A-Za-z0-9._/-]+)\s+=>\s+\./staging/src/(\S+)\s*$")
_GO_DIRECTIVE_RE = re.compile(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$")
_GODEBUG_LINE_RE = re.compile(r"^godebug\s+\S+=\S+\s*$")


class BuildError(Exception):
    """A failure the user can act on: printed without a traceback, exit status 1."""


# ---------------------------------------------------------------------------------------------------------
# Versions, paths and the generated module


def parse_version(version: str) -> tuple[int, int, int]:
    try:
        return upstream.check_kubernetes_version(version)
    except ChecksumError as exc:
        raise BuildError(str(exc)) from None


def staging_version(version: str) -> str:
    """Staging modules are tagged v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>."""
    _, minor, patch = parse_version(version)
    return f"v0.{minor}.{patch}"


def cache_root() -> Path:
    return Path(os.environ.get("SPECTRA_LAB_CACHE", "/var/cache/spectra-lab")) / "kubernetes"


def lab_dir() -> Path:
    return Path(os.environ.get("SPECTRA_LAB_DIR", "/var/lib/spectra-lab"))


def mirror_root() -> Path:
    return lab_dir() / "mirror"


def lab_table_path() -> Path:
    return lab_dir() / "checksums" / "kubernetes.yaml"


def cache_dir(version: str, arch: str, os_name: str = DEFAULT_OS, root: Path | None = None) -> Path:
    parse_version(version)
    return (root or cache_root()) / version / os_name / arch


def module_dir(version: str, root: Path | None = None) -> Path:
    parse_version(version)
    return (root or cache_root()) / version / "module"


def mirror_path(root: Path, version: str, arch: str, binary: str, os_name: str = DEFAULT_OS) -> Path:
    """``<root>/release/<version>/bin/<os>/<arch>/<binary>``: the upstream download site's layout."""
    parse_version(version)
    return root / "release" / version / "bin" / os_name / arch / binary


def staging_modules(upstream_go_mod: str) -> list[str]:
    """The modules upstream replaces with ``./staging/src/...`` directories, in file order."""
    modules: list[str] = []
    for line in upstream_go_mod.splitlines():
        match = _STAGING_REPLACE_RE.match(line.split(" //", 1)[0])
        if match and match.group(1) not in modules:
            modules.append(match.group(1))
    return modules


def go_directive(upstream_go_mod: str) -> str:
    for line in upstream_go_mod.splitlines():
        match = _GO_DIRECTIVE_RE.match(line.strip())
        if match:
            return match.group(1)
    raise BuildError("the upstream go.mod has no `go` directive")


def godebug_lines(upstream_go_mod: str) -> list[str]:
    """Upstream's ``godebug`` settings: only the main module's apply, so the build module repeats them."""
    return [line.strip() for line in upstream_go_mod.splitlines() if _GODEBUG_LINE_RE.match(line.strip())]


def render_go_mod(version: str, upstream_go_mod: str) -> str:
    """The build module's go.mod: require k8s.io/kubernetes at the tag, replace each staging module."""
    modules = staging_modules(upstream_go_mod)
    if not modules:
        raise BuildError(f"the go.mod of {MODULE}@{version} names no staging modules; is it a release tag?")
    staged = staging_version(version)
    width = max(len(module) for module in modules)
    lines = [
        "// Generated by lab/kubernetes_build.py: builds the release binaries of",
        f"// {MODULE}@{version} from the Go module proxy. Do not edit.",
        f"module {BUILD_MODULE_NAME}",
        "",
        f"go {go_directive(upstream_go_mod)}",
        "",
    ]
    godebug = godebug_lines(upstream_go_mod)
    if godebug:
        lines += [*godebug, ""]
    lines += [f"require {MODULE} {version}", "", "replace ("]
    lines += [f"\t{module.ljust(width)} => {module} {staged}" for module in modules]
    lines += [")", ""]
    return "\n".join(lines)


def ldflags(version: str, build_date: str, git_commit: str | None = None) -> str:
    """The ``-ldflags`` upstream's hack/lib/version.sh passes: version variables, then ``-s -w``."""
    _, minor, _ = parse_version(version)
    values = {"buildDate": build_date, "gitVersion": version, "gitMajor": "1", "gitMinor": str(minor)}
    if git_commit:
        values.update(gitCommit=git_commit, gitTreeState="clean")
    flags = [
        f"-X '{package}.{key}={value}'"
        for key, value in values.items()
        for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
    ]
    return "all=" + " ".join(flags) + " -s -w"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# ---------------------------------------------------------------------------------------------------------
# Go


@dataclass
class Go:
    path: str

    @classmethod
    def find(cls, candidates: Sequence[str | None] | None = None) -> Go:
        if candidates is None:
            candidates = [
                os.environ.get("SPECTRA_GO"),
                shutil.which("go"),
                "/usr/local/go/bin/go",
                "/usr/lib/go/bin/go",
            ]
        for candidate in candidates:
            if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
                return cls(candidate)
        raise BuildError(
            "Go is not installed (no `go` on PATH, /usr/local/go/bin/go or $SPECTRA_GO); building Kubernetes "
            "needs the Go version its go.mod names (1.26 for v1.36)"
        )

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        nice: bool = True,
        what: str,
    ) -> subprocess.CompletedProcess[str]:
        command = [self.path, *args]
        if nice and shutil.which("nice"):
            command = ["nice", "-n", "19", *command]
        full_env = {**os.environ, **(env or {})}
        result = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            raise BuildError(f"{what} failed (go exited {result.returncode}):\n{output}")
        return result

    def env_value(self, name: str) -> str:
        return self.run(["env", name], cwd=Path("/"), nice=False, what=f"go env {name}").stdout.strip()

    def version(self) -> str:
        return self.run(["version"], cwd=Path("/"), nice=False, what="go version").stdout.strip()


def download_upstream_module(go: Go, version: str, work: Path) -> dict[str, Any]:
    """``go mod download -json k8s.io/kubernetes@<version>``; go's own error text on refusal."""
    work.mkdir(parents=True, exist_ok=True)
    command = [go.path, "mod", "download", "-json", f"{MODULE}@{version}"]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True)
    info: dict[str, Any] = {}
    if result.stdout.strip():
        try:
            info = json.loads(result.stdout)
        except json.JSONDecodeError:
            info = {}
    if result.returncode != 0 or info.get("Error"):
        message = info.get("Error") or (result.stderr or result.stdout).strip()
        raise BuildError(f"the Go module proxy did not give {MODULE}@{version}:\n{message}")
    if not info.get("GoMod"):
        raise BuildError(f"go mod download gave no go.mod for {MODULE}@{version}: {result.stdout.strip()}")
    return info


def release_time(info: Mapping[str, Any]) -> str:
    """The tag's time from the proxy (``.info``) as upstream's buildDate format: reproducible builds."""
    stamp = str(info.get("Time") or "")
    try:
        info_file = Path(str(info["Info"]))
        stamp = json.loads(info_file.read_text()).get("Time", stamp)
    except (KeyError, OSError, json.JSONDecodeError):
        pass
    match = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})", stamp)
    return f"{match.group(1)}Z" if match else "1970-01-01T00:00:00Z"


def prepare_module(go: Go, version: str, directory: Path) -> tuple[dict[str, Any], str]:
    """Write the build module's go.mod and resolve go.sum for all binaries. Returns (module info, go.mod)."""
    info = download_upstream_module(go, version, directory)
    upstream = Path(info["GoMod"]).read_text()
    text = render_go_mod(version, upstream)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "go.mod").write_text(text)
    (directory / "go.mod.generated").write_text(text)  # `go get` rewrites go.mod; keep what was generated
    (directory / "go.sum").unlink(missing_ok=True)
    packages = [f"{MODULE}/cmd/{binary}@{version}" for binary in BINARIES]
    go.run(["get", *packages], cwd=directory, what=f"resolving the modules of {MODULE}@{version} (go get)")
    return info, text


# ---------------------------------------------------------------------------------------------------------
# Build and cache


@dataclass
class BinaryRecord:
    sha256: str
    size: int
    seconds: float | None
    cgo: bool


@dataclass
class BuildResult:
    version: str
    arch: str
    directory: Path
    binaries: dict[str, BinaryRecord] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)
    total_seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> bool:
        return not self.built


def read_manifest(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / "build.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_binaries(directory: Path, binaries: Iterable[str] = BINARIES) -> dict[str, str]:
    """Binaries whose cached file exists and whose sha256 matches the one recorded when it was built."""
    recorded = read_manifest(directory).get("binaries", {})
    valid: dict[str, str] = {}
    for binary in binaries:
        path = directory / binary
        want = recorded.get(binary, {}).get("sha256") if isinstance(recorded.get(binary), dict) else None
        if want and path.is_file() and sha256_file(path) == want:
            valid[binary] = want
    return valid


def build(
    version: str = DEFAULT_VERSION,
    arch: str | None = None,
    *,
    force: bool = False,
    root: Path | None = None,
    log: Any = None,
) -> BuildResult:
    """Build whichever binaries are missing from the cache (or all, with ``force``), one at a time."""
    parse_version(version)
    arch = arch or host_arch()
    say = log or (lambda message: print(f"kubernetes_build: {message}", file=sys.stderr, flush=True))
    directory = cache_dir(version, arch, root=root)
    valid = {} if force else cached_binaries(directory)
    missing = [binary for binary in BINARIES if binary not in valid]
    previous = read_manifest(directory)
    result = BuildResult(version=version, arch=arch, directory=directory)
    if not missing:
        say(f"{version} linux/{arch}: all {len(BINARIES)} binaries cached in {directory} (sums match)")
        for binary in BINARIES:
            entry = previous["binaries"][binary]
            result.binaries[binary] = BinaryRecord(
                entry["sha256"], int(entry["size"]), entry.get("seconds"), bool(entry.get("cgo"))
            )
        result.manifest = previous
        return result

    go = Go.find()
    native = arch == host_arch()
    started = time.monotonic()
    workdir = module_dir(version, root=root)
    say(f"{version}: preparing the build module in {workdir} (go mod download, go get)")
    info, _ = prepare_module(go, version, workdir)
    prepare_seconds = round(time.monotonic() - started, 1)
    build_date = release_time(info)
    flags = ldflags(version, build_date)
    directory.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {
        name: entry for name, entry in previous.get("binaries", {}).items() if name in valid
    }
    # Each build run is kept in the record: a later partial rebuild does not hide the first full build's times.
    run: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prepare_seconds": prepare_seconds,
        "built": {},
        "total_seconds": None,
    }
    history = [entry for entry in previous.get("history", []) if isinstance(entry, dict)]

    def record() -> dict[str, Any]:
        run["total_seconds"] = round(time.monotonic() - started, 1)
        return _write_manifest(directory, version, arch, go, info, flags, build_date, records, [*history, run])

    for binary in missing:
        cgo = binary not in STATIC_BINARIES and native
        env = {"GOOS": DEFAULT_OS, "GOARCH": arch, "CGO_ENABLED": "1" if cgo else "0"}
        tmp = directory / f".{binary}.building"
        say(f"{version} linux/{arch}: building {binary} (CGO_ENABLED={env['CGO_ENABLED']}, nice 19)")
        began = time.monotonic()
        try:
            go.run(
                ["build", "-trimpath", f"-tags={BUILD_TAGS}", f"-ldflags={flags}", "-o", str(tmp),
                 f"{MODULE}/cmd/{binary}"],
                cwd=workdir,
                env=env,
                what=f"go build of {binary} {version}",
            )  # fmt: skip
            os.chmod(tmp, 0o755)
            os.replace(tmp, directory / binary)
        finally:
            tmp.unlink(missing_ok=True)
        seconds = round(time.monotonic() - began, 1)
        path = directory / binary
        records[binary] = {"sha256": sha256_file(path), "size": path.stat().st_size, "seconds": seconds, "cgo": cgo}
        say(f"  {binary}: {seconds} s, {records[binary]['size']} bytes, sha256 {records[binary]['sha256']}")
        run["built"][binary] = seconds
        record()  # after each binary, so an interrupted build keeps what it finished
        _atomic_write_text(directory / f"{binary}.sha256", records[binary]["sha256"])
    result.manifest = record()
    result.total_seconds = float(run["total_seconds"])
    result.built = missing
    for binary in BINARIES:
        entry = records[binary]
        result.binaries[binary] = BinaryRecord(entry["sha256"], entry["size"], entry.get("seconds"), entry["cgo"])
    say(f"{version} linux/{arch}: built {', '.join(missing)} in {result.total_seconds} s")
    return result


def _write_manifest(
    directory: Path,
    version: str,
    arch: str,
    go: Go,
    info: Mapping[str, Any],
    flags: str,
    build_date: str,
    records: Mapping[str, Any],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    manifest = {
        "version": version,
        "os": DEFAULT_OS,
        "arch": arch,
        "module": f"{MODULE}@{version}",
        "module_sum": info.get("Sum"),
        "go": go.version(),
        "gomodcache": go.env_value("GOMODCACHE"),
        "gocache": go.env_value("GOCACHE"),
        "tags": BUILD_TAGS,
        "ldflags": flags,
        "build_date": build_date,
        "binaries": {name: records[name] for name in BINARIES if name in records},
        "history": history,
    }
    _atomic_write_text(directory / "build.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------------------
# Publish


def _copy_atomic(source: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_binary(source: Path, sha256: str, dest: Path) -> bool:
    """Put ``source`` at ``dest`` and its digest at ``dest.sha256``, each atomically. True if anything changed.

    A destination that already holds the same bytes and digest is left alone (idempotent). The binary is
    replaced before its ``.sha256``: a reader in between sees a mismatch and refuses, never a wrong match.
    """
    if sha256_file(source) != sha256:
        raise BuildError(f"{source} does not match its recorded sha256 {sha256}; rebuild with --force")
    sum_file = dest.with_name(dest.name + ".sha256")
    changed = False
    if not (dest.is_file() and sha256_file(dest) == sha256):
        _copy_atomic(source, dest, 0o755)
        changed = True
    try:
        current = sum_file.read_text()
    except FileNotFoundError:
        current = None
    if current != sha256:
        _atomic_write_text(sum_file, sha256)
        changed = True
    return changed


def publish(result_or_dir: BuildResult | Path, version: str, arch: str, mirror: Path | None = None) -> dict[str, bool]:
    """Publish cached binaries into the mirror layout. Returns binary -> whether it changed."""
    directory = result_or_dir.directory if isinstance(result_or_dir, BuildResult) else result_or_dir
    recorded = cached_binaries(directory)
    missing = [binary for binary in BINARIES if binary not in recorded]
    if missing:
        raise BuildError(
            f"cannot publish {version} linux/{arch}: {', '.join(missing)} not built (or not matching "
            f"{directory / 'build.json'}); run `python -m lab.kubernetes_build build --version {version}`"
        )
    root = mirror or mirror_root()
    return {
        binary: publish_binary(directory / binary, recorded[binary], mirror_path(root, version, arch, binary))
        for binary in BINARIES
    }


# ---------------------------------------------------------------------------------------------------------
# Checksum tables


def publish_to_lab(
    state_dir: Path, version: str = DEFAULT_VERSION, arch: str | None = None, log: Any = None
) -> dict[str, str]:
    """Build ``version`` (or take it from the cache), publish it on the mirror of the lab in ``state_dir`` and
    record its sums in that lab's table: what ``python -m lab up`` does, so a deploy finds the binaries."""
    arch = arch or host_arch()
    result = build(version, arch, log=log)
    publish(result, version, arch, state_dir / "mirror")
    sums = {binary: record.sha256 for binary, record in result.binaries.items()}
    record_sums(state_dir / "checksums" / "kubernetes.yaml", version, arch, sums)
    return sums


def sums_from_served_mirror(
    base_url: str, version: str, arch: str, binaries: Iterable[str] = BINARIES
) -> dict[str, str]:
    """The mirror's ``.sha256`` files read over its URL, by the reader production uses on upstream's site."""
    try:
        return upstream.kubernetes_sums(base_url, version, [arch], binaries)[version][arch]
    except ChecksumError as exc:
        raise BuildError(str(exc)) from None


def sums_from_mirror(root: Path, version: str, arch: str, binaries: Iterable[str] = BINARIES) -> dict[str, str]:
    """The mirror's own ``.sha256`` files, each checked against the binary beside it."""
    sums: dict[str, str] = {}
    for binary in binaries:
        path = mirror_path(root, version, arch, binary)
        sum_file = path.with_name(path.name + ".sha256")
        try:
            digest = parse_sha256_file(sum_file.read_text(), str(sum_file), binary)
        except FileNotFoundError:
            raise BuildError(f"{sum_file} does not exist: publish {version} first") from None
        except ChecksumError as exc:
            raise BuildError(str(exc)) from exc
        if not path.is_file() or sha256_file(path) != digest:
            raise BuildError(f"{path} is missing or does not match {sum_file}")
        sums[binary] = digest
    return sums


def record_sums(table_path: Path, version: str, arch: str, sums: Mapping[str, str]) -> bool:
    """Write the lab's own sums into a table (a rebuild replaces them: lab sums are not upstream's)."""
    try:
        table = with_entries(load_table(table_path), version, arch, sums)
        return write_table(table_path, table)
    except ChecksumError as exc:
        raise BuildError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.kubernetes_build", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--version", default=DEFAULT_VERSION, help=f"release tag (default {DEFAULT_VERSION})")
        sub.add_argument("--arch", default=None, help="architecture (default: this machine's)")

    build_cmd = commands.add_parser("build", help="build (unless cached), publish on the mirror, write the lab table")
    common(build_cmd)
    build_cmd.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    build_cmd.add_argument("--no-publish", action="store_true", help="only build and cache")
    build_cmd.add_argument("--mirror", type=Path, help="mirror root (default $SPECTRA_LAB_DIR/mirror)")
    build_cmd.add_argument("--table", type=Path, help="lab checksum table (default $SPECTRA_LAB_DIR/checksums/...)")

    publish_cmd = commands.add_parser("publish", help="publish cached binaries on the mirror")
    common(publish_cmd)
    publish_cmd.add_argument("--mirror", type=Path, help="mirror root (default $SPECTRA_LAB_DIR/mirror)")

    sums_cmd = commands.add_parser(
        "sums", help="write the lab mirror's sums into the lab table (production: `spectra checksums kubernetes`)"
    )
    common(sums_cmd)
    source = sums_cmd.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-mirror", metavar="ROOT", nargs="?", const="", help="the lab mirror (default $SPECTRA_LAB_DIR/mirror)"
    )
    source.add_argument("--from-url", metavar="BASE", help="the mirror served over HTTP, e.g. http://HOST:8080/release")
    sums_cmd.add_argument(
        "--table", type=Path, help="table to write (default $SPECTRA_LAB_DIR/checksums/kubernetes.yaml)"
    )
    sums_cmd.add_argument("--binary", action="append", choices=BINARIES, help="only these binaries (repeatable)")

    paths_cmd = commands.add_parser("paths", help="print the cache, module, mirror and table paths")
    common(paths_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        parse_version(args.version)
        arch = args.arch or host_arch()
        if args.command == "build":
            result = build(args.version, arch, force=args.force)
            for binary, record in result.binaries.items():
                seconds = "cached" if binary not in result.built else f"{record.seconds} s"
                print(f"{binary}\t{record.size}\t{record.sha256}\t{seconds}")
            if result.built:
                print(f"total\t{result.total_seconds} s")
            if not args.no_publish:
                mirror = args.mirror or mirror_root()
                changed = publish(result, args.version, arch, mirror)
                print(f"published to {mirror_path(mirror, args.version, arch, '')}: "
                      f"{sum(changed.values())} changed, {len(changed) - sum(changed.values())} unchanged")  # fmt: skip
                table = args.table or lab_table_path()
                sums = {binary: record.sha256 for binary, record in result.binaries.items()}
                wrote = record_sums(table, args.version, arch, sums)
                print(f"lab checksum table {table}: {'updated' if wrote else 'unchanged'}")
        elif args.command == "publish":
            mirror = args.mirror or mirror_root()
            changed = publish(cache_dir(args.version, arch), args.version, arch, mirror)
            print(f"published to {mirror_path(mirror, args.version, arch, '')}: {sum(changed.values())} changed")
        elif args.command == "sums":
            binaries = args.binary or BINARIES
            if args.from_url is not None:
                sums = sums_from_served_mirror(args.from_url, args.version, arch, binaries)
            else:
                root = Path(args.from_mirror) if args.from_mirror else mirror_root()
                sums = sums_from_mirror(root, args.version, arch, binaries)
            table = args.table or lab_table_path()
            wrote = record_sums(table, args.version, arch, sums)
            for binary, digest in sums.items():
                print(f"{binary}\t{digest}")
            print(f"{table}: {'updated' if wrote else 'unchanged'}")
        elif args.command == "paths":
            print(f"cache\t{cache_dir(args.version, arch)}")
            print(f"module\t{module_dir(args.version)}")
            print(f"mirror\t{mirror_path(mirror_root(), args.version, arch, '')}")
            print(f"lab_table\t{lab_table_path()}")
            print(f"upstream_table\t{KUBERNETES_TABLE}")
    except BuildError as exc:
        print(f"kubernetes_build: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
