"""Templates are compiled once and reused between runs while their source is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment, FileSystemBytecodeCache

from deploys import templating
from deploys.operations import config_files

pytestmark = pytest.mark.unit

HOSTS = {"registry": "docker.io", "server": "https://registry-1.docker.io", "mirrors": []}


def test_one_template_environment_with_the_bytecode_cache() -> None:
    assert templating.BYTECODE_CACHE is not None
    assert templating._ENV.bytecode_cache is templating.BYTECODE_CACHE
    # config files render through the same environment: the toml filter is there too
    assert config_files.render_template("etc/containerd/certs.d/hosts.toml.j2", **HOSTS) == templating.render(
        "etc/containerd/certs.d/hosts.toml.j2", **HOSTS
    )
    assert "toml" in templating._ENV.filters


def test_changed_source_is_not_served_from_the_cache(tmp_path: Path) -> None:
    cache = FileSystemBytecodeCache(str(tmp_path))
    sources = {"t.j2": "one {{ x }}"}
    assert Environment(loader=DictLoader(sources), bytecode_cache=cache).get_template("t.j2").render(x=1) == "one 1"
    assert list(tmp_path.iterdir())  # compiled once, stored
    sources["t.j2"] = "two {{ x }}"
    assert Environment(loader=DictLoader(sources), bytecode_cache=cache).get_template("t.j2").render(x=1) == "two 1"
