"""Predicates the settings checks share (pure): is this value a whole number, a port, a URL of a kind."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit


def is_whole(value: Any) -> bool:
    """An int that is not a bool (data files write ``True`` where they mean ``1`` by mistake)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_port(value: Any) -> bool:
    return is_whole(value) and 0 < value < 65536


def is_url(value: Any, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    """A URL with one of ``schemes`` and a host, without white space."""
    text = str(value)
    parts = urlsplit(text)
    return parts.scheme in schemes and bool(parts.netloc) and not re.search(r"\s", text)


def is_https_url(value: Any) -> bool:
    return is_url(value, ("https",))
