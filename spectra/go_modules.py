"""Files out of a Go module's zip, fetched from a module proxy and verified by its ``h1:`` hash.

Some manifests an addon needs are only published inside a project's source (the Gateway API's CRDs,
Traefik's CRDs). The Go module proxy serves every tagged version of that source as an immutable zip, and the
Go checksum database (``sum.golang.org``) publishes each zip's ``h1:`` hash, so a pinned hash proves the bytes
are the project's own: the same check ``go mod download`` makes. Production fetches from
``https://proxy.golang.org``; the lab serves the same layout from its mirror. Verified zips are cached on the
machine running the deploy (``$XDG_CACHE_HOME/spectra/go-modules``), so the download happens once.

``h1`` is ``golang.org/x/mod/sumdb/dirhash.Hash1``: base64 of the sha256 of one line per file of the zip,
``<sha256 hex of the file>  <name in the zip>``, in name order.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

_VERSION = re.compile(r"^v\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_MODULE = re.compile(r"^[a-zA-Z0-9.~_/-]+$")
TIMEOUT = 60  # seconds for one download


class ModuleError(Exception):
    """A module zip that cannot be had or is not the pinned one; the message says which and why."""


def escaped(module: str) -> str:
    """The proxy's case encoding: each upper-case letter as ``!`` and its lower case."""
    return re.sub(r"[A-Z]", lambda match: "!" + match.group(0).lower(), module)


def zip_url(proxy: str, module: str, version: str) -> str:
    return f"{proxy.rstrip('/')}/{escaped(module)}/@v/{version}.zip"


def hash1(data: bytes) -> str:
    """The ``h1:`` hash of a module zip's bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            lines = []
            for name in sorted(archive.namelist()):
                if "\n" in name:
                    raise ModuleError(f"file name with a newline in the zip: {name!r}")
                lines.append(f"{hashlib.sha256(archive.read(name)).hexdigest()}  {name}\n")
    except zipfile.BadZipFile as error:
        raise ModuleError(f"not a zip file: {error}") from None
    return "h1:" + base64.b64encode(hashlib.sha256("".join(lines).encode()).digest()).decode()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spectra" / "go-modules"


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 (http(s) URLs from settings)
            return bytes(response.read())
    except (urllib.error.URLError, OSError) as error:
        raise ModuleError(f"{url}: cannot be downloaded ({getattr(error, 'reason', error)})") from None


def fetch(proxy: str, module: str, version: str, pinned: str, cache: Path | None = None) -> bytes:
    """The zip of ``module@version``, verified against ``pinned`` (``h1:...``): from the cache when it holds
    the verified zip, else downloaded from ``proxy`` and cached. A zip whose hash differs is never kept."""
    if not _MODULE.match(module) or not _VERSION.match(version):
        raise ModuleError(f"{module}@{version}: not a module path and semantic version")
    cache = cache or cache_dir()
    cached = cache / escaped(module) / f"{version}.zip"
    if cached.is_file():
        data = cached.read_bytes()
        if hash1(data) == pinned:
            return data
    url = zip_url(proxy, module, version)
    data = _download(url)
    found = hash1(data)
    if found != pinned:
        raise ModuleError(f"{url}: its hash is {found}, the pinned one {pinned}: refused")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as temporary:
        temporary.write(data)
    os.replace(temporary.name, cached)
    return data


def files(data: bytes, module: str, version: str, patterns: tuple[str, ...]) -> dict[str, str]:
    """The text of the zip's files whose path in the module matches one of ``patterns`` (fnmatch), by path."""
    prefix = f"{module}@{version}/"
    found: dict[str, str] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            path = name.removeprefix(prefix)
            if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
                found[path] = archive.read(name).decode()
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(path, pattern) for path in found):
            raise ModuleError(f"{module}@{version}: no file matches {pattern!r}")
    return found
