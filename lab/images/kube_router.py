"""kube-router for the lab registry: its network-policy controller, built from the Go module with patched deps.

The addon (``deploys/components/kube_router.py``) runs ``docker.io/cloudnativelabs/kube-router:<tag>`` with
only the firewall on (``--run-firewall=true --run-router=false --run-service-proxy=false``). The lab builds
that reference itself: the Go module ``github.com/cloudnativelabs/kube-router/v2`` at the tag, main package
``cmd/kube-router``, static (CGO off), ``-trimpath``, stamped as upstream's Makefile does
(``pkg/version.Version`` = the tag, ``pkg/version.BuildDate``: upstream's ``date +%Y-%m-%dT%H:%M:%S%z`` at
build time, here the tag's commit time from the module proxy so that the build is reproducible), and
stripped (``-s -w``) like the lab's other images. The module proxy serves v2.1.0 and no later v2 release
(v2.1.1-v2.1.3, v2.2.0, v2.2.1, v2.3.0, v2.4.0, v2.4.1, v2.5.0 and v2.6.0 were each asked for once: "not
available"), so v2.1.0 is the version.

Dependencies raised. v2.1.0's go.mod pins modules with published advisories, so the build runs in a copy of
the module (as the main module, ``GOWORK=off``), raises them with ``go get module@version`` and ``go mod
tidy``, then builds with ``-mod=readonly``. What was raised, from which version, and why (:data:`RAISES`;
the same list goes into build.json):

- ``golang.org/x/net`` v0.21.0 -> v0.63.0: GO-2024-2687 (CVE-2023-45288, HTTP/2 CONTINUATION flood, fixed in
  v0.23.0), GO-2024-3333 (CVE-2024-45338, html parsing, v0.33.0), GO-2025-3503 (CVE-2025-22870, proxy
  bypass with IPv6 zone ids, v0.36.0), GO-2025-3595 (CVE-2025-22872, html tokenizer, v0.38.0),
  CVE-2025-47911 and CVE-2025-58190 (html parser, v0.45.0), GO-2026-5026 (html parser memory, v0.55.0);
  v0.63.0 is the newest release.
- ``golang.org/x/oauth2`` v0.17.0 -> v0.38.0: GO-2025-3488 (CVE-2025-22868, jws token parsing, v0.27.0).
- ``google.golang.org/grpc`` v1.62.0 -> v1.85.0: GO-2026-4762 (CVE-2026-33186, authorization bypass via a
  ``:path`` without its leading slash, fixed in v1.79.3), GO-2026-6061 (GHSA-hrxh-6v49-42gf, v1.82.1).
- ``google.golang.org/protobuf`` v1.32.0 -> v1.36.12: GO-2024-2611 (CVE-2024-24786, protojson loop, v1.33.0).
- ``github.com/docker/docker`` v25.0.3+incompatible -> v28.5.2+incompatible (the newest on that path):
  CVE-2024-29018 (GHSA-mq39-4gv4-mvpx, DNS from internal networks, v25.0.5), GO-2024-3005 (CVE-2024-41110,
  AuthZ bypass, v25.0.6), GHSA-4vq8-7jfc-9cvp (CVE-2025-54410, firewalld reload drops bridge isolation,
  v28.0.0), GO-2025-3830 (CVE-2025-54388, firewalld reload exposes localhost-published ports, v28.3.3).
- ``github.com/osrg/gobgp/v3`` v3.23.0 -> v3.37.0 (the last v3): GO-2025-3630, GO-2025-3631, GO-2025-3632
  (CVE-2025-43970, -43971, -43972: malformed MRT/BGP/flowspec input panics, fixed in v3.35.0) and
  CVE-2025-43973 (RTR length check, v3.35.0).
- ``go.opentelemetry.io/otel`` v1.24.0 -> v1.47.0 and ``.../otelhttp`` v0.49.0 -> v0.72.0: the docker client
  v28 needs newer ones, and they move together; the SDK advisories (GO-2026-4394 / CVE-2026-24051,
  GHSA-hfvc-g4fc-pqhx) name ``go.opentelemetry.io/otel/sdk``, which v2.1.0's go.mod listed (v1.24.0) but
  the binary does not link: after the raise, tidy drops it.

``go mod tidy`` then moves what those need (x/sys, x/text, x/term, genproto, ...; every change from the
upstream go.mod is in build.json ``changed``) and the go directive to 1.26.0, so Go 1.26 builds it. Left as
they are: k8s.io/* v0.29.2 (no advisory found for api, apimachinery, client-go or cri-api at v0.29.2), logrus
v1.9.3 (GO-2025-4188 is fixed in it), golang.org/x/crypto (not a dependency at all), aws-sdk-go v1.50.30
(GO-2022-0635/-0646 name its s3crypto package, which kube-router does not import, and have no fixed v1).
Still open, no release to move to: docker's GO-2026-4883 and GO-2026-4887 are fixed in moby v29.3.1, not
published under ``github.com/docker/docker`` (daemon-side; kube-router only inspects containers for DSR,
which the lab does not run); gobgp's 2026 advisories (GHSA-p3w2-64xm-833j, GHSA-frrj-87jh-2772,
GHSA-4p9m-8gc4-rw2h) are fixed in v4 only, whose API v2.1.0 does not use (the BGP speaker does not run
with ``--run-router=false``). ``go version -m`` of the binary is recorded (build.json ``go_version_m``,
:func:`module_versions`); the main module shows as ``(devel)`` because the build is from a copy without VCS.

The image. Like upstream's: ``/usr/local/bin/kube-router`` as the entrypoint, run as root, WORKDIR /root,
``hosts: files dns`` in /etc/nsswitch.conf. Upstream's Alpine base brings iptables (with a wrapper that picks
legacy or nft), ipset, iproute2, ipvsadm, conntrack, gobgp, CNI plugins, bash and curl. The lab image has
what the firewall-only controller runs: iptables with the nft backend (what the lab's Debian nodes use:
``iptables``, ``-save``, ``-restore`` and the ``ip6tables`` ones linked to ``xtables-nft-multi``, as Debian's
alternatives choose by default) with its match/target extensions, and ``ipset``, from Debian's packages
(``apt-get download`` with the build host's sources, bookworm here) with exactly the shared libraries their
ELF headers name (ld.so, libc, libm, libxtables, libmnl, libnftnl, libnetfilter_conntrack, libnfnetlink,
libipset), and netbase's /etc/protocols, /etc/services and /etc/ethertypes for names in rules. Not in it:
the legacy backend, ebtables/arptables, ip, ipvsadm, conntrack, gobgp, CNI plugins and a shell (the router
and service proxy that use them are off).

Cache: ``<cache>/images/kube-router/<version>/`` (bin/, debs/, rootfs/, the image archive, build.json),
rebuilt when the archive is missing; the Go module and build cache are the machine's one; labs side by
side share the cache under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lab.artifacts import ARCH, _go
from lab.config import LabConfig, LabError
from lab.images.build import docker_archive, tree_members
from lab.images.go_image import GoImage, _module_copy
from lab.registry import push_archive, upstream_to_mirror_path
from lab.shell import log

MODULE = "github.com/cloudnativelabs/kube-router/v2"
PACKAGE = "cmd/kube-router"
REPOSITORY = "docker.io/cloudnativelabs/kube-router"
# what the addon pins; used while deploys/components/kube_router.py (the setting's owner) does not exist
REFERENCE = f"{REPOSITORY}:v2.1.0"
VERSION_VARIABLES = f"{MODULE}/pkg/version"  # where upstream's Makefile stamps Version and BuildDate
ENTRYPOINT = "/usr/local/bin/kube-router"
USER = "0:0"  # kube-router refuses to start as anyone else (it runs iptables and ipset)
WORKING_DIR = "/root"  # upstream's WORKDIR
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)  # it finds iptables/ipset on PATH
_TAG = re.compile(rf"^{re.escape(REPOSITORY)}:(v\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class Raise:
    module: str
    from_version: str
    to_version: str
    advisories: tuple[str, ...]
    why: str


# Per kube-router version: the dependencies raised over its go.mod (see the module docstring). A version
# without an entry is refused: its go.mod needs its own review.
RAISES: dict[str, tuple[Raise, ...]] = {
    "v2.1.0": (
        Raise(
            "golang.org/x/net", "v0.21.0", "v0.63.0",
            ("GO-2024-2687", "GO-2024-3333", "GO-2025-3503", "GO-2025-3595", "CVE-2025-47911", "CVE-2025-58190",
             "GO-2026-5026"),
            "HTTP/2 CONTINUATION flood, html parser/tokenizer issues, proxy bypass; newest release",
        ),
        Raise(
            "golang.org/x/oauth2", "v0.17.0", "v0.38.0", ("GO-2025-3488",),
            "jws: malformed tokens use unbounded memory (fixed in v0.27.0); newest release",
        ),
        Raise(
            "google.golang.org/grpc", "v1.62.0", "v1.85.0", ("GO-2026-4762", "GO-2026-6061"),
            ":path without leading slash bypasses authorization (fixed in v1.79.3), transport DoS (v1.82.1)",
        ),
        Raise(
            "google.golang.org/protobuf", "v1.32.0", "v1.36.12", ("GO-2024-2611",),
            "protojson.Unmarshal loops on some invalid JSON (fixed in v1.33.0); newest release",
        ),
        Raise(
            "github.com/docker/docker", "v25.0.3+incompatible", "v28.5.2+incompatible",
            ("CVE-2024-29018", "GO-2024-3005", "GHSA-4vq8-7jfc-9cvp", "GO-2025-3830"),
            "moby advisories fixed in v25.0.5, v25.0.6, v28.0.0, v28.3.3; newest on this module path",
        ),
        Raise(
            "github.com/osrg/gobgp/v3", "v3.23.0", "v3.37.0",
            ("GO-2025-3630", "GO-2025-3631", "GO-2025-3632", "CVE-2025-43973"),
            "panics on malformed MRT/BGP/flowspec/RTR input (fixed in v3.35.0); last v3 release",
        ),
        Raise(
            "go.opentelemetry.io/otel", "v1.24.0", "v1.47.0", (),
            "needed newer by the docker client v28; kept in step with otelhttp",
        ),
        Raise(
            "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "v0.49.0", "v0.72.0", (),
            "needed newer by the docker client v28; kept in step with otel",
        ),
    ),
}  # fmt: skip

# Debian packages the image's programs come from (iptables' and ipset's dependencies, netbase included);
# only the files the programs need are kept (select_rootfs).
DEBIAN_PACKAGES = (
    "iptables", "libxtables12", "libip4tc2", "libip6tc2", "libnftnl11", "libmnl0", "libnetfilter-conntrack3",
    "libnfnetlink0", "netbase", "ipset", "libipset13", "libc6",
)  # fmt: skip
PROGRAMS = ("usr/sbin/xtables-nft-multi", "usr/sbin/ipset")
# The names kube-router (and coreos/go-iptables) run; xtables-nft-multi acts on the name it was called by.
NFT_LINKS = tuple(
    f"usr/sbin/{family}{backend}{tool}"
    for family in ("iptables", "ip6tables")
    for backend in ("", "-nft")
    for tool in ("", "-save", "-restore")
)
EXTENSIONS = "usr/lib/x86_64-linux-gnu/xtables"  # the match/target modules iptables loads by name
EXTENSION_PREFIXES = ("libxt_", "libipt_", "libip6t_")  # not libebt_/libarpt_: no ebtables/arptables here
DATA_FILES = ("etc/protocols", "etc/services", "etc/ethertypes")  # netbase: protocol/port/ethertype names
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")  # ld.so's default search path
NSSWITCH = "hosts: files dns\n"  # as upstream's image writes it
EMPTY_DIRS = {"run": 0o755, "tmp": 0o1777, "root": 0o700}  # iptables takes /run/xtables.lock


def pinned_image() -> str:
    """The reference the addon pins (``kube_router_image``), or :data:`REFERENCE` while no addon declares it."""
    from deploys.settings import owner

    known = owner("kube_router_image")
    return REFERENCE if known is None else str(known.default)


def module_version(reference: str) -> str:
    """``docker.io/cloudnativelabs/kube-router:v2.1.0`` -> ``v2.1.0`` (the tag is the module version)."""
    match = _TAG.match(reference)
    if not match:
        raise LabError(f"{reference}: the lab builds {REPOSITORY}:v<major>.<minor>.<patch> only")
    return match.group(1)


def raises(version: str) -> tuple[Raise, ...]:
    if version not in RAISES:
        raise LabError(
            f"kube-router {version}: no review of its Go dependencies (lab/images/kube_router.py RAISES has "
            f"{', '.join(sorted(RAISES))}); add one before building it"
        )
    return RAISES[version]


def image(reference: str | None = None) -> GoImage:
    reference = reference or pinned_image()
    return GoImage(
        name="kube-router",
        reference=reference,
        module=MODULE,
        version=module_version(reference),
        package=PACKAGE,
        entrypoint=ENTRYPOINT,
        user=USER,
        notes="network-policy controller tools only (nft iptables, ipset); deps raised, see RAISES",
    )


def cache_dir(config: LabConfig, version: str) -> Path:
    return config.cache_dir / "images" / "kube-router" / version


def archive_path(config: LabConfig, version: str) -> Path:
    return cache_dir(config, version) / f"kube-router-{version}-linux-{ARCH}.docker-archive.tar"


# ---- Go: the binary ------------------------------------------------------------------------------------


def build_date(info_time: str) -> str:
    """The module proxy's ``2024-03-02T21:45:54Z`` in the format upstream's Makefile stamps."""
    return datetime.fromisoformat(info_time.replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%S%z")


def ldflags(version: str, date: str) -> tuple[str, ...]:
    return ("-s", "-w", f"-X {VERSION_VARIABLES}.Version={version}", f"-X {VERSION_VARIABLES}.BuildDate={date}")


def _go_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=ARCH, GOWORK="off", **extra)


def _go_run(args: list[str], cwd: Path, what: str, **env: str) -> str:
    result = subprocess.run(["nice", "-n", "10", _go(), *args], env=_go_env(**env), capture_output=True, text=True,
                            cwd=cwd)  # fmt: skip
    if result.returncode != 0:
        raise LabError(f"{what} failed:\n{result.stderr.strip()[-3000:]}")
    return result.stdout


def _module_time(work: Path, version: str) -> str:
    listed = _go_run(["mod", "download", "-json", f"{MODULE}@{version}"], work, f"go mod download {MODULE}")
    return str(json.loads(Path(json.loads(listed)["Info"]).read_text())["Time"])


def go_build(image: GoImage, out_dir: Path) -> tuple[Path, float, dict[str, str]]:
    """Raise the deps in a copy of the module and build it: (binary, seconds, {go.mod before/after, ldflags})."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    copy = _module_copy(image, out_dir.parent)
    before = (copy / "go.mod").read_text()
    flags = ldflags(image.version, build_date(_module_time(out_dir.parent, image.version)))
    wanted = [f"{one.module}@{one.to_version}" for one in raises(image.version)]
    _go_run(["get", *wanted], copy, f"go get {' '.join(wanted)}", GOFLAGS="-mod=mod")
    _go_run(["mod", "tidy"], copy, "go mod tidy", GOFLAGS="-mod=mod")
    after = (copy / "go.mod").read_text()
    binary = out_dir / "kube-router"
    _go_run(["build", "-trimpath", f"-ldflags={' '.join(flags)}", "-o", str(binary), f"./{image.package}"], copy,
            f"go build ./{image.package} of {MODULE}@{image.version}", GOFLAGS="-mod=readonly")  # fmt: skip
    shutil.rmtree(copy)
    seconds = round(time.monotonic() - started, 1)
    log(f"built {MODULE}/{image.package}@{image.version} (deps raised) in {seconds:.0f} s")
    return binary, seconds, {"go_mod_before": before, "go_mod_after": after, "ldflags": " ".join(flags)}


def go_version_m(binary: Path) -> str:
    """``go version -m`` of the binary: its Go version, main module, every linked module and build settings."""
    result = subprocess.run([_go(), "version", "-m", str(binary)], capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"go version -m {binary} failed:\n{result.stderr.strip()}")
    return result.stdout


def parse_go_version_m(text: str) -> dict[str, str]:
    """{module path: version} of the main module (``mod``) and the linked ones (``dep``, ``=>`` replacing)."""
    versions: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        fields = line.strip().split("\t")
        if len(fields) >= 3 and fields[0] in ("mod", "dep"):
            last = fields[1]
            versions[last] = fields[2]
        elif len(fields) >= 3 and fields[0] == "=>" and last:
            versions[last] = fields[2] if fields[1] == last else f"{fields[1]}@{fields[2]}"
    return versions


def go_mod_requires(text: str) -> dict[str, str]:
    """{module: version} of a go.mod's require lines (both the block and the one-line forms)."""
    found: dict[str, str] = {}
    block = False
    for raw in text.splitlines():
        line = raw.split("//")[0].strip()
        if line == "require (":
            block = True
        elif block and line == ")":
            block = False
        elif (block and line) or line.startswith("require "):
            parts = line.removeprefix("require ").split()
            if len(parts) == 2:
                found[parts[0]] = parts[1]
    return found


def check_raised(version: str, linked: dict[str, str]) -> None:
    """Every raised module the binary links is at the raised version (else the build did not take)."""
    wrong = [
        f"{one.module} {linked[one.module]} (wanted {one.to_version})"
        for one in raises(version)
        if one.module in linked and linked[one.module] != one.to_version
    ]
    if wrong:
        raise LabError(f"kube-router {version}: raised dependencies not in the binary: {', '.join(wrong)}")


# ---- Debian: iptables, ipset and their libraries ---------------------------------------------------------


def elf_dependencies(data: bytes) -> tuple[str | None, list[str]]:
    """(program interpreter, DT_NEEDED names) of a little-endian ELF64 file; (None, []) for anything else."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None, []
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    interpreter = None
    for index in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + index * phentsize)
        if p_type == 3:  # PT_INTERP
            interpreter = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    sections = [struct.unpack_from("<IIQQQQII", data, shoff + index * shentsize) for index in range(shnum)]
    needed: list[str] = []
    for _, sh_type, _, _, offset, size, link, _ in sections:
        if sh_type != 6:  # SHT_DYNAMIC; its sh_link is the string table the names are in
            continue
        strings = sections[link][4]
        for entry in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, entry)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strings + value)
                needed.append(data[strings + value : end].decode())
    return interpreter, needed


def _resolve(root: Path, relative: str) -> list[str]:
    """``relative`` and every symlink hop from it inside ``root``, ending at a regular file."""
    chain = [relative]
    for _ in range(16):
        path = root / chain[-1]
        if not path.is_symlink():
            if not path.is_file():
                raise LabError(f"{chain[0]}: {chain[-1]} is not in the unpacked packages")
            return chain
        target = os.readlink(path)
        following = target.lstrip("/") if target.startswith("/") else (Path(chain[-1]).parent / target).as_posix()
        chain.append(os.path.normpath(following))
    raise LabError(f"{relative}: too many symlinks")


def _library(root: Path, name: str, wanted_by: str) -> str:
    for directory in LIBRARY_DIRS:
        if (root / directory / name).exists():
            return f"{directory}/{name}"
    raise LabError(f"{wanted_by} needs {name}, which none of {', '.join(DEBIAN_PACKAGES)} has")


def select_rootfs(full: Path, dest: Path) -> list[str]:
    """Copy from the unpacked packages what the programs need into ``dest``; returns the paths (sorted).

    The programs, the nft names linked to xtables-nft-multi, the extensions, the data files, then every
    library their ELF headers name (and those libraries' own), with the symlinks leading to them."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    modules = (full / EXTENSIONS).glob("*.so")
    extensions = sorted(f"{EXTENSIONS}/{path.name}" for path in modules if path.name.startswith(EXTENSION_PREFIXES))
    keep: set[str] = set()
    elves = [*PROGRAMS, *extensions]
    for relative in [*elves, *DATA_FILES]:
        keep.update(_resolve(full, relative))
    while elves:
        wanted_by = elves.pop()
        final = _resolve(full, wanted_by)[-1]
        interpreter, needed = elf_dependencies((full / final).read_bytes())
        found = [_library(full, name, wanted_by) for name in needed]
        if interpreter:
            found.append(interpreter.lstrip("/"))
        for library in found:
            chain = _resolve(full, library)
            if chain[-1] not in keep:
                elves.append(chain[-1])
            keep.update(chain)
    for relative in sorted(keep):
        source, target = full / relative, dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    for link in NFT_LINKS:  # as Debian's alternatives (iptables -> iptables-nft), one hop shorter
        target = dest / link
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to("xtables-nft-multi")
    (dest / "etc" / "nsswitch.conf").write_text(NSSWITCH)
    for directory, mode in EMPTY_DIRS.items():
        (dest / directory).mkdir(exist_ok=True)
        os.chmod(dest / directory, mode)
    return sorted(path.relative_to(dest).as_posix() for path in dest.rglob("*") if not path.is_dir())


def _deb_field(deb: Path, name: str) -> str:
    result = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"dpkg-deb -f {deb} failed:\n{result.stderr.strip()}")
    return result.stdout.strip()


def debian_root(cache: Path) -> tuple[Path, dict[str, str]]:
    """The packages unpacked into ``cache/debroot`` (downloaded into ``cache/debs`` first when missing):
    (the unpacked tree, {package: version})."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [name for name in DEBIAN_PACKAGES if not list(debs.glob(f"{name}_*.deb"))]
    if missing:
        result = subprocess.run(
            ["apt-get", "download", "-o", "APT::Sandbox::User=root", *missing], capture_output=True, text=True, cwd=debs
        )  # fmt: skip
        if result.returncode != 0:
            raise LabError(f"apt-get download {' '.join(missing)} failed (apt-get update?):\n{result.stderr.strip()}")
    full = cache / "debroot"
    if full.exists():
        shutil.rmtree(full)
    full.mkdir()
    versions: dict[str, str] = {}
    for name in DEBIAN_PACKAGES:
        deb = sorted(debs.glob(f"{name}_*.deb"))[-1]  # one per package: downloaded only when missing
        result = subprocess.run(["dpkg-deb", "-x", str(deb), str(full)], capture_output=True, text=True)
        if result.returncode != 0:
            raise LabError(f"dpkg-deb -x {deb} failed:\n{result.stderr.strip()}")
        versions[name] = _deb_field(deb, "Version")
    return full, versions


# ---- the image -------------------------------------------------------------------------------------------


def _build(cache: Path, image: GoImage, archive: Path) -> dict[str, Any]:
    started = time.monotonic()
    binary, seconds, go_mod = go_build(image, cache / "bin")
    text = go_version_m(binary)
    linked = parse_go_version_m(text)
    check_raised(image.version, linked)
    full, packages = debian_root(cache)
    rootfs = cache / "rootfs"
    files = select_rootfs(full, rootfs)
    shutil.rmtree(full)
    tmp = archive.with_name(archive.name + ".tmp")
    docker_archive(binary, image.reference, image.entrypoint, tmp, user=image.user, tree=rootfs, env=ENV,
                   working_dir=WORKING_DIR)  # fmt: skip
    data = tmp.read_bytes()
    upstream = go_mod_requires(go_mod["go_mod_before"])
    record = {
        "reference": image.reference,
        "module": f"{image.import_path}@{image.version}",
        "ldflags": go_mod["ldflags"],
        "seconds": seconds,  # go get + tidy + build
        "total_seconds": round(time.monotonic() - started, 1),
        "go": text.splitlines()[0].rpartition(" ")[2] if text else "",  # the toolchain the binary says it had
        "go_version_m": text,
        "module_versions": linked,
        "raised": [asdict(one) for one in raises(image.version)],
        # every linked module whose version differs from upstream's go.mod: the raised ones and what they pulled
        "changed": {m: [upstream[m], v] for m, v in sorted(linked.items()) if m in upstream and upstream[m] != v},
        "go_mod": go_mod["go_mod_after"],
        "debian_packages": packages,
        "layer_files": sorted([*files, image.entrypoint.lstrip("/")]),
        "binary_bytes": binary.stat().st_size,
        "rootfs_bytes": sum(len(content) for content, _ in tree_members(rootfs)[0].values()),
        "archive_bytes": len(data),
        "archive_sha256": hashlib.sha256(data).hexdigest(),
    }
    (cache / "build.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.rename(archive)
    return record


def image_archive(config: LabConfig, reference: str | None = None) -> Path:
    """The docker-archive of the pinned (or given) reference from the cache, built first when missing."""
    one = image(reference)
    cache = cache_dir(config, one.version)
    archive = archive_path(config, one.version)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{one.version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            log(f"building {one.reference} from {one.import_path}@{one.version} (minutes the first time)")
            record = _build(cache, one, archive)
            log(f"kube-router: image {record['archive_bytes'] / 1e6:.1f} MB, built in {record['seconds']:.0f} s")
    return archive


def cached_record(config: LabConfig, reference: str | None = None) -> dict[str, Any] | None:
    """What the cached build recorded, or None when there is no finished build (nothing is built)."""
    version = module_version(reference or pinned_image())
    record = cache_dir(config, version) / "build.json"
    if not archive_path(config, version).exists() or not record.exists():
        return None
    return dict(json.loads(record.read_text()))


def build_record(config: LabConfig, reference: str | None = None) -> dict[str, Any]:
    """What the build recorded (seconds, sizes, raised deps, ``go version -m``), building it first when needed."""
    image_archive(config, reference)
    record = cached_record(config, reference)
    assert record is not None
    return record


def module_versions(config: LabConfig, reference: str | None = None) -> dict[str, str]:
    """{module: version} the image's binary links, from its ``go version -m`` (building it first when needed)."""
    return parse_go_version_m(str(build_record(config, reference)["go_version_m"]))


def build_seconds(config: LabConfig) -> float:
    return float(build_record(config)["seconds"])


def publish_image(config: LabConfig) -> dict[str, str]:
    """Build (or take from the cache) the pinned image and push it. Returns {reference: registry it mirrors}."""
    reference = pinned_image()
    archive = image_archive(config, reference)
    registry, path = upstream_to_mirror_path(reference)
    push_archive(config, archive, path)
    log(f"lab registry {config.gateway}:{config.registry_port}: {reference}")
    return {reference: registry}
