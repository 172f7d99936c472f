"""The sums a Kubernetes release publishes: ``<base>/<version>/bin/linux/<arch>/<binary>.sha256``.

Upstream (``https://dl.k8s.io/release``) publishes one ``.sha256`` file beside each binary, holding just
the hex digest; an internal mirror or the lab mirror copies that layout. :func:`kubernetes_sums` reads
every file of a request and checks each before returning any: a caller writes a table from a complete,
valid answer or not at all. ``spectra checksums kubernetes`` writes the production table with it; the lab
reads its own mirror with it.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable

from deploys.checksums import (
    ARCH_RE,
    KUBERNETES_BINARIES,
    ChecksumError,
    Table,
    parse_sha256_file,
    release_url,
    validate_table,
)

# Spectra's node architectures (facts/platform.py): a new release's entry covers both.
DEFAULT_ARCHES = ("amd64", "arm64")
TIMEOUT_SECONDS = 30.0
# An upstream .sha256 file is 64 bytes; anything much larger is an error page, not a sum.
MAX_SUM_FILE_BYTES = 4096
URL_SCHEMES = ("https", "http", "file")

KUBERNETES_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


class SourceError(ChecksumError):
    """The release site did not give a valid sum: unreachable, an HTTP error, or a malformed file."""


def check_kubernetes_version(version: str) -> tuple[int, int, int]:
    """``(1, minor, patch)`` of a release tag; anything else (``1.36.3``, ``v1.36``, ``-rc.1``) is refused."""
    match = KUBERNETES_VERSION_RE.match(version)
    if not match:
        raise ChecksumError(f"version {version!r} is not a release tag of the form v1.MINOR.PATCH")
    major, minor, patch = (int(part) for part in match.groups())
    if major != 1:
        raise ChecksumError(f"version {version!r}: only Kubernetes 1.x releases are supported")
    return major, minor, patch


def check_arch(arch: str) -> str:
    if not ARCH_RE.match(arch):
        raise ChecksumError(f"architecture {arch!r} is not valid (e.g. amd64, arm64)")
    return arch


def check_binary(binary: str) -> str:
    if binary not in KUBERNETES_BINARIES:
        raise ChecksumError(f"binary {binary!r} is not one of {', '.join(KUBERNETES_BINARIES)}")
    return binary


def check_base_url(base_url: str) -> str:
    """A release root Python can fetch from: ``https://``, ``http://`` with a host, or ``file://``."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in URL_SCHEMES:
        raise ChecksumError(f"release URL {base_url!r} must start with {', '.join(s + '://' for s in URL_SCHEMES)}")
    if parsed.scheme != "file" and not parsed.hostname:
        raise ChecksumError(f"release URL {base_url!r} has no host")
    return base_url


def fetch_sum(url: str, filename: str, timeout: float = TIMEOUT_SECONDS) -> str:
    """The digest in the ``.sha256`` file at ``url`` (the sum of ``filename``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(MAX_SUM_FILE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise SourceError(f"{url}: cannot fetch ({exc.reason})") from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, broken responses
        raise SourceError(f"{url}: cannot fetch ({exc or type(exc).__name__})") from exc
    if len(body) > MAX_SUM_FILE_BYTES:
        raise SourceError(f"{url} is larger than {MAX_SUM_FILE_BYTES} bytes: not a .sha256 file")
    try:
        return parse_sha256_file(body.decode("ascii", errors="replace"), url, filename)
    except ChecksumError as exc:
        raise SourceError(str(exc)) from None


def kubernetes_sums(
    base_url: str,
    version: str,
    arches: Iterable[str] = DEFAULT_ARCHES,
    binaries: Iterable[str] = KUBERNETES_BINARIES,
    timeout: float = TIMEOUT_SECONDS,
) -> Table:
    """``{version: {arch: {binary: sha256}}}`` for every arch and binary, read from ``base_url``.

    The request is checked before anything is fetched (:class:`ChecksumError`); the first file that cannot
    be read or is not one digest stops it (:class:`SourceError`), so no partial answer is returned.
    """
    check_kubernetes_version(version)
    check_base_url(base_url)
    arch_list = [check_arch(arch) for arch in dict.fromkeys(arches)]
    binary_list = [check_binary(binary) for binary in dict.fromkeys(binaries)]
    if not arch_list or not binary_list:
        raise ChecksumError("nothing to fetch: give at least one architecture and one binary")
    table: Table = {version: {}}
    for arch in arch_list:
        table[version][arch] = {
            binary: fetch_sum(release_url(base_url, version, arch, binary) + ".sha256", binary, timeout)
            for binary in binary_list
        }
    return validate_table(table, base_url)
