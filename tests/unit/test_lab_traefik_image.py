"""The lab's Traefik image: version from the reference, how it is built (no network, no Go)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.config import LabError
from lab.images import addons, go_image
from lab.images import traefik as lab_image

pytestmark = pytest.mark.unit

REFERENCE = "docker.io/library/traefik:v3.6.12"


def test_the_reference_maps_to_the_module_version() -> None:
    assert lab_image.module_version(REFERENCE) == "v3.6.12"
    for wrong in ("docker.io/traefik/traefik:v3.6.12", "docker.io/library/traefik:3.6.12",
                  "docker.io/library/traefik:v2.11.0", "docker.io/library/traefik:latest"):  # fmt: skip
        with pytest.raises(LabError, match="the lab builds"):
            lab_image.module_version(wrong)


def test_the_image_is_built_as_upstream_builds_it() -> None:
    image = lab_image.image(REFERENCE)
    assert (image.module, image.version, image.package) == ("github.com/traefik/traefik/v3", "v3.6.12", "cmd/traefik")
    assert image.entrypoint == "/usr/local/bin/traefik"  # the official image's path
    assert image.user == ""  # the official image sets no USER
    version = "github.com/traefik/traefik/v3/pkg/version"
    assert image.ldflags == (
        "-s",
        "-w",
        f"-X {version}.Version=3.6.12",
        f"-X {version}.Codename=ramequin",
        f"-X {version}.BuildDate=spectra-lab-module-build",
    )
    # the module has replace directives: built as the main module from a copy with the web UI placeholder
    assert image.placeholders == ("webui/static/index.html",)


def test_publish_pushes_the_pinned_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[go_image.GoImage] = []

    def publish(config: object, image: go_image.GoImage) -> dict[str, str]:
        calls.append(image)
        return {image.reference: "docker.io"}

    monkeypatch.setattr(lab_image, "pinned_image", lambda: REFERENCE)
    monkeypatch.setattr(lab_image, "publish", publish)
    monkeypatch.setattr(lab_image, "publish_modules", lambda config: [])
    assert lab_image.publish_image(None) == {REFERENCE: "docker.io"}  # type: ignore[arg-type]
    assert [image.version for image in calls] == ["v3.6.12"]


def test_the_pinned_reference_is_the_gateway_addons() -> None:
    from deploys.components import gateway

    assert lab_image.pinned_image() == gateway.DEFAULTS["gateway_image"] == REFERENCE


def test_the_lab_builds_it_only_when_the_gateway_is_on(tmp_path: Path) -> None:
    assert addons.IMAGES["gateway_enabled"] is lab_image.publish_image
    assert addons.enabled("gateway_enabled", ()) is False  # off by default (deploys/components/gateway.py)
    on = tmp_path / "lab.py"
    on.write_text("gateway_enabled = True\n")
    assert addons.enabled("gateway_enabled", (on,)) is True
