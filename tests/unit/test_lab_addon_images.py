"""The lab builds only the images of the addons its group data turns on."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.images import addons, alertmanager, prometheus

pytestmark = pytest.mark.unit


def test_switch_defaults_and_file_overrides(tmp_path: Path) -> None:
    first, second = tmp_path / "all.py", tmp_path / "lab.py"
    first.write_text("prometheus_enabled = False\nalertmanager_enabled = False\n")
    second.write_text("alertmanager_enabled = True\nif x:\n    prometheus_enabled = True  # not top level\n")
    assert addons.overrides((first, second)) == {"prometheus_enabled": False, "alertmanager_enabled": True}
    assert addons.enabled("alertmanager_enabled", (first, second)) is True
    assert addons.enabled("prometheus_enabled", (first, second)) is False
    assert addons.enabled("prometheus_enabled", ()) is True  # the owner's default


def test_image_references_map_to_module_versions() -> None:
    assert prometheus.module_version("quay.io/prometheus/prometheus:v3.16.0") == "v0.316.0"
    assert prometheus.module_version("quay.io/prometheus/prometheus:v3.5.2") == "v0.305.2"
    assert alertmanager.image("quay.io/prometheus/alertmanager:v0.35.0").version == "v0.35.0"
    with pytest.raises(Exception, match="the lab builds"):
        prometheus.module_version("docker.io/prom/prometheus:v3.16.0")
