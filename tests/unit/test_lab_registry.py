"""Where the lab registry serves an upstream image reference."""

from __future__ import annotations

import pytest

from lab.registry import upstream_to_mirror_path

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("registry.k8s.io/pause:3.10", ("registry.k8s.io", "pause:3.10")),
        ("registry.k8s.io/coredns/coredns:v1.12.0", ("registry.k8s.io", "coredns/coredns:v1.12.0")),
        ("docker.io/spectra/hello:lab", ("docker.io", "spectra/hello:lab")),
        ("docker.io/busybox:1.36", ("docker.io", "library/busybox:1.36")),
        ("busybox:1.36", ("docker.io", "library/busybox:1.36")),
        ("localhost:5000/x:1", ("localhost:5000", "x:1")),
    ],
)
def test_mirror_path_drops_the_registry_host(reference: str, expected: tuple[str, str]) -> None:
    assert upstream_to_mirror_path(reference) == expected
