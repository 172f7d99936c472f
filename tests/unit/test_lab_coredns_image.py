"""The lab's CoreDNS image: version from the pinned reference, image layout, cache, push (no network, no Go)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from deploys.components import coredns as coredns_addon
from lab.config import LabConfig, LabError
from lab.images import build, coredns

pytestmark = pytest.mark.unit

REFERENCE = "registry.k8s.io/coredns/coredns:v1.14.2"


def test_the_lab_builds_the_image_the_addon_pins() -> None:
    assert coredns.pinned_image() == coredns_addon.DEFAULTS["coredns_image"]
    assert coredns.version_of(coredns.pinned_image()) == "1.14.2"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("registry.k8s.io/coredns/coredns:1.14.2", "must be a CoreDNS release"),
        ("registry.k8s.io/coredns/coredns:latest", "must be a CoreDNS release"),
        ("registry.k8s.io/coredns/coredns", "must be a CoreDNS release"),
        ("docker.io/coredns/coredns:1.14.2", "builds registry.k8s.io/coredns/coredns:<tag> only"),
        ("registry.k8s.io/coredns:v1.14.2", "builds registry.k8s.io/coredns/coredns:<tag> only"),
    ],
)
def test_other_references_are_refused(reference: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        coredns.version_of(reference)


def test_ldflags_strip_and_name_the_build() -> None:
    assert coredns.ldflags() == (
        "-s -w -X github.com/coredns/coredns/coremain.GitCommit=spectra-lab-module-proxy-build"
    )


def test_file_capability_is_setcap_net_bind_service_ep() -> None:
    # `getcap` of upstream's binary says cap_net_bind_service=ep: vfs_cap_data revision 2, effective flag,
    # permitted bit 10, nothing inheritable.
    value = build.file_capabilities_xattr(["CAP_NET_BIND_SERVICE"])
    assert value == bytes.fromhex("0100000200040000000000000000000000000000")
    with pytest.raises(LabError, match="unknown capability"):
        build.file_capabilities_xattr(["CAP_SYS_ADMIN_TYPO"])


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    assert handle is not None, name
    return handle.read()


def _read_archive(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], tarfile.TarFile]:
    with tarfile.open(path) as outer:
        manifest = json.loads(_member(outer, "manifest.json"))
        config = json.loads(_member(outer, manifest[0]["Config"]))
        layer_bytes = _member(outer, manifest[0]["Layers"][0])
    return config, manifest, tarfile.open(fileobj=io.BytesIO(layer_bytes))  # noqa: SIM115 (in memory)


def _fake_go_install(calls: list[tuple[str, str, str]]) -> Any:
    def go_install(module: str, version: str, out_dir: Path, ldflags: str) -> Path:
        calls.append((module, version, ldflags))
        out_dir.mkdir(parents=True, exist_ok=True)
        binary = out_dir / "coredns"
        binary.write_bytes(b"\x7fELF fake coredns")
        return binary

    return go_install


def test_image_is_upstreams_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(coredns, "go_install", _fake_go_install(calls))
    monkeypatch.setattr(coredns, "_go", lambda: "true")
    config = LabConfig(nodes=[], cache_dir=tmp_path)

    archive = coredns.image_archive(config, REFERENCE)

    assert calls == [("github.com/coredns/coredns", "v1.14.2", coredns.ldflags())]
    assert archive == tmp_path / "coredns" / "1.14.2" / "coredns-v1.14.2-linux-amd64.docker-archive.tar"
    image, manifest, layer = _read_archive(archive)
    assert manifest[0]["RepoTags"] == [REFERENCE]
    assert image["config"]["Entrypoint"] == ["/coredns"]
    assert image["config"]["User"] == "65532:65532"
    assert set(image["config"]["ExposedPorts"]) == {"53/tcp", "53/udp"}
    assert (image["os"], image["architecture"]) == ("linux", "amd64")
    (member,) = layer.getmembers()
    assert (member.name, member.mode, member.uid, member.mtime) == ("coredns", 0o755, 0, 0)
    assert _member(layer, "coredns") == b"\x7fELF fake coredns"
    xattr = member.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
    assert xattr == build.file_capabilities_xattr(["CAP_NET_BIND_SERVICE"])
    record = json.loads((archive.parent / "build.json").read_text())
    assert record["module"] == "github.com/coredns/coredns@v1.14.2"
    assert record["archive_sha256"] and record["archive_bytes"] == archive.stat().st_size
    assert not list(archive.parent.glob("*.tmp"))


def test_cached_image_is_not_rebuilt_and_a_missing_one_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, str]] = []
    monkeypatch.setattr(coredns, "go_install", _fake_go_install(calls))
    monkeypatch.setattr(coredns, "_go", lambda: "true")
    config = LabConfig(nodes=[], cache_dir=tmp_path)

    first = coredns.image_archive(config, REFERENCE)
    digest = first.read_bytes()
    assert coredns.image_archive(config, REFERENCE).read_bytes() == digest
    assert len(calls) == 1
    first.unlink()
    assert coredns.image_archive(config, REFERENCE).read_bytes() == digest  # same input, same bytes
    assert len(calls) == 2


def test_publish_pushes_under_the_upstream_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pushed: list[tuple[Path, str]] = []
    monkeypatch.setattr(coredns, "go_install", _fake_go_install([]))
    monkeypatch.setattr(coredns, "_go", lambda: "true")
    monkeypatch.setattr(coredns, "push_archive", lambda config, archive, path: pushed.append((archive, path)))
    config = LabConfig(nodes=[], cache_dir=tmp_path)

    assert coredns.publish(config) == {REFERENCE: "registry.k8s.io"}
    assert [path for _, path in pushed] == ["coredns/coredns:v1.14.2"]


def test_other_images_keep_their_plain_layout(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"pause")
    image, _, layer = _read_archive(
        build.docker_archive(binary, "registry.k8s.io/pause:3.10", "/pause", tmp_path / "p.tar")
    )
    assert image["config"] == {"Entrypoint": ["/pause"], "Env": ["PATH=/"]}
    assert not any(key.startswith("SCHILY.xattr") for key in layer.getmembers()[0].pax_headers)
