"""Templates are compiled once and reused between runs while their source is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment, FileSystemBytecodeCache

from deploys import templating
from deploys.operations import config_files

pytestmark = pytest.mark.unit


def test_both_template_environments_use_the_bytecode_cache() -> None:
    assert templating.BYTECODE_CACHE is not None
    assert templating._ENV.bytecode_cache is templating.BYTECODE_CACHE
    assert config_files._ENV.bytecode_cache is templating.BYTECODE_CACHE


def test_changed_source_is_not_served_from_the_cache(tmp_path: Path) -> None:
    cache = FileSystemBytecodeCache(str(tmp_path))
    sources = {"t.j2": "one {{ x }}"}
    assert Environment(loader=DictLoader(sources), bytecode_cache=cache).get_template("t.j2").render(x=1) == "one 1"
    assert list(tmp_path.iterdir())  # compiled once, stored
    sources["t.j2"] = "two {{ x }}"
    assert Environment(loader=DictLoader(sources), bytecode_cache=cache).get_template("t.j2").render(x=1) == "two 1"
