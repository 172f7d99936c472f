"""Artifacts the lab mirror serves in place of upstream download sites that cannot be reached here.

Each artifact is built from its real source through the Go module proxy at the version the deploys pin,
cached outside the repository keyed by version, and published under the same path as upstream. The lab
writes the sha256 sums of its own builds to `$SPECTRA_LAB_DIR/checksums.json`; `group_data/lab.py` reads
them, so the deploys take the one download-and-verify path with lab data instead of upstream data.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from lab.config import LabConfig, LabError
from lab.mirror import mirror_root
from lab.shell import log

ARCH = "amd64"


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise LabError("Go is needed to build the lab's artifacts: apt-get install golang-go")
    return go


def go_install(module: str, version: str, out_dir: Path, ldflags: str) -> Path:
    """`go install module@version` as a static linux/amd64 binary into out_dir; returns the binary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=ARCH, GOBIN=str(out_dir))
    started = time.monotonic()
    result = subprocess.run(
        ["nice", "-n", "10", _go(), "install", "-trimpath", f"-ldflags={ldflags}", f"{module}@{version}"],
        env=env,
        capture_output=True,
        text=True,
        cwd=out_dir,
    )
    if result.returncode != 0:
        raise LabError(f"go install {module}@{version} failed:\n{result.stderr.strip()[-3000:]}")
    log(f"built {module}@{version} in {time.monotonic() - started:.0f} s")
    return out_dir / module.rstrip("/").split("/")[-1]


def _tar_gz(members: dict[str, tuple[bytes, int]], directories: list[str]) -> bytes:
    raw = io.BytesIO()
    # mtime 0 and fixed owners make the tarball depend on its contents only.
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in directories:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, (data, mode) in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _publish(path: Path, data: bytes) -> None:
    """Write a mirror file atomically, leaving it alone when the content is already there."""
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def node_exporter(config: LabConfig, version: str) -> dict[str, str]:
    """Build node_exporter and publish it like its GitHub release. Returns {arch: tarball sha256}."""
    cache = config.cache_dir / "artifacts" / "node_exporter" / version / ARCH
    tarball_name = f"node_exporter-{version}.linux-{ARCH}.tar.gz"
    tarball = cache / tarball_name
    if not tarball.exists():
        ldflags = " ".join(
            [
                "-s -w",
                f"-X github.com/prometheus/common/version.Version={version}",
                "-X github.com/prometheus/common/version.Revision=spectra-lab-build",
                "-X github.com/prometheus/common/version.Branch=HEAD",
                "-X github.com/prometheus/common/version.BuildUser=spectra-lab",
            ]
        )
        binary = go_install("github.com/prometheus/node_exporter", f"v{version}", cache / "bin", ldflags)
        top = f"node_exporter-{version}.linux-{ARCH}"
        notice = b"Built by the Spectra lab from the node_exporter Go module at this version (Apache-2.0).\n"
        data = _tar_gz(
            {f"{top}/node_exporter": (binary.read_bytes(), 0o755), f"{top}/NOTICE": (notice, 0o644)},
            [top],
        )
        tmp = tarball.with_name(tarball_name + ".tmp")
        tmp.write_bytes(data)
        tmp.rename(tarball)
    data = tarball.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    release = mirror_root(config) / "prometheus" / "node_exporter" / "releases" / "download" / f"v{version}"
    _publish(release / tarball_name, data)
    _publish(release / "sha256sums.txt", f"{digest}  {tarball_name}\n".encode())
    return {ARCH: digest}


# etcd: the root module go.etcd.io/etcd/v3 replaces its submodules with local directories, so
# `go install go.etcd.io/etcd/v3@vX` is refused. A generated module requires the three published
# submodules at one version instead, and each command's main package calls the entry point upstream's
# main.go calls (etcd's root main.go: etcdmain.Main(os.Args); etcdctl/main.go: ctlv3.MustStart();
# etcdutl/main.go + ctl.go: a cobra root command with the etcdutl package's commands).
ETCD_MODULES = ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3", "go.etcd.io/etcd/etcdutl/v3")
ETCD_COMMANDS = ("etcd", "etcdctl", "etcdutl")
# Upstream's scripts/build_lib.sh sets the git SHA (the version itself is a constant in api/v3/version).
# The module proxy does not give the commit, so the lab build says where it came from instead.
ETCD_GIT_SHA = "spectra-lab-module-proxy-build"

_ETCD_MAINS = {
    "etcd": """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
\tetcdmain.Main(os.Args)
}
""",
    "etcdctl": """package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() {
\tctlv3.MustStart()
}
""",
    "etcdutl": """package main

import (
\t"github.com/spf13/cobra"

\t"go.etcd.io/etcd/etcdutl/v3/etcdutl"
\t"go.etcd.io/etcd/pkg/v3/cobrautl"
)

func main() {
\tcobra.EnablePrefixMatching = true
\troot := &cobra.Command{
\t\tUse:        "etcdutl",
\t\tShort:      "An administrative command line tool for etcd3.",
\t\tSuggestFor: []string{"etcdutl"},
\t}
\troot.PersistentFlags().StringVarP(&etcdutl.OutputFormat, "write-out", "w", "simple",
\t\t"set the output format (fields, json, protobuf, simple, table)")
\troot.AddCommand(
\t\tetcdutl.NewDefragCommand(),
\t\tetcdutl.NewSnapshotCommand(),
\t\tetcdutl.NewHashKVCommand(),
\t\tetcdutl.NewVersionCommand(),
\t\tetcdutl.NewCompletionCommand(),
\t\tetcdutl.NewMigrateCommand(),
\t)
\troot.SetHelpTemplate(`{{.UsageString}}`)
\tif err := root.Execute(); err != nil {
\t\tcobrautl.ExitWithError(cobrautl.ExitError, err)
\t}
}
""",
}


def etcd_module_files(version: str) -> dict[str, str]:
    """The generated build module: go.mod requiring the three submodules at ``version``, one main each."""
    tag = f"v{version}"
    requires = "".join(f"\t{module} {tag}\n" for module in ETCD_MODULES)
    files = {
        "go.mod": (
            "// Generated by lab/artifacts.py: builds etcd, etcdctl and etcdutl at one version. Do not edit.\n"
            f"module spectra.lab/etcd-build\n\ngo 1.26.0\n\nrequire (\n{requires})\n"
        )
    }
    for command in ETCD_COMMANDS:
        files[f"cmd/{command}/main.go"] = _ETCD_MAINS[command]
    return files


def etcd_ldflags() -> str:
    return f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_GIT_SHA}"


def build_etcd(cache: Path, version: str) -> dict[str, Any]:
    """Build the three commands static into ``cache/bin``; returns the build record (seconds, Go)."""
    module = cache / "module"
    for name, text in etcd_module_files(version).items():
        path = module / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = dict(os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=ARCH, GOTOOLCHAIN="local", GOFLAGS="-mod=mod")
    started = time.monotonic()
    steps = [
        ["mod", "tidy"],
        ["build", "-trimpath", f"-ldflags={etcd_ldflags()}", "-o", str(cache / "bin") + "/", "./cmd/..."],
    ]
    (cache / "bin").mkdir(parents=True, exist_ok=True)
    for args in steps:
        result = subprocess.run(["nice", "-n", "10", _go(), *args], env=env, capture_output=True, text=True, cwd=module)
        if result.returncode != 0:
            raise LabError(f"etcd {version}: go {' '.join(args[:2])} failed:\n{result.stderr.strip()[-3000:]}")
    seconds = round(time.monotonic() - started, 1)
    go_version = subprocess.run([_go(), "version"], capture_output=True, text=True).stdout.strip()
    log(f"built etcd {version} (etcd, etcdctl, etcdutl) in {seconds:.0f} s")
    return {"version": version, "seconds": seconds, "go": go_version, "ldflags": etcd_ldflags()}


def _build_etcd_tarball(cache: Path, version: str, top: str, tarball: Path) -> None:
    record = build_etcd(cache, version)
    notice = b"Built by the Spectra lab from the etcd Go modules at this version (Apache-2.0).\n"
    members = {f"{top}/{name}": ((cache / "bin" / name).read_bytes(), 0o755) for name in ETCD_COMMANDS}
    members[f"{top}/NOTICE"] = (notice, 0o644)
    data = _tar_gz(members, [top])
    record["sha256"] = hashlib.sha256(data).hexdigest()
    (cache / "build.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp = tarball.with_name(tarball.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(tarball)


def etcd(config: LabConfig, version: str) -> dict[str, str]:
    """Build etcd and publish it like its GitHub release. Returns {arch: tarball sha256}.

    Cache: ``<cache>/etcd/<version>/`` (module/, bin/, the tarball, build.json). Mirror:
    ``etcd-io/etcd/releases/download/v<version>/etcd-v<version>-linux-<arch>.tar.gz`` with its top
    directory ``etcd-v<version>-linux-<arch>/`` holding etcd, etcdctl and etcdutl, and SHA256SUMS.
    """
    cache = config.cache_dir / "etcd" / version
    top = f"etcd-v{version}-linux-{ARCH}"
    tarball_name = f"{top}.tar.gz"
    tarball = cache / tarball_name
    cache.mkdir(parents=True, exist_ok=True)
    # Labs side by side share the cache: one builds, the others wait for its tarball.
    with open(cache.parent / f"{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _build_etcd_tarball(cache, version, top, tarball)
    data = tarball.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    release = mirror_root(config) / "etcd-io" / "etcd" / "releases" / "download" / f"v{version}"
    _publish(release / tarball_name, data)
    _publish(release / "SHA256SUMS", f"{digest}  {tarball_name}\n".encode())
    return {ARCH: digest}


def pinned_versions() -> dict[str, str]:
    """The versions the deploys pin: the lab builds exactly these."""
    from deploys.components import etcd as etcd_component
    from deploys.components import node_exporter as node_exporter_component

    return {
        "node_exporter": str(node_exporter_component.DEFAULTS["node_exporter_version"]),
        "etcd": str(etcd_component.DEFAULTS["etcd_version"]),
    }


def publish_all(config: LabConfig) -> dict[str, Any]:
    """Build (or take from cache) every lab artifact, publish it, and write the lab's checksum table."""
    versions = pinned_versions()
    sums: dict[str, Any] = {
        "node_exporter": {versions["node_exporter"]: node_exporter(config, versions["node_exporter"])},
        "etcd": {versions["etcd"]: etcd(config, versions["etcd"])},
    }
    checksums = config.state_dir / "checksums.json"
    text = json.dumps(sums, indent=2, sort_keys=True) + "\n"
    if not checksums.exists() or checksums.read_text() != text:
        tmp = checksums.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(checksums)
    return sums
