"""The lab's kube-router image: reference, raised deps, rootfs selection, layer, build record; the cached build.

Everything but the last tests runs without network, Go or Debian packages (fake ELF files, a fake build). The
last ones run the programs of the image the cache holds (as root, in a chroot and a throwaway network
namespace); they are skipped when nothing is built yet (``kube_router.build_record(config)`` builds it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploys import settings
from lab.config import LabConfig, LabError
from lab.images import addons, build, kube_router

pytestmark = pytest.mark.unit

REFERENCE = "docker.io/cloudnativelabs/kube-router:v2.1.0"


# ---- reference and raised dependencies --------------------------------------------------------------------


def test_the_pinned_reference_comes_from_the_settings_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "owner", lambda key: None)
    assert kube_router.pinned_image() == kube_router.REFERENCE == REFERENCE  # no addon yet: the module's own
    pinned = SimpleNamespace(default="docker.io/cloudnativelabs/kube-router:v2.9.0")
    monkeypatch.setattr(settings, "owner", lambda key: pinned if key == "kube_router_image" else None)
    assert kube_router.pinned_image() == "docker.io/cloudnativelabs/kube-router:v2.9.0"


def test_the_tag_is_the_module_version() -> None:
    assert kube_router.module_version(REFERENCE) == "v2.1.0"
    assert kube_router.image(REFERENCE).version == "v2.1.0"
    assert kube_router.image(REFERENCE).import_path == "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"


@pytest.mark.parametrize(
    "reference",
    [
        "docker.io/cloudnativelabs/kube-router:latest",
        "docker.io/cloudnativelabs/kube-router:2.1.0",
        "docker.io/cloudnativelabs/kube-router",
        "cloudnativelabs/kube-router:v2.1.0",
        "ghcr.io/cloudnativelabs/kube-router:v2.1.0",
        "docker.io/cloudnativelabs/kube-router:v2.1.0-amd64",
    ],
)
def test_other_references_are_refused(reference: str) -> None:
    with pytest.raises(LabError, match="the lab builds docker.io/cloudnativelabs/kube-router:v"):
        kube_router.module_version(reference)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.removeprefix("v").split("+")[0].split("."))


def test_every_raise_goes_up_and_says_why() -> None:
    raised = kube_router.raises("v2.1.0")
    modules = [one.module for one in raised]
    assert len(modules) == len(set(modules))
    assert {
        "golang.org/x/net",
        "google.golang.org/grpc",
        "google.golang.org/protobuf",
        "github.com/docker/docker",
    } <= set(modules)
    for one in raised:
        assert _version(one.to_version) > _version(one.from_version), one
        assert one.why, one
        assert all(a.startswith(("GO-", "CVE-", "GHSA-")) for a in one.advisories), one
    with pytest.raises(LabError, match="no review of its Go dependencies"):
        kube_router.raises("v2.2.0")


def test_ldflags_stamp_what_upstreams_makefile_stamps() -> None:
    assert kube_router.build_date("2024-03-02T21:45:54Z") == "2024-03-02T21:45:54+0000"
    assert kube_router.ldflags("v2.1.0", "2024-03-02T21:45:54+0000") == (
        "-s",
        "-w",
        "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v2.1.0",
        "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate=2024-03-02T21:45:54+0000",
    )


GO_VERSION_M = """\
/cache/bin/kube-router: go1.26.8
\tpath\tgithub.com/cloudnativelabs/kube-router/v2/cmd/kube-router
\tmod\tgithub.com/cloudnativelabs/kube-router/v2\t(devel)\t
\tdep\tgithub.com/docker/docker\tv28.5.2+incompatible\th1:abc=
\tdep\tgolang.org/x/net\tv0.63.0\th1:def=
\tdep\tgoogle.golang.org/grpc\tv1.85.0\th1:ghi=
\tdep\tgithub.com/example/old\tv1.0.0
\t=>\tgithub.com/example/fork\tv1.0.1\th1:jkl=
\tbuild\t-trimpath=true
\tbuild\tCGO_ENABLED=0
"""


def test_go_version_m_is_read_into_module_versions() -> None:
    assert kube_router.parse_go_version_m(GO_VERSION_M) == {
        "github.com/cloudnativelabs/kube-router/v2": "(devel)",
        "github.com/docker/docker": "v28.5.2+incompatible",
        "golang.org/x/net": "v0.63.0",
        "google.golang.org/grpc": "v1.85.0",
        "github.com/example/old": "github.com/example/fork@v1.0.1",
    }


def test_go_mod_requires_reads_blocks_and_single_lines() -> None:
    text = (
        "module x\n\nrequire example.org/a v1.0.0\n\nrequire (\n\texample.org/b v0.2.0\n"
        "\texample.org/c v0.3.0 // indirect\n)\n\ngo 1.21\n"
    )
    assert kube_router.go_mod_requires(text) == {"example.org/a": "v1.0.0", "example.org/b": "v0.2.0",
                                                 "example.org/c": "v0.3.0"}  # fmt: skip


def test_a_raise_the_binary_does_not_show_fails_the_build() -> None:
    linked = {one.module: one.to_version for one in kube_router.raises("v2.1.0")}
    kube_router.check_raised("v2.1.0", linked)
    kube_router.check_raised("v2.1.0", {})  # a module the binary does not link is not asked about
    with pytest.raises(LabError, match=r"golang.org/x/net v0.21.0 \(wanted v0.63.0\)"):
        kube_router.check_raised("v2.1.0", {**linked, "golang.org/x/net": "v0.21.0"})


# ---- ELF dependencies and the root filesystem ---------------------------------------------------------------


def _elf(needed: tuple[str, ...] = (), interpreter: str | None = None) -> bytes:
    """A minimal ELF64 with a .dynstr/.dynamic pair (DT_NEEDED entries) and, optionally, a PT_INTERP."""
    interp = interpreter.encode() + b"\0" if interpreter else b""
    strtab, offsets = b"\0", []
    for name in needed:
        offsets.append(len(strtab))
        strtab += name.encode() + b"\0"
    dynamic = b"".join(struct.pack("<qQ", 1, offset) for offset in offsets) + struct.pack("<qQ", 0, 0)
    phnum = 1 if interp else 0
    interp_at = 64 + 56 * phnum
    strtab_at = interp_at + len(interp)
    dynamic_at = strtab_at + len(strtab)
    sections_at = dynamic_at + len(dynamic)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, sections_at, 0, 64, 56, phnum, 64, 3, 0)
    program = struct.pack("<IIQQQQQQ", 3, 4, interp_at, 0, 0, len(interp), len(interp), 1) if interp else b""
    sections = bytes(64)
    sections += struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, strtab_at, len(strtab), 0, 0, 1, 0)  # SHT_STRTAB
    sections += struct.pack("<IIQQQQIIQQ", 0, 6, 0, 0, dynamic_at, len(dynamic), 1, 0, 8, 16)  # SHT_DYNAMIC
    return header + program + interp + strtab + dynamic + sections


def test_elf_dependencies_reads_needed_names_and_the_interpreter() -> None:
    data = _elf(("libxtables.so.12", "libc.so.6"), "/lib64/ld-linux-x86-64.so.2")
    assert kube_router.elf_dependencies(data) == ("/lib64/ld-linux-x86-64.so.2", ["libxtables.so.12", "libc.so.6"])
    assert kube_router.elf_dependencies(_elf()) == (None, [])
    assert kube_router.elf_dependencies(b"#!/bin/sh\necho\n") == (None, [])


LD = "/lib64/ld-linux-x86-64.so.2"
GNU = "usr/lib/x86_64-linux-gnu"


def _unpacked_packages(root: Path) -> Path:
    """What ``dpkg-deb -x`` of the packages gives, in small: programs, libraries with symlinks, extras."""
    files = {
        "usr/sbin/xtables-nft-multi": _elf(("libxtables.so.12", "libnftnl.so.11", "libc.so.6"), LD),
        "usr/sbin/xtables-legacy-multi": _elf(("libip4tc.so.2", "libc.so.6"), LD),
        "usr/sbin/ipset": _elf(("libipset.so.13", "libc.so.6"), LD),
        "usr/bin/iptables-xml": _elf(("libc.so.6",), LD),
        f"{GNU}/libxtables.so.12.7.0": _elf(("libc.so.6",)),
        f"{GNU}/libnftnl.so.11.6.0": _elf(("libmnl.so.0", "libc.so.6")),
        f"{GNU}/libipset.so.13.4.0": _elf(("libmnl.so.0", "libc.so.6")),
        f"{GNU}/libmnl.so.0.2.0": _elf(("libc.so.6",)),
        f"{GNU}/libip4tc.so.2.0.0": _elf(("libc.so.6",)),
        f"{GNU}/libnetfilter_conntrack.so.3.8.0": _elf(("libnfnetlink.so.0", "libc.so.6")),
        f"{GNU}/libnfnetlink.so.0.2.0": _elf(("libc.so.6",)),
        f"{GNU}/xtables/libxt_set.so": _elf(("libxtables.so.12", "libc.so.6")),
        f"{GNU}/xtables/libxt_connlabel.so": _elf(("libxtables.so.12", "libnetfilter_conntrack.so.3", "libc.so.6")),
        f"{GNU}/xtables/libipt_REJECT.so": _elf(("libxtables.so.12", "libm.so.6", "libc.so.6")),
        f"{GNU}/xtables/libip6t_REJECT.so": _elf(("libxtables.so.12", "libc.so.6")),
        f"{GNU}/xtables/libebt_ip.so": _elf(("libxtables.so.12", "libc.so.6")),
        "lib/x86_64-linux-gnu/libc.so.6": _elf(("ld-linux-x86-64.so.2",), LD),
        "lib/x86_64-linux-gnu/libm.so.6": _elf(("libc.so.6",)),
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": _elf(),
        "lib/x86_64-linux-gnu/libBrokenLocale.so.1": _elf(("libc.so.6",)),
        "etc/protocols": b"tcp 6 TCP\n",
        "etc/services": b"ssh 22/tcp\n",
        "etc/ethertypes": b"IPv4 0800 ip ip4\n",
        "usr/share/doc/iptables/copyright": b"GPL\n",
    }
    links = {
        "usr/sbin/iptables-nft": "xtables-nft-multi",
        "usr/sbin/iptables-legacy": "xtables-legacy-multi",
        f"{GNU}/libxtables.so.12": "libxtables.so.12.7.0",
        f"{GNU}/libnftnl.so.11": "libnftnl.so.11.6.0",
        f"{GNU}/libipset.so.13": "libipset.so.13.4.0",
        f"{GNU}/libmnl.so.0": "libmnl.so.0.2.0",
        f"{GNU}/libip4tc.so.2": "libip4tc.so.2.0.0",
        f"{GNU}/libnetfilter_conntrack.so.3": "libnetfilter_conntrack.so.3.8.0",
        f"{GNU}/libnfnetlink.so.0": "libnfnetlink.so.0.2.0",
        f"{GNU}/xtables/libxt_SET.so": "libxt_set.so",
        "lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        os.chmod(root / name, 0o755 if name.startswith("usr/sbin") else 0o644)
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    return root


NFT_NAMES = [
    f"usr/sbin/{family}{backend}{tool}"
    for family in ("ip6tables", "iptables")
    for backend in ("", "-nft")
    for tool in ("", "-restore", "-save")
]
EXPECTED_ROOTFS = sorted(
    [
        "etc/ethertypes",
        "etc/nsswitch.conf",
        "etc/protocols",
        "etc/services",
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libm.so.6",  # libipt_REJECT's
        "lib64/ld-linux-x86-64.so.2",
        *(f"{GNU}/{name}" for name in ("libipset.so.13", "libipset.so.13.4.0", "libmnl.so.0", "libmnl.so.0.2.0")),
        *(f"{GNU}/{name}" for name in ("libnftnl.so.11", "libnftnl.so.11.6.0", "libxtables.so.12")),
        *(f"{GNU}/{name}" for name in ("libxtables.so.12.7.0", "libnfnetlink.so.0", "libnfnetlink.so.0.2.0")),
        f"{GNU}/libnetfilter_conntrack.so.3",  # libxt_connlabel's
        f"{GNU}/libnetfilter_conntrack.so.3.8.0",
        *(f"{GNU}/xtables/{name}" for name in ("libip6t_REJECT.so", "libipt_REJECT.so", "libxt_SET.so")),
        *(f"{GNU}/xtables/{name}" for name in ("libxt_connlabel.so", "libxt_set.so")),
        *NFT_NAMES,
        "usr/sbin/ipset",
        "usr/sbin/xtables-nft-multi",
    ]
)


def test_the_rootfs_keeps_the_programs_and_exactly_what_they_load(tmp_path: Path) -> None:
    full = _unpacked_packages(tmp_path / "full")
    files = kube_router.select_rootfs(full, tmp_path / "rootfs")
    assert files == EXPECTED_ROOTFS  # no legacy backend, no ebtables module, no docs, no unused libc parts
    rootfs = tmp_path / "rootfs"
    for name in NFT_NAMES:  # straight to the multi-call binary, as Debian's alternatives choose nft
        assert os.readlink(rootfs / name) == "xtables-nft-multi"
    assert os.readlink(rootfs / "lib64/ld-linux-x86-64.so.2") == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert (rootfs / "etc/nsswitch.conf").read_text() == "hosts: files dns\n"
    assert oct((rootfs / "tmp").stat().st_mode & 0o7777) == oct(0o1777)
    assert (rootfs / "usr/sbin/ipset").stat().st_mode & 0o777 == 0o755


def test_a_library_no_package_has_stops_the_build(tmp_path: Path) -> None:
    full = _unpacked_packages(tmp_path / "full")
    (full / f"{GNU}/libmnl.so.0.2.0").unlink()
    with pytest.raises(LabError, match=r"libipset.so.13.4.0 needs libmnl.so.0, which none of iptables, .* has"):
        kube_router.select_rootfs(full, tmp_path / "rootfs")


# ---- the layer and the archive -------------------------------------------------------------------------------


def _read_archive(path: Path) -> tuple[dict[str, Any], tarfile.TarFile]:
    with tarfile.open(path) as outer:

        def member(name: str) -> bytes:
            handle = outer.extractfile(name)
            assert handle is not None, name
            return handle.read()

        manifest = json.loads(member("manifest.json"))
        config = json.loads(member(manifest[0]["Config"]))
        layer = member(manifest[0]["Layers"][0])
    assert manifest[0]["RepoTags"] == [REFERENCE]
    return config, tarfile.open(fileobj=io.BytesIO(layer))  # noqa: SIM115 (in memory)


def test_single_binary_archives_keep_their_digests(tmp_path: Path) -> None:
    # computed before docker_archive learnt trees: the images already pushed must not change
    binary = tmp_path / "program"
    binary.write_bytes(b"\x7fELF fake program")
    plain = build.docker_archive(binary, "example.org/x/y:v1", "/y", tmp_path / "a.tar")
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == (
        "5005fe39d925c1c3b52e10956798d22764c9edd0b653809feecf1315343fe609"
    )
    coredns = build.docker_archive(
        binary, "registry.k8s.io/coredns/coredns:v1.14.2", "/coredns", tmp_path / "b.tar", user="65532:65532",
        file_capabilities=("CAP_NET_BIND_SERVICE",), exposed_ports=("53/tcp", "53/udp"),
    )  # fmt: skip
    assert hashlib.sha256(coredns.read_bytes()).hexdigest() == (
        "26c5516e9d5569f807fdc6a12ac016160e1d9f1233a6ece25c4722df9442715d"
    )


def test_the_layer_holds_the_tree_under_the_binary(tmp_path: Path) -> None:
    kube_router.select_rootfs(_unpacked_packages(tmp_path / "full"), tmp_path / "rootfs")
    binary = tmp_path / "kube-router"
    binary.write_bytes(b"\x7fELF fake kube-router")
    archive = build.docker_archive(
        binary, REFERENCE, kube_router.ENTRYPOINT, tmp_path / "image.tar", user="0:0", tree=tmp_path / "rootfs",
        env=kube_router.ENV, working_dir="/root",
    )  # fmt: skip
    config, layer = _read_archive(archive)
    assert config["config"] == {
        "Entrypoint": ["/usr/local/bin/kube-router"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "User": "0:0",
        "WorkingDir": "/root",
    }
    members = {info.name: info for info in layer.getmembers()}
    files = sorted(name for name, info in members.items() if not info.isdir())
    assert files == sorted([*EXPECTED_ROOTFS, "usr/local/bin/kube-router"])
    for name in ("usr", "usr/local", "usr/local/bin", "usr/sbin", "lib64", "etc", "run", "root"):
        assert members[name].isdir(), name  # every parent has its entry: the layer unpacks by itself
    assert members["tmp"].mode == 0o1777
    assert members["usr/sbin/iptables"].issym() and members["usr/sbin/iptables"].linkname == "xtables-nft-multi"
    assert members["usr/local/bin/kube-router"].mode == 0o755
    assert all(info.mtime == 0 and info.uid == 0 and info.gid == 0 for info in members.values())
    again = build.docker_archive(
        binary, REFERENCE, kube_router.ENTRYPOINT, tmp_path / "again.tar", user="0:0", tree=tmp_path / "rootfs",
        env=kube_router.ENV, working_dir="/root",
    )  # fmt: skip
    assert again.read_bytes() == archive.read_bytes()  # reproducible


# ---- the build and its record (faked Go and Debian) -----------------------------------------------------------


def test_the_build_records_raises_go_version_m_packages_and_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    before = "module github.com/cloudnativelabs/kube-router/v2\n\nrequire (\n\tgolang.org/x/net v0.21.0\n)\n"

    def go_build(image: Any, out_dir: Path) -> tuple[Path, float, dict[str, str]]:
        calls.append(image.version)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "kube-router").write_bytes(b"\x7fELF fake kube-router")
        return out_dir / "kube-router", 321.0, {"go_mod_before": before, "go_mod_after": "after", "ldflags": "-s -w"}

    def debian_root(cache: Path) -> tuple[Path, dict[str, str]]:
        return _unpacked_packages(cache / "debroot"), {"iptables": "1.8.9-2", "ipset": "7.17-1"}

    monkeypatch.setattr(kube_router, "go_build", go_build)
    monkeypatch.setattr(kube_router, "go_version_m", lambda binary: GO_VERSION_M)
    monkeypatch.setattr(kube_router, "debian_root", debian_root)
    monkeypatch.setattr(settings, "owner", lambda key: None)
    config = LabConfig(nodes=[], cache_dir=tmp_path)
    assert kube_router.cached_record(config) is None

    record = kube_router.build_record(config)
    kube_router.build_record(config)
    assert calls == ["v2.1.0"]  # the second call takes the cache
    cache = tmp_path / "images" / "kube-router" / "v2.1.0"
    assert (cache / "kube-router-v2.1.0-linux-amd64.docker-archive.tar").exists()
    assert not (cache / "debroot").exists()
    assert record == json.loads((cache / "build.json").read_text())
    assert record["reference"] == REFERENCE
    assert record["module"] == "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@v2.1.0"
    assert record["seconds"] == 321.0
    assert record["go"] == "go1.26.8"
    assert record["go_version_m"] == GO_VERSION_M
    assert record["module_versions"]["golang.org/x/net"] == "v0.63.0"
    assert record["changed"] == {"golang.org/x/net": ["v0.21.0", "v0.63.0"]}
    assert record["raised"][0] == {
        "module": "golang.org/x/net",
        "from_version": "v0.21.0",
        "to_version": "v0.63.0",
        "advisories": [
            *("GO-2024-2687", "GO-2024-3333", "GO-2025-3503", "GO-2025-3595"),
            *("CVE-2025-47911", "CVE-2025-58190", "GO-2026-5026"),
        ],
        "why": kube_router.raises("v2.1.0")[0].why,
    }
    assert record["debian_packages"] == {"iptables": "1.8.9-2", "ipset": "7.17-1"}
    assert record["layer_files"] == sorted([*EXPECTED_ROOTFS, "usr/local/bin/kube-router"])
    assert (
        record["archive_sha256"]
        == hashlib.sha256((cache / "kube-router-v2.1.0-linux-amd64.docker-archive.tar").read_bytes()).hexdigest()
    )
    assert kube_router.module_versions(config)["google.golang.org/grpc"] == "v1.85.0"


def test_the_lab_builds_it_when_the_addon_is_on() -> None:
    assert addons.IMAGES["kube_router_enabled"] is kube_router.publish_image
