"""Render templates from the repository's ``templates/`` tree (laid out like the target filesystem)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import BytecodeCache, Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def bytecode_cache() -> BytecodeCache | None:
    """Compiled templates kept between runs (jinja2's per-user private cache directory under the temp dir).

    Compiling the ~15 templates of a node deploy costs more CPU than a no-op run's remote commands; a
    cached template is reused only while its source is unchanged (jinja2 checks the source's checksum).
    None (compile every run) when no safe cache directory can be had.
    """
    try:
        return FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


BYTECODE_CACHE = bytecode_cache()

_ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    undefined=StrictUndefined,  # a setting missing from the context is an error, not an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
    bytecode_cache=BYTECODE_CACHE,
)

# TOML basic strings accept JSON string escapes: ``{{ value | toml }}`` quotes any text safely.
_ENV.filters["toml"] = lambda value: json.dumps(str(value))


def render(template: str, **context: Any) -> str:
    """Render ``template`` (a path under templates/, e.g. ``etc/chrony/chrony.conf.j2``)."""
    return _ENV.get_template(template).render(**context)
