"""Programs the lab tests run on the nodes (not images, not deployed by the toolkit), built from their Go modules.

kube-bench: the CIS benchmark checker. No release download answers here, but its Go module is served at the
exact version (not its version list), with the benchmark definitions (``cfg/``) inside the module zip. It is
built the way upstream's makefile builds it (``CGO_ENABLED=0``, the version set with ``-ldflags -X``) and
cached with its ``cfg/`` beside it, so a lab test copies both to a node.

Cache: ``<SPECTRA_LAB_CACHE>/tools/kube-bench/<version>/`` (default ``/var/cache/spectra-lab``), outside the
repository: ``bin/kube-bench``, ``cfg/`` (upstream's, untouched) and ``build.json`` (seconds, size, sha256,
Go version). The build shares the machine's one Go module and build cache; labs side by side share the
cache under a lock. Our layout (unit files, binaries, PKI paths) is told to it by the repository's
``compliance/kube-bench/`` overlay, which the lab test lays over the cached ``cfg/`` on the node.

CLI: ``python -m lab.tools kube-bench`` prints the cached binary's path (building it on a miss).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.artifacts import ARCH, _go
from lab.config import LabError
from lab.shell import log

KUBE_BENCH_MODULE = "github.com/aquasecurity/kube-bench"
# The newest release the module proxy serves here; its cfg/ has the CIS Kubernetes 1.12 benchmark.
KUBE_BENCH_VERSION = "v0.15.6"
# The benchmark version the lab runs (cfg/cis-1.12) and its targets per role.
KUBE_BENCH_BENCHMARK = "cis-1.12"
# Where this repository keeps the overrides for our layout (laid over cfg/ on the node).
KUBE_BENCH_OVERLAY = Path(__file__).resolve().parent.parent / "compliance" / "kube-bench"


def cache_root() -> Path:
    return Path(os.environ.get("SPECTRA_LAB_CACHE", "/var/cache/spectra-lab"))


def kube_bench_dir(version: str = KUBE_BENCH_VERSION, root: Path | None = None) -> Path:
    return (root or cache_root()) / "tools" / "kube-bench" / version


def _build_kube_bench(cache: Path, version: str) -> dict[str, Any]:
    work = cache / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    listed = subprocess.run(
        [_go(), "mod", "download", "-json", f"{KUBE_BENCH_MODULE}@{version}"],
        env=dict(os.environ, GOWORK="off"), capture_output=True, text=True, cwd=work,
    )  # fmt: skip
    if listed.returncode != 0:
        raise LabError(f"go mod download {KUBE_BENCH_MODULE}@{version} failed:\n{listed.stdout}{listed.stderr}")
    source = Path(json.loads(listed.stdout)["Dir"])
    binary = cache / "bin" / "kube-bench"
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp_binary = binary.with_name("kube-bench.tmp")
    # upstream's makefile: CGO_ENABLED=0 go build -ldflags "-X .../cmd.KubeBenchVersion=$(version)"
    env = dict(
        os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=ARCH, GOWORK="off", GOFLAGS="-mod=readonly -buildvcs=false"
    )
    ldflags = f"-s -w -X {KUBE_BENCH_MODULE}/cmd.KubeBenchVersion={version}"
    started = time.monotonic()
    # the module cache's copy is read-only, which go build accepts: it writes only to -o and GOCACHE
    result = subprocess.run(
        ["nice", "-n", "10", _go(), "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(tmp_binary), "."],
        env=env, capture_output=True, text=True, cwd=source,
    )  # fmt: skip
    if result.returncode != 0:
        raise LabError(f"go build of {KUBE_BENCH_MODULE}@{version} failed:\n{result.stderr.strip()[-3000:]}")
    seconds = round(time.monotonic() - started, 1)
    cfg = cache / "cfg"
    if cfg.exists():
        shutil.rmtree(cfg)
    shutil.copytree(source / "cfg", cfg)
    for directory, _, files in os.walk(cfg):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(Path(directory) / name, 0o644)
    data = tmp_binary.read_bytes()
    record = {
        "module": f"{KUBE_BENCH_MODULE}@{version}",
        "seconds": seconds,
        "go": subprocess.run([_go(), "version"], capture_output=True, text=True).stdout.strip(),
        "binary_bytes": len(data),
        "binary_sha256": hashlib.sha256(data).hexdigest(),
        "benchmarks": sorted(path.name for path in cfg.iterdir() if path.is_dir()),
    }
    (cache / "build.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp_binary.rename(binary)
    shutil.rmtree(work)
    log(f"built {KUBE_BENCH_MODULE}@{version} in {seconds:.0f} s ({len(data) / 1e6:.1f} MB)")
    return record


def kube_bench_binary(version: str = KUBE_BENCH_VERSION, root: Path | None = None) -> Path:
    """The cached kube-bench binary (its ``cfg/`` is beside it: :func:`kube_bench_cfg`), built on a miss."""
    cache = kube_bench_dir(version, root)
    binary = cache / "bin" / "kube-bench"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (binary.exists() and (cache / "cfg" / KUBE_BENCH_BENCHMARK).is_dir()):
            log(f"building kube-bench from {KUBE_BENCH_MODULE}@{version} (a few minutes the first time)")
            _build_kube_bench(cache, version)
    return binary


def kube_bench_cfg(version: str = KUBE_BENCH_VERSION, root: Path | None = None) -> Path:
    """Upstream's ``cfg/`` directory of the cached build (built on a miss)."""
    return kube_bench_binary(version, root).parent.parent / "cfg"


def kube_bench_record(version: str = KUBE_BENCH_VERSION, root: Path | None = None) -> dict[str, Any]:
    """What the cached build recorded (seconds, size, sha256, Go version), building it first when needed."""
    kube_bench_binary(version, root)
    return dict(json.loads((kube_bench_dir(version, root) / "build.json").read_text()))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["kube-bench"]:
        print("usage: python -m lab.tools kube-bench", file=sys.stderr)
        return 2
    try:
        print(kube_bench_binary())
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
