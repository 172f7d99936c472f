"""Render templates from the repository's ``templates/`` tree (laid out like the target filesystem)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

_ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    undefined=StrictUndefined,  # a setting missing from the context is an error, not an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)

# TOML basic strings accept JSON string escapes: ``{{ value | toml }}`` quotes any text safely.
_ENV.filters["toml"] = lambda value: json.dumps(str(value))


def render(template: str, **context: Any) -> str:
    """Render ``template`` (a path under templates/, e.g. ``etc/chrony/chrony.conf.j2``)."""
    return _ENV.get_template(template).render(**context)
