"""The lab's sealed-secrets controller image: upstream's reference, entrypoint and user, from the Go module at the
version the addon pins; kubeseal built beside it; only when the lab turns the addon on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploys.components import sealed_secrets
from lab.config import LabConfig, LabError
from lab.images import addons
from lab.images import sealed_secrets as lab_image

pytestmark = pytest.mark.unit


def test_the_pinned_image_is_built_as_upstream_lays_it_out() -> None:
    image = lab_image.image()
    assert image.reference == sealed_secrets.DEFAULTS["sealed_secrets_image"]
    assert image.reference == "docker.io/bitnami/sealed-secrets-controller:0.40.0"
    # the module declares github.com/bitnami/sealed-secrets; its tag has a v, the image's has none
    assert image.import_path == "github.com/bitnami/sealed-secrets/cmd/controller" and image.version == "v0.40.0"
    # docker/controller.Dockerfile: /usr/local/bin/controller as USER 1001; goreleaser stamps main.VERSION
    assert (image.entrypoint, image.user) == ("/usr/local/bin/controller", "1001")
    assert "-X main.VERSION=0.40.0" in image.ldflags
    assert image.exposed_ports == ("8080/tcp", "8081/tcp")


@pytest.mark.parametrize(
    "reference",
    [
        "docker.io/bitnami/sealed-secrets-controller:v0.40.0",  # upstream's tags have no v
        "docker.io/bitnami/sealed-secrets-controller:latest",
        "ghcr.io/bitnami/sealed-secrets-controller:0.40.0",
    ],
)
def test_other_references_are_refused(reference: str) -> None:
    with pytest.raises(LabError, match="the lab builds docker.io/bitnami/sealed-secrets-controller:<major>"):
        lab_image.image(reference)


def test_publishing_pushes_the_controller_and_builds_kubeseal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []

    def publish(config: LabConfig, image: Any) -> dict[str, str]:
        calls.append(("publish", image.package))
        return {image.reference: "docker.io"}

    monkeypatch.setattr(lab_image, "publish", publish)

    def companion(config: LabConfig, image: Any, package: str) -> Path:
        calls.append(("companion", (image.version, package)))
        return tmp_path / "kubeseal"

    monkeypatch.setattr(lab_image, "companion_binary", companion)
    config = LabConfig(nodes=[])
    assert lab_image.publish_image(config) == {"docker.io/bitnami/sealed-secrets-controller:0.40.0": "docker.io"}
    assert calls == [("publish", "cmd/controller"), ("companion", ("v0.40.0", "cmd/kubeseal"))]
    assert lab_image.kubeseal_path(config) == tmp_path / "kubeseal"


def test_the_lab_builds_it_when_the_addon_is_on(tmp_path: Path) -> None:
    assert addons.IMAGES["sealed_secrets_enabled"] is lab_image.publish_image
    assert addons.enabled("sealed_secrets_enabled", ()) is True  # the addon's default
    off = tmp_path / "lab.py"
    off.write_text("sealed_secrets_enabled = False\n")
    assert addons.enabled("sealed_secrets_enabled", (off,)) is False
